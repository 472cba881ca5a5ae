"""The fast paths of the supervisor's statistics give what the plain computations give.

The time order, the per-agent figures, the chain and the revive filter take shortcuts on large
frames (int64 packings sorted with ``np.sort``, category codes instead of text, Arrow sorts of text
with many distinct values, a chain walked on packed keys). Each test here builds frames that steer
into those paths (thousands of rows, heavy ties on a 30-minute grid, categorical, ``str`` and
``object`` text, unsorted and unused categories, missing values) and compares with a plain Python
``sorted`` or a plain pandas ``groupby`` on the agents' names.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal, assert_series_equal

from meta_pipeline.supervisor import significance
from meta_pipeline.supervisor.portfolio import (
    equity_curve,
    portfolio_breakdown,
    portfolio_figures,
    portfolio_summary,
    time_order,
)
from meta_pipeline.supervisor.stats import agent_stats, run_stats, since_filter, trade_stats

T0 = pd.Timestamp("2025-01-01", tz="UTC").value
SLOT = 30 * 60 * 10**9
DAY = 86_400 * 10**9
NAMES = np.array(
    ["b", "a", "é", "Z", "a0", "ß", "agent_1", "agent_10", "agent_2", "\U0001f600"], dtype=object
)
RUNS_FEW = np.array(["r1", "r10", "r9", "R", "é", "", "ß"], dtype=object)


def trades_frame(seed: int, n: int, *, text: str = "str", slots: int = 200, many_runs: bool = True):
    """Matured 24 h trades on the 30-minute grid; ``text``: "str", "object", "category" (categories
    in order of appearance plus an unused one) or "sorted" (sorted categories)."""
    rng = np.random.default_rng(seed)
    ts = T0 + rng.integers(0, slots, n) * SLOT
    runs = (
        np.array([f"run-{i}" for i in rng.integers(0, n, n)], dtype=object)
        if many_runs
        else RUNS_FEW[rng.integers(0, len(RUNS_FEW), n)]
    )
    gross = rng.normal(0.0, 100.0, n).round(1)
    frame = pd.DataFrame(
        {
            "agent": NAMES[rng.integers(0, len(NAMES), n)],
            "run_id": runs,
            "instrument": np.array(["BTCUSDT", "ETHUSDT", "SOLUSDT"], dtype=object)[rng.integers(0, 3, n)],
            "ts": pd.to_datetime(ts, utc=True),
            "exit_ts": pd.to_datetime(ts + DAY, utc=True),
            "direction": np.where(rng.random(n) < 0.6, "LONG", "SHORT").astype(object),
            "gross_bps": gross,
            "net_bps": gross - 10.0,
            "regime": np.array(["trend", "range", None], dtype=object)[rng.integers(0, 3, n)],
            "confidence": np.nan,
        }
    )
    for column in ("agent", "run_id", "instrument", "direction"):
        if text == "object":
            frame[column] = frame[column].astype(object)
        elif text == "category":
            categories = [*pd.unique(frame[column]), "zz unused"]
            frame[column] = pd.Categorical(frame[column], categories=categories)
        elif text == "sorted":
            frame[column] = frame[column].astype("category")
        else:
            frame[column] = frame[column].astype("str")
    return frame


def runs_frame(seed: int, n: int, *, categorical: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    runs = pd.DataFrame(
        {
            "agent": NAMES[rng.integers(0, len(NAMES), n)],
            "run_id": [f"x{i}" for i in range(n)],
            "ts": pd.to_datetime(T0 + rng.integers(0, 200, n) * SLOT, utc=True),
            "latency_ms": np.where(rng.random(n) < 0.2, np.nan, rng.lognormal(5, 1, n).round(0)),
            "errors": np.where(rng.random(n) < 0.2, np.nan, rng.integers(0, 3, n).astype(float)),
            "cost_usd": np.where(rng.random(n) < 0.1, np.nan, rng.uniform(0, 1, n)),
        }
    )
    runs.loc[runs["agent"] == "Z", "latency_ms"] = np.nan  # an agent that never reports a latency
    if categorical:
        runs["agent"] = pd.Categorical(runs["agent"], categories=[*pd.unique(runs["agent"]), "unused"])
    return runs


def sorted_order(trades: pd.DataFrame) -> list[int]:
    """Time order by Python's ``sorted``: (exit_ts, ts, run_id, instrument, direction, position),
    text by code point, a missing text first."""

    def text(value):
        return (0, "") if pd.isna(value) else (1, str(value))

    columns = [c for c in ("run_id", "instrument", "direction") if c in trades.columns]
    exit_ns = trades["exit_ts"].astype("datetime64[ns, UTC]").map(lambda t: t.value).tolist()
    ts_ns = trades["ts"].astype("datetime64[ns, UTC]").map(lambda t: t.value).tolist()
    texts = [[text(v) for v in trades[c].tolist()] for c in columns]
    keys = [(exit_ns[i], ts_ns[i], *(t[i] for t in texts), i) for i in range(len(trades))]
    return [key[-1] for key in sorted(keys)]


# ------------------------------------------------------------------------------------ time order
@pytest.mark.parametrize("text", ["str", "object", "category", "sorted"])
@pytest.mark.parametrize("many_runs", [True, False])
def test_time_order_of_a_fleet_on_a_schedule_matches_sorted(text, many_runs):
    # 6,000 trades on 40 half-hour slots: nearly every trade ties on its times with ~150 others
    trades = trades_frame(1, 6_000, text=text, slots=40, many_runs=many_runs)
    if text in ("str", "object"):
        trades.loc[trades.index[::97], "run_id"] = None
        trades.loc[trades.index[::89], "instrument"] = None
    assert time_order(trades).tolist() == sorted_order(trades)


@pytest.mark.parametrize("text", ["str", "category"])
def test_time_order_with_few_ties_and_times_off_the_grid_matches_sorted(text):
    trades = trades_frame(2, 5_000, text=text, slots=400_000)
    rng = np.random.default_rng(2)
    jitter = pd.to_timedelta(rng.integers(0, 10**9, len(trades)), unit="ns")
    trades["exit_ts"] = trades["exit_ts"] + jitter  # nanoseconds: the times need their dense ranks
    trades.loc[trades.index[:300], "exit_ts"] = trades["exit_ts"].iloc[300:600].to_numpy()  # some ties
    trades.loc[trades.index[:300], "ts"] = trades["ts"].iloc[300:600].to_numpy()
    assert time_order(trades).tolist() == sorted_order(trades)


def test_time_order_of_integer_run_ids_compares_their_text():
    trades = trades_frame(3, 5_000, slots=30)
    trades["run_id"] = np.random.default_rng(3).integers(0, 40, len(trades))  # "10" < "9"
    assert time_order(trades).tolist() == sorted_order(trades)
    trades["run_id"] = trades["run_id"].astype("category")
    assert time_order(trades).tolist() == sorted_order(trades)


def test_order_keyword_gives_the_same_figures():
    trades = trades_frame(4, 3_000, text="category", slots=60)
    order = time_order(trades)
    summary, breakdowns = portfolio_figures(trades)
    summary_given, breakdowns_given = portfolio_figures(trades, order=order)
    assert summary_given == summary == portfolio_summary(trades, order=order)
    for key, table in breakdowns.items():
        assert_frame_equal(breakdowns_given[key], table)
        assert_frame_equal(portfolio_breakdown(trades, key, order=order), table)
    assert_frame_equal(equity_curve(trades, order=order, max_points=50), equity_curve(trades, max_points=50))
    with pytest.raises(ValueError, match="order has shape"):
        portfolio_summary(trades, order=order[:-1])


# ------------------------------------------------------------------------------- per-agent stats
def walk_drawdown(values) -> float:
    cum = peak = deepest = 0.0
    for value in values:
        cum += value
        peak = max(peak, cum)
        deepest = max(deepest, peak - cum)
    return deepest


@pytest.mark.parametrize("text", ["str", "object", "category", "sorted"])
def test_trade_stats_match_a_groupby_on_the_names(text):
    trades = trades_frame(5, 5_000, text=text, slots=300, many_runs=False)
    got = trade_stats(trades)
    names = trades["agent"].astype(str)
    grouped = trades.assign(agent=names, hit=trades["net_bps"] > 0).groupby("agent")
    expected = pd.DataFrame(
        {
            "trades": grouped["net_bps"].count(),
            "pnl_sum_bps": grouped["net_bps"].sum(),
            "hit_rate": grouped["hit"].mean(),
            "mean_bps": grouped["net_bps"].mean(),
            "std_bps": grouped["net_bps"].std(ddof=1),
            "worst_trade_bps": grouped["net_bps"].min(),
        }
    )
    assert_frame_equal(got[expected.columns], expected, check_names=False, check_index_type=False)
    assert got.index.tolist() == sorted(set(names))
    # the drawdown is the agent breakdown's, and a walk over the agent's trades in time order
    by_agent = portfolio_breakdown(trades, "agent")
    assert_series_equal(got["max_drawdown_bps"], by_agent["max_drawdown_bps"], check_index_type=False)
    ordered = trades.iloc[sorted_order(trades)]
    for name in ("a", "é", "\U0001f600"):
        walked = walk_drawdown(ordered.loc[ordered["agent"].astype(str) == name, "net_bps"])
        assert got.loc[name, "max_drawdown_bps"] == pytest.approx(walked, abs=1e-9)
    split = significance.bias_timing_split(trades.assign(agent=names))
    assert_frame_equal(got[split.columns], split, check_names=False, check_index_type=False)


@pytest.mark.parametrize("categorical", [False, True])
def test_run_stats_match_a_groupby_on_the_names(categorical):
    runs = runs_frame(6, 6_000, categorical=categorical)
    runs.loc[runs.index[:5], "agent"] = None  # a run without agent counts nowhere
    got = run_stats(runs)
    named = runs.assign(
        agent=runs["agent"].astype(object),
        readable=runs["errors"].notna(),
        failed=runs["errors"] > 0,
    ).dropna(subset=["agent"])
    grouped = named.groupby("agent")
    readable = grouped["readable"].sum()
    expected = pd.DataFrame(
        {
            "runs": grouped.size(),
            "error_runs": grouped["failed"].sum(),
            "error_rate": grouped["failed"].sum() / readable.where(readable > 0),
            "avg_latency_ms": grouped["latency_ms"].mean(),
            "p95_latency_ms": grouped["latency_ms"].quantile(0.95),
            "cost_usd": grouped["cost_usd"].sum(min_count=1).fillna(0.0),
        }
    )
    assert_frame_equal(got, expected, check_names=False, check_index_type=False)
    assert np.isnan(got.loc["Z", "p95_latency_ms"])


@pytest.mark.parametrize("text", ["category", "sorted", "str"])
def test_agent_stats_significance_is_significance_by_agent(text):
    # unsorted categories: the variance of the Sharpe ratios across agents must sum them in the
    # order significance_by_agent does, to give the same deflated Sharpe ratio to the last bit
    trades = trades_frame(7, 6_000, text=text, slots=2_000)
    runs = runs_frame(7, 500, categorical=False)
    table = agent_stats(trades, runs, n_trials=40)
    expected = significance.significance_by_agent(trades, n_trials=40)
    expected.index = expected.index.astype(str)
    got = table.loc[expected.index, list(significance.SIGNIFICANCE_COLUMNS)]
    assert_frame_equal(got, expected, check_names=False, check_index_type=False)
    assert table.index.tolist() == sorted(set(trades["agent"].astype(str)) | set(runs["agent"]))


# ------------------------------------------------------------------------------------- the chain
def walked_chain(trades: pd.DataFrame) -> np.ndarray:
    """Per agent, sorted by (ts, run_id as text, position): the first trade, then each first one
    entering at or after the previous chain trade's exit."""
    mask = np.zeros(len(trades), dtype=bool)
    ts = trades["ts"].map(lambda t: t.value).tolist()
    exits = trades["exit_ts"].map(lambda t: t.value).tolist()
    runs = trades["run_id"].astype(str).tolist()
    agents = trades["agent"].astype(str).tolist()
    for name in set(agents):
        rows = sorted((ts[i], runs[i], i) for i in range(len(trades)) if agents[i] == name)
        free_at = None
        for entry, _, i in rows:
            if free_at is None or entry >= free_at:
                mask[i] = True
                free_at = exits[i]
    return mask


@pytest.mark.parametrize("on_grid", [True, False])
def test_chain_of_packed_keys_matches_the_walk_and_the_rank_path(on_grid, monkeypatch):
    trades = trades_frame(8, 4_000, slots=600, many_runs=False)
    if not on_grid:  # mixed horizons and nanoseconds
        rng = np.random.default_rng(8)
        hours = pd.to_timedelta(rng.choice([1, 24, 48], len(trades)), unit="h")
        trades["exit_ts"] = trades["ts"] + hours + pd.to_timedelta(rng.integers(0, 999, len(trades)), "ns")
    packed = significance.chain_mask(trades)
    assert (packed == walked_chain(trades)).all()
    monkeypatch.setattr(significance, "_packed_chain_order", lambda *args: None)
    assert (significance.chain_mask(trades) == packed).all()


# ----------------------------------------------------------------------------------------- revive
@pytest.mark.parametrize("text", ["str", "category"])
def test_since_filter_matches_a_row_by_row_filter(text):
    trades = trades_frame(9, 3_000, text=text, slots=500)
    since = {
        "a": pd.Timestamp("2025-01-03", tz="UTC"),
        "é": pd.Timestamp("2025-01-05 10:00"),  # naive: UTC
        "ß": pd.Timestamp("2025-01-04 09:00", tz="Asia/Tokyo"),
        "nobody": pd.Timestamp("2025-01-02", tz="UTC"),
    }
    starts = {name: (t if t.tzinfo else t.tz_localize("UTC")) for name, t in since.items()}
    keep = [
        str(agent) not in starts or ts >= starts[str(agent)]
        for agent, ts in zip(trades["agent"], trades["ts"], strict=True)
    ]
    assert_frame_equal(since_filter(trades, since), trades[keep])
