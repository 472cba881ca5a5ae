"""Tests of meta_pipeline.forensics.hypotheses and report: the vectorized tests against scipy, the
telemetry join, the volatility before entry, a constructed fleet with one cause per agent, and the
JSON of failure_forensics.json.

Reference numbers come from scipy.stats called on explicit arrays, or from loops written here, never
from the module's own helpers.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import false_discovery_control, fisher_exact, mannwhitneyu

from meta_pipeline.forensics import (
    HYPOTHESES,
    NOT_ENOUGH_DATA,
    NOT_SUPPORTED,
    SUPPORTED,
    entry_volatility,
    evaluate_hypotheses,
    fleet_correction,
    forensics_json,
    join_telemetry,
    run_forensics,
)
from meta_pipeline.forensics.hypotheses import fisher_greater, group_quantile, mann_whitney_greater

T0 = pd.Timestamp("2024-01-01", tz="UTC")
REGIME_CYCLE = ("trend",) * 3 + ("range",) * 3 + ("high_vol",) * 3  # 3-day spells


# ------------------------------------------------------------------------------- vectorized tests
def test_fisher_greater_matches_scipy():
    rng = np.random.default_rng(1)
    tables = rng.integers(0, 40, size=(300, 4))
    k_left, miss_left, k_right, miss_right = tables.T
    ours = fisher_greater(k_left, k_left + miss_left, k_left + k_right, tables.sum(axis=1))
    expected = [fisher_exact([[a, b], [c, d]], alternative="greater").pvalue for a, b, c, d in tables]
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-300)


def test_mann_whitney_matches_scipy_per_group_with_ties():
    rng = np.random.default_rng(2)
    codes, values, left, expected = [], [], [], []
    for g in range(40):
        n1, n2 = rng.integers(10, 60, size=2)
        x = np.round(rng.normal(0.2 * (g % 3), 1.0, n1), 1)  # rounding makes ties
        y = np.round(rng.normal(0.0, 1.0, n2), 1)
        expected.append(mannwhitneyu(x, y, alternative="greater", method="asymptotic"))
        codes += [g] * (n1 + n2)
        values += [*x, *y]
        left += [True] * n1 + [False] * n2
    perm = rng.permutation(len(codes))  # any row order
    result = mann_whitney_greater(np.array(codes)[perm], np.array(values)[perm], np.array(left)[perm], 40)
    np.testing.assert_allclose(result["u"], [e.statistic for e in expected], rtol=1e-12)
    np.testing.assert_allclose(result["p"], [e.pvalue for e in expected], rtol=1e-9)
    n1 = result["n_left"]
    n2 = result["n_right"]
    np.testing.assert_allclose(result["effect"], 2 * result["u"] / (n1 * n2) - 1)


def test_mann_whitney_default_scipy_method_agrees_at_ten_a_side():
    rng = np.random.default_rng(3)
    x, y = rng.normal(0.5, 1, 10), rng.normal(0, 1, 10)
    result = mann_whitney_greater(
        np.zeros(20, int), np.r_[x, y], np.r_[np.ones(10, bool), np.zeros(10, bool)], 1
    )
    # with 10 values a side scipy's "auto" is the normal approximation too
    assert result["p"][0] == pytest.approx(mannwhitneyu(x, y, alternative="greater").pvalue, rel=1e-9)


def test_group_quantile_matches_numpy():
    rng = np.random.default_rng(4)
    codes = rng.integers(0, 7, 500)
    values = rng.normal(size=500)
    ours = group_quantile(codes, values, 8, 0.75)
    for g in range(7):
        assert ours[g] == pytest.approx(np.quantile(values[codes == g], 0.75))
    assert np.isnan(ours[7])


def test_fleet_correction_is_benjamini_yekutieli_over_the_tested_only():
    p = np.array([0.001, np.nan, 0.02, 0.5, 0.0001, np.nan, 0.04])
    adjusted, verdict = fleet_correction(p, q=0.05)
    tested = ~np.isnan(p)
    np.testing.assert_allclose(adjusted[tested], false_discovery_control(p[tested], method="by"))
    assert np.isnan(adjusted[~tested]).all()
    assert list(verdict) == [
        SUPPORTED if a <= 0.05 else (NOT_ENOUGH_DATA if np.isnan(a) else NOT_SUPPORTED) for a in adjusted
    ]
    with pytest.raises(ValueError):
        fleet_correction(p, q=0)


# ------------------------------------------------------------------------------------------ join
def test_join_telemetry_never_overwrites_and_keeps_first_run():
    trades = pd.DataFrame(
        {
            "agent": ["a", "a", "b"],
            "run_id": ["r1", "r2", "r3"],
            "ts": [T0, T0 + pd.Timedelta(hours=1), T0],
            "net_bps": [1.0, -2.0, 3.0],
        },
        index=[10, 11, 12],
    )
    runs = pd.DataFrame(
        {
            "run_id": ["r2", "r1", "r2", "zz"],
            "agent": ["other", "a", "a", "a"],
            "ts": [T0 + pd.Timedelta(days=1), T0 - pd.Timedelta(days=3), T0, T0],
            "latency_ms": [999.0, 100.0, 200.0, 5.0],
            "net_bps": [7.0, 7.0, 7.0, 7.0],  # a telemetry field named like a trade field
        }
    )
    joined = join_telemetry(trades, runs)
    pd.testing.assert_frame_equal(joined[trades.columns], trades)  # trade fields intact
    assert list(joined.index) == [10, 11, 12]
    assert joined["tel_latency_ms"].tolist()[:2] == [100.0, 200.0]  # r2: the earlier of its two lines
    assert joined["tel_agent"].tolist()[:2] == ["a", "a"]
    assert np.isnan(joined.loc[12, "tel_latency_ms"])  # r3 has no telemetry
    assert joined["tel_net_bps"].tolist()[:2] == [7.0, 7.0]
    for field in ("tokens_in", "tokens_out", "errors", "cost_usd"):
        assert joined[f"tel_{field}"].isna().all()
    with pytest.raises(ValueError, match="overwrite"):
        join_telemetry(joined, runs)


def test_join_telemetry_with_categorical_run_ids():
    trades = pd.DataFrame({"run_id": pd.Categorical(["x", "y", "x"])})
    runs = pd.DataFrame({"run_id": ["y", "x"], "latency_ms": [2.0, 1.0]})
    assert join_telemetry(trades, runs)["tel_latency_ms"].tolist() == [1.0, 2.0, 1.0]


# ------------------------------------------------------------------------------------ volatility
def _brute_vol(bars, instrument, end, min_returns):
    """Std (ddof 1) of ln(close_k / close_{k−1 min}) over bars opening in [end − 60 min, end − 1 min]."""
    mine = bars[bars.instrument == instrument].set_index("open_time")["close"]
    returns = []
    for k in range(60, 0, -1):
        t = end - pd.Timedelta(minutes=k)
        prev = t - pd.Timedelta(minutes=1)
        if t in mine.index and prev in mine.index:
            returns.append(np.log(mine[t] / mine[prev]))
    return np.std(returns, ddof=1) if len(returns) >= min_returns else np.nan


def test_entry_volatility_matches_a_direct_computation():
    rng = np.random.default_rng(5)
    minutes = pd.date_range(T0, periods=3 * 1440, freq="min")
    frames = []
    for name, vol in (("AAAUSDT", 1e-3), ("BBBUSDT", 3e-3)):
        close = 100 * np.exp(np.cumsum(rng.normal(0, vol, len(minutes))))
        frames.append(pd.DataFrame({"instrument": name, "open_time": minutes, "close": close}))
    bars = pd.concat(frames, ignore_index=True)
    # a gap: 40 minutes of AAA missing before 2024-01-02 12:00, and shuffled rows
    gap = (bars.instrument == "AAAUSDT") & bars.open_time.between(
        T0 + pd.Timedelta(hours=35, minutes=10), T0 + pd.Timedelta(hours=35, minutes=49)
    )
    bars = bars[~gap].sample(frac=1.0, random_state=0)
    trades = pd.DataFrame(
        {
            "instrument": ["AAAUSDT", "AAAUSDT", "BBBUSDT", "BBBUSDT", "CCCUSDT", "AAAUSDT"],
            "ts": [
                T0 + pd.Timedelta(hours=30, seconds=30),  # inside a minute: the bar at 06:00 is not closed
                T0 + pd.Timedelta(hours=36),  # after the gap: too few returns
                T0 + pd.Timedelta(hours=50, minutes=17),
                T0 + pd.Timedelta(minutes=20),  # 20 minutes of history only
                T0 + pd.Timedelta(hours=30),  # no bars for the instrument
                T0 + pd.Timedelta(days=5),  # long after the last bar
            ],
        }
    )
    out = entry_volatility(bars, trades, min_returns=30, min_hours=5, baseline_days=1)
    assert list(out.columns) == ["vol_1h_before_entry", "vol_30d_median"]
    for i, row in trades.iterrows():
        end = row.ts.floor("min")
        expected = _brute_vol(bars, row.instrument, end, 30)
        if np.isnan(expected):
            assert np.isnan(out.loc[i, "vol_1h_before_entry"])
        else:
            assert out.loc[i, "vol_1h_before_entry"] == pytest.approx(expected, rel=1e-9)
        hour = row.ts.floor("h")
        hourly = [_brute_vol(bars, row.instrument, hour - pd.Timedelta(hours=h), 30) for h in range(24)]
        hourly = [v for v in hourly if np.isfinite(v)]
        if len(hourly) >= 5:
            assert out.loc[i, "vol_30d_median"] == pytest.approx(np.median(hourly), rel=1e-9)
        else:
            assert np.isnan(out.loc[i, "vol_30d_median"])
    assert out.iloc[[1, 3, 4, 5]]["vol_1h_before_entry"].isna().all()
    assert out.iloc[[0, 2]].notna().all().all()


# ------------------------------------------------------------------------- the constructed fleet
def _agent_days(rng, agent, days, *, hour=1, lose=None, suffix=""):
    """One trade a day at ``hour``:00 for ``days`` days, with independent random features; ``lose`` maps
    the features to the losing trades (default: a fair coin)."""
    n = days
    ts = T0 + pd.to_timedelta(np.arange(n), unit="D") + pd.Timedelta(hours=hour)
    features = {
        "regime": np.array([REGIME_CYCLE[d % len(REGIME_CYCLE)] for d in range(n)], dtype=object),
        "confidence": rng.uniform(0.5, 0.95, n),
        "latency_ms": rng.lognormal(np.log(900), 0.3, n),
        "tokens_in": rng.integers(2000, 5000, n).astype(float),
        "tokens_out": rng.integers(200, 800, n).astype(float),
        "vol_ratio": rng.uniform(0.6, 1.6, n),
    }
    loses = rng.random(n) < 0.5 if lose is None else lose(features)
    size = rng.uniform(50, 150, n)
    net = np.where(loses, -size, size)
    run_id = [f"{agent}-{d}{suffix}" for d in range(n)]
    trades = pd.DataFrame(
        {
            "agent": agent,
            "run_id": run_id,
            "instrument": "BTCUSDT",
            "ts": ts,
            "exit_ts": ts + pd.Timedelta(hours=24),
            "direction": "LONG",
            "gross_bps": net,
            "net_bps": net,
            "regime": features["regime"],
            "confidence": features["confidence"],
            "vol_1h_before_entry": features["vol_ratio"] * 1e-3,
            "vol_30d_median": np.full(n, 1e-3),
        }
    )
    runs = pd.DataFrame(
        {
            "agent": agent,
            "run_id": run_id,
            "ts": ts - pd.Timedelta(seconds=30),
            "latency_ms": features["latency_ms"],
            "tokens_in": features["tokens_in"],
            "tokens_out": features["tokens_out"],
            "errors": (rng.random(n) < 0.05).astype(float),
            "cost_usd": features["tokens_in"] * 1e-6 + features["tokens_out"] * 4e-6,
        }
    )
    return trades, runs


def _top(values, share):
    return values >= np.quantile(values, 1 - share)


CAUSES = {
    "regime_loser": ("regime_mismatch", lambda f: f["regime"] == "high_vol"),
    "slow_loser": ("latency", lambda f: _top(f["latency_ms"], 0.25)),
    "overconfident": ("overconfidence", lambda f: f["confidence"] > np.median(f["confidence"])),
    "vol_shocked": ("volatility_shock", lambda f: _top(f["vol_ratio"], 0.4)),
    "spender": ("cost", lambda f: _top(f["tokens_in"] + f["tokens_out"], 0.4)),
}


@pytest.fixture(scope="module")
def fleet():
    """180 daily chain trades for one agent per cause and a clean agent, 8 trades for a newcomer. The
    clean agent also trades at 13:00 every day — overlapping trades outside its chain — and those lose
    exactly in high_vol: counted as independent they would show a regime "cause"."""
    rng = np.random.default_rng(20240601)
    parts = [_agent_days(rng, agent, 180, lose=lose) for agent, (_, lose) in CAUSES.items()]
    parts.append(_agent_days(rng, "clean", 180))
    parts.append(
        _agent_days(rng, "clean", 180, hour=13, lose=lambda f: f["regime"] == "high_vol", suffix="n")
    )
    parts.append(_agent_days(rng, "newcomer", 8))
    trades = pd.concat([p[0] for p in parts], ignore_index=True).sample(frac=1.0, random_state=1)
    runs = pd.concat([p[1] for p in parts], ignore_index=True)
    return trades.reset_index(drop=True), runs


def test_each_cause_is_found_and_nothing_else(fleet):
    trades, runs = fleet
    result = run_forensics(trades, runs)
    table = result.hypotheses.set_index(["agent", "hypothesis"])
    assert list(result.hypotheses.columns) == [
        "agent",
        "hypothesis",
        "test",
        "effect",
        "effect_size",
        "p_value",
        "p_adjusted",
        "n_left",
        "n_right",
        "verdict",
    ]
    for agent, (cause, _) in CAUSES.items():
        verdicts = table.loc[agent, "verdict"]
        assert verdicts[cause] == SUPPORTED, (agent, table.loc[agent].to_dict())
        assert (verdicts.drop(cause) == NOT_SUPPORTED).all(), (agent, verdicts.to_dict())
        assert table.loc[(agent, cause), "effect_size"] > 0
    assert (table.loc["clean", "verdict"] == NOT_SUPPORTED).all()
    assert (table.loc["newcomer", "verdict"] == NOT_ENOUGH_DATA).all()
    assert table.loc["newcomer", "p_value"].isna().all()
    # the numbers behind the verdicts
    regime = table.loc[("regime_loser", "regime_mismatch")]
    assert regime["effect"].startswith("loss rate 1.00 in high_vol vs 0.00 elsewhere (60/60 vs 0/120")
    assert (regime["n_left"], regime["n_right"]) == (60, 120)
    slow = table.loc[("slow_loser", "latency")]
    assert (slow["n_left"], slow["n_right"]) == (45, 135)
    assert slow["effect"].startswith("loss rate 1.00 on the slowest quarter of runs")
    assert (
        table.loc[("clean", "regime_mismatch"), "n_left"] + table.loc[("clean", "regime_mismatch"), "n_right"]
        == 180
    )


def test_regime_p_value_is_the_worst_regime_times_the_regimes_tested(fleet):
    trades, runs = fleet
    joined = join_telemetry(trades, runs)
    row = (
        evaluate_hypotheses(joined).set_index(["agent", "hypothesis"]).loc[("slow_loser", "regime_mismatch")]
    )
    mine = joined[(joined.agent == "slow_loser")]
    loss = mine.net_bps < 0
    raw = []
    for regime in ("high_vol", "range", "trend"):
        inside = mine.regime == regime
        table = [
            [(loss & inside).sum(), (~loss & inside).sum()],
            [(loss & ~inside).sum(), (~loss & ~inside).sum()],
        ]
        raw.append(fisher_exact(table, alternative="greater").pvalue)
    assert row["p_value"] == pytest.approx(min(1.0, 3 * min(raw)), rel=1e-9)


def test_the_chain_is_the_effective_sample(fleet):
    trades, runs = fleet
    joined = join_telemetry(trades, runs)
    on_all = evaluate_hypotheses(joined, chain=False).set_index(["agent", "hypothesis"])
    # the clean agent's overlapping 13:00 trades, all lost in high_vol, would make a "cause" of noise
    assert on_all.loc[("clean", "regime_mismatch"), "verdict"] == SUPPORTED
    assert (
        on_all.loc[("clean", "regime_mismatch"), "n_left"]
        + on_all.loc[("clean", "regime_mismatch"), "n_right"]
        == 360
    )


def test_min_side_is_configurable(fleet):
    trades, runs = fleet
    table = run_forensics(trades, runs, min_side=61).hypotheses.set_index(["agent", "hypothesis"])
    assert table.loc[("regime_loser", "regime_mismatch"), "verdict"] == NOT_ENOUGH_DATA
    assert table.loc[("regime_loser", "regime_mismatch"), "effect"].endswith(
        "at least 61 needed on each side"
    )
    assert table.loc[("overconfident", "overconfidence"), "verdict"] == SUPPORTED  # 90 vs 90


def test_missing_inputs_mean_not_enough_data(fleet):
    trades, _ = fleet
    bare = trades.drop(columns=["regime", "vol_1h_before_entry", "vol_30d_median"])
    table = evaluate_hypotheses(bare).set_index(["agent", "hypothesis"])  # no telemetry joined either
    for hypothesis in ("regime_mismatch", "latency", "volatility_shock", "cost"):
        assert (table.xs(hypothesis, level="hypothesis")["verdict"] == NOT_ENOUGH_DATA).all()
    assert table.loc[("overconfident", "overconfidence"), "verdict"] == SUPPORTED
    assert table.loc[("clean", "volatility_shock"), "effect"].startswith("no volatility data")


def test_invalid_inputs_raise(fleet):
    trades, _ = fleet
    with pytest.raises(KeyError):
        evaluate_hypotheses(trades.drop(columns=["net_bps"]))
    bad = trades.copy()
    bad.loc[0, "confidence"] = 1.5
    with pytest.raises(ValueError, match="confidence"):
        evaluate_hypotheses(bad)


# --------------------------------------------------------------------------- report and its JSON
def test_worst_runs_and_by_agent_on_a_hand_case():
    ts = [T0 + pd.Timedelta(hours=h) for h in (0, 1, 2, 3, 4)]
    trades = pd.DataFrame(
        {
            "agent": ["a", "a", "a", "a", "b"],
            "run_id": ["r1", "r2", "r3", "r4", "r5"],
            "instrument": "BTCUSDT",
            "ts": ts,
            "exit_ts": [t + pd.Timedelta(hours=24) for t in ts],
            "direction": ["LONG", "SHORT", "LONG", "LONG", "SHORT"],
            "gross_bps": [-10.0, -30.0, 5.0, -30.0, -30.0],
            "net_bps": [-10.0, -30.0, 5.0, -30.0, -30.0],
            "regime": ["trend", None, "range", "trend", "trend"],
            "confidence": [0.6, np.nan, 0.7, 0.8, 0.9],
        }
    )
    runs = pd.DataFrame(
        {
            "run_id": ["r1", "r2", "r3", "r4"],
            "agent": ["a", "a", "a", "x"],
            "ts": [T0 - pd.Timedelta(days=9)] * 4,  # a different ts: never replaces the trade's
            "latency_ms": [100.0, 200.0, 300.0, 400.0],
            "tokens_in": [1000.0, 2000.0, 3000.0, 4000.0],
            "tokens_out": [10.0, 20.0, 30.0, 40.0],
            "errors": [0.0, 1.0, np.nan, 0.0],
            "cost_usd": [0.1, 0.2, 0.3, 0.4],
        }
    )
    result = run_forensics(trades.iloc[::-1], runs, worst_n=3)
    worst = result.worst_runs
    # −30 three times: in time order (exit_ts, ts); then nothing else fits in 3
    assert worst["run_id"].tolist() == ["r2", "r4", "r5"]
    assert worst["ts"].tolist() == [ts[1], ts[3], ts[4]]
    assert worst["agent"].tolist() == ["a", "a", "b"]
    assert worst["tel_agent"].tolist()[:2] == ["a", "x"]
    assert worst["tel_latency_ms"].tolist()[:2] == [200.0, 400.0]

    by_agent = result.by_agent.set_index("agent")
    a = by_agent.loc["a"]
    assert a["loss_count"] == 3 and a["trades"] == 4
    assert a["avg_loss_bps"] == pytest.approx(-70 / 3)
    assert a["median_latency_ms"] == 200.0  # of 100, 200, 400
    assert a["median_tokens"] == 2020.0  # of 1010, 2020, 4040
    assert a["error_rate"] == pytest.approx(1 / 3)  # r3 won; r1 0, r2 1, r4 0
    assert a["example_runs"] == ["r2", "r4", "r1"]
    b = by_agent.loc["b"]
    assert b["loss_count"] == 1 and np.isnan(b["median_latency_ms"]) and np.isnan(b["error_rate"])
    assert result.by_agent["agent"].tolist() == ["b", "a"]  # avg loss ascending: −30, then −23.3

    document = forensics_json(result, generated_at=pd.Timestamp("2024-03-02 08:30", tz="UTC"))
    text = json.dumps(document, allow_nan=False)  # no NaN, no Infinity
    assert json.loads(text) == document
    assert document["generated_at"] == "2024-03-02T08:30:00Z"
    assert document["horizon_hours"] == 24
    assert set(document) == {
        "generated_at",
        "horizon_hours",
        "worst_runs",
        "by_agent",
        "hypotheses",
        "calibration",
        "method",
    }
    first = document["worst_runs"][0]
    assert first["ts"] == "2024-01-01T01:00:00Z" and first["agent"] == "a"
    assert first["realized_pnl_bps"] == first["gross_bps"] == -30.0
    assert first["telemetry"]["latency_ms"] == 200.0
    assert first["telemetry"]["ts"] == "2023-12-23T00:00:00Z"
    assert document["worst_runs"][2]["telemetry"] is None  # r5 has no telemetry
    entry = {e["agent"]: e for e in document["by_agent"]}["a"]
    for key in (
        "loss_count",
        "avg_loss_bps",
        "median_latency_ms",
        "median_tokens",
        "error_rate",
        "example_runs",
    ):
        assert key in entry
    assert [h["hypothesis"] for h in entry["hypotheses"]] == list(HYPOTHESES)
    assert all(h["verdict"] == NOT_ENOUGH_DATA and h["p_value"] is None for h in entry["hypotheses"])
    assert entry["why_we_lost_hypotheses"] == []
    assert {e["agent"]: e for e in document["by_agent"]}["b"]["error_rate"] is None


def test_json_names_the_supported_causes(fleet):
    trades, runs = fleet
    document = forensics_json(run_forensics(trades, runs), generated_at="2024-07-01T08:30:00Z")
    json.dumps(document, allow_nan=False)
    entries = {e["agent"]: e for e in document["by_agent"]}
    reasons = entries["regime_loser"]["why_we_lost_hypotheses"]
    assert len(reasons) == 1 and reasons[0].startswith("regime_mismatch: loss rate 1.00 in high_vol")
    assert entries["clean"]["why_we_lost_hypotheses"] == []
    assert len(document["hypotheses"]) == 7 * len(HYPOTHESES)
    assert len(document["worst_runs"]) == 25
    assert all(row["count"] > 0 for row in document["calibration"])
    assert "Benjamini-Yekutieli" in document["method"]["correction"]
