"""Decisions, labels and gates at and around every threshold, and the per-agent statistics they
read (telemetry-only runs count; telemetry never overwrites a trade)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from meta_pipeline.supervisor import decisions as dec
from meta_pipeline.supervisor.policy import SupervisorPolicy
from meta_pipeline.supervisor.stats import agent_stats

POLICY = SupervisorPolicy()


def row(**values) -> dict:
    """A promotable agent unless a value says otherwise."""
    base = {
        "trades": 20,
        "pnl_sum_bps": 300.0,
        "hit_rate": 0.6,
        "error_rate": 0.0,
        "avg_latency_ms": 500.0,
        "cost_usd": 1.0,
        "timing_psr": 0.99,
    }
    return {**base, **values}


def decide_one(killed=(), policy=POLICY, **values) -> pd.Series:
    stats = pd.DataFrame([row(**values)], index=pd.Index(["a"], name="agent"))
    return dec.decide(stats, policy, killed=killed).iloc[0]


@pytest.mark.parametrize(
    ("values", "decision"),
    [
        ({}, "PROMOTE"),
        ({"pnl_sum_bps": 150.0}, "PROMOTE"),  # ≥ 150 passes
        ({"pnl_sum_bps": 149.99}, "HOLD"),
        ({"hit_rate": 0.55}, "PROMOTE"),
        ({"hit_rate": 0.5499}, "HOLD"),
        ({"error_rate": 0.001}, "HOLD"),  # promotion needs no erroring run at all
        ({"avg_latency_ms": 900.0}, "PROMOTE"),
        ({"avg_latency_ms": 900.1}, "HOLD"),
        ({"avg_latency_ms": np.nan}, "HOLD"),  # no readable latency: not proven
        ({"trades": 10}, "PROMOTE"),
        ({"trades": 9}, "HOLD"),
        ({"timing_psr": 0.95}, "PROMOTE"),
        ({"timing_psr": 0.9499}, "HOLD"),
        ({"timing_psr": np.nan}, "HOLD"),  # undefined PSR (no timing variation) fails
        ({"pnl_sum_bps": -150.0}, "HOLD"),  # exactly −150 does not kill
        ({"pnl_sum_bps": -150.01}, "KILL"),
        ({"error_rate": 0.2}, "HOLD"),
        ({"error_rate": 0.2001}, "KILL"),
        ({"error_rate": np.nan}, "HOLD"),  # unknown reliability neither promotes nor kills
    ],
)
def test_decision_at_and_around_each_threshold(values, decision):
    assert decide_one(**values)["decision"] == decision


def test_precedence_killed_retire_kill_promote_hold():
    # score 40 + 30 + 20 + 10 = 100: RETIRE beats KILL
    retire = {"pnl_sum_bps": -500.0, "error_rate": 0.3, "cost_usd": 10.0}
    assert decide_one(**retire)["decision"] == "RETIRE"
    assert decide_one(killed=["a"], **retire)["decision"] == "KILLED"
    assert decide_one(killed=["a"])["decision"] == "KILLED"  # even a promotable agent
    kill = decide_one(pnl_sum_bps=-500.0)  # score 70: KILL, label WATCH
    assert (kill["decision"], kill["label"]) == ("KILL", "WATCH")
    assert kill["kill_reason"] == "pnl -500.00 bps < -150"


@pytest.mark.parametrize(
    ("values", "score", "label"),
    [
        ({"pnl_sum_bps": -1.0}, 40, "KEEP"),
        ({"pnl_sum_bps": -1.0, "trades": 9}, 0, "KEEP"),  # losing counts from 10 trades
        ({"pnl_sum_bps": -1.0, "error_rate": 0.1001}, 60, "WATCH"),
        ({"pnl_sum_bps": -1.0, "error_rate": 0.1}, 40, "KEEP"),
        ({"pnl_sum_bps": 0.0, "cost_usd": 5.01}, 10, "KEEP"),  # pnl ≤ 0 and cost > 5
        ({"pnl_sum_bps": 0.0, "cost_usd": 5.0}, 0, "KEEP"),
        ({"pnl_sum_bps": -150.01, "error_rate": 0.15}, 90, "RETIRE"),
        ({"pnl_sum_bps": -150.0, "error_rate": 0.15, "cost_usd": 6.0}, 70, "WATCH"),
    ],
)
def test_retirement_score_and_label(values, score, label):
    got = decide_one(**values)
    assert (got["retirement_score"], got["label"]) == (score, label)


def test_zero_or_none_turns_a_gate_off():
    policy = SupervisorPolicy(promote_min_trades=0, promote_min_timing_psr=None, promote_max_avg_latency_ms=0)
    got = decide_one(policy=policy, trades=1, timing_psr=np.nan, avg_latency_ms=5000.0)
    assert got["decision"] == "PROMOTE" and got["failed_gates"] == ()
    assert set(dec.gate_table(pd.DataFrame([row()], index=["a"]), policy)["gate"]) == {
        "pnl",
        "hit rate",
        "error rate",
    }


def test_gate_table_answers_why_not_promoted():
    stats = pd.DataFrame(
        [row(), row(trades=3, timing_psr=np.nan)], index=pd.Index(["good", "young"], name="agent")
    )
    table = dec.gate_table(stats, POLICY)
    young = table[table["agent"] == "young"].set_index("gate")
    assert not young.loc["trades", "passed"] and young.loc["trades", "rule"] == "≥ 10"
    assert not young.loc["timing PSR", "passed"]
    assert dec.decide(stats, POLICY).loc["young", "failed_gates"] == ("trades", "timing PSR")


def _trades(agent, pnls, start="2026-01-01", instrument="BTCUSDT"):
    ts = pd.date_range(start, periods=len(pnls), freq="D", tz="UTC")
    return pd.DataFrame(
        {
            "agent": agent,
            "run_id": [f"{agent}-{i}" for i in range(len(pnls))],
            "instrument": instrument,
            "ts": ts,
            "exit_ts": ts + pd.Timedelta(hours=24),
            "direction": "LONG",
            "gross_bps": pnls,
            "net_bps": pnls,
            "regime": "trend",
            "confidence": 0.5,
        }
    )


def _runs(agent, n, errors, start="2026-01-01", latency=500.0, ids=None):
    ts = pd.date_range(start, periods=n, freq="h", tz="UTC")
    return pd.DataFrame(
        {
            "agent": agent,
            "run_id": ids if ids is not None else [f"{agent}-t{i}" for i in range(n)],
            "ts": ts,
            "latency_ms": latency,
            "errors": errors,
            "cost_usd": 0.5,
        }
    )


def test_telemetry_only_runs_raise_the_error_rate():
    trades = _trades("flaky", [10.0] * 10)
    traded = _runs("flaky", 10, 0.0, ids=list(trades["run_id"]))
    silent_failures = _runs("flaky", 30, 1.0, start="2026-02-01")  # runs with no signal, all erroring
    stats = agent_stats(trades, pd.concat([traded, silent_failures]))
    assert stats.loc["flaky", "runs"] == 40
    assert stats.loc["flaky", "error_rate"] == pytest.approx(30 / 40)
    assert stats.loc["flaky", "trades"] == 10  # the trade figures come from trades only
    assert stats.loc["flaky", "cost_usd"] == pytest.approx(20.0)


def test_unreadable_errors_leave_the_run_out_of_the_error_rate():
    runs = _runs("a", 4, [1.0, 0.0, np.nan, np.nan])
    stats = agent_stats(_trades("a", [1.0]), runs)
    assert stats.loc["a", "error_rate"] == pytest.approx(0.5)


def test_stats_for_an_agent_with_runs_but_no_trades():
    stats = agent_stats(_trades("a", [5.0, -3.0]), _runs("b", 3, 0.0))
    assert stats.loc["b", "trades"] == 0 and stats.loc["b", "pnl_sum_bps"] == 0.0
    assert stats.loc["b", "psr_reason"] == "no matured trades"
    assert dec.decide(stats, POLICY).loc["b", "decision"] == "HOLD"


def test_since_counts_only_what_happened_after_a_revive():
    trades = pd.concat([_trades("a", [-100.0] * 10), _trades("a", [5.0] * 3, start="2026-03-01")])
    runs = _runs("a", 5, 1.0)
    since = {"a": pd.Timestamp("2026-02-15", tz="UTC")}
    stats = agent_stats(trades, runs, since=since)
    assert stats.loc["a", "trades"] == 3 and stats.loc["a", "pnl_sum_bps"] == pytest.approx(15.0)
    assert stats.loc["a", "runs"] == 0
    assert dec.decide(stats, POLICY).loc["a", "decision"] == "HOLD"


def test_always_long_in_a_rising_market_is_held_for_no_timing_variation():
    rng = np.random.default_rng(0)
    pnls = rng.normal(40, 60, 60)  # a +40 bps/day drift: pnl, hit rate and per-trade Sharpe all pass
    trades = _trades("long", pnls)
    runs = _runs("long", 60, 0.0, ids=list(trades["run_id"]))
    stats = agent_stats(trades, runs)
    assert stats.loc["long", "timing_bps"] == pytest.approx(0.0, abs=1e-9)
    assert stats.loc["long", "bias_bps"] == pytest.approx(pnls.mean())
    assert stats.loc["long", "psr_reason"] == "no timing variation"
    verdict = dec.decide(stats, POLICY).loc["long"]
    assert verdict["decision"] == "HOLD" and verdict["failed_gates"] == ("timing PSR",)


def test_run_stats_latency_percentile_matches_pandas():
    from meta_pipeline.supervisor.stats import run_stats

    rng = np.random.default_rng(1)
    runs = pd.concat([_runs(a, 50, 0.0) for a in ("a", "b", "c")], ignore_index=True)
    runs["latency_ms"] = rng.lognormal(6, 0.5, len(runs))
    runs.loc[rng.random(len(runs)) < 0.2, "latency_ms"] = np.nan
    runs.loc[runs["agent"] == "c", "latency_ms"] = np.nan  # no readable latency at all
    expected = runs.groupby("agent")["latency_ms"].quantile(0.95)
    got = run_stats(runs)["p95_latency_ms"]
    pd.testing.assert_series_equal(got, expected, check_names=False)
