"""The portfolio figures and the time order (docs/rules.md, *Supervisor rules*, *Portfolio and
drawdown*).

Expected numbers are computed by hand or by a plain Python walk over the trades sorted with
``sorted`` on (exit_ts, ts, run_id, instrument, direction, input position).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from meta_pipeline.supervisor.portfolio import (
    BREAKDOWN_COLUMNS,
    equity_curve,
    portfolio_breakdown,
    portfolio_figures,
    portfolio_summary,
    time_order,
)

T0 = datetime(2024, 3, 1, tzinfo=UTC)
PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def trade(
    exit_minute: int,
    net: float,
    *,
    agent="a",
    run_id=None,
    instrument="BTCUSDT",
    regime="trend",
    ts_minute=None,
):
    exit_ts = pd.Timestamp(T0 + timedelta(minutes=exit_minute))
    ts = (
        exit_ts - pd.Timedelta(hours=24)
        if ts_minute is None
        else pd.Timestamp(T0 + timedelta(minutes=ts_minute))
    )
    return {
        "agent": agent,
        "run_id": run_id or f"r{exit_minute:06d}",
        "instrument": instrument,
        "ts": ts,
        "exit_ts": exit_ts,
        "direction": "LONG",
        "gross_bps": net,
        "net_bps": net,
        "regime": regime,
        "confidence": np.nan,
    }


def frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows)


def walk(values) -> tuple[float, float]:
    """(pnl, max drawdown) of values taken in the order given, by the rule's words."""
    cum, peak, deepest = 0.0, 0.0, 0.0
    for v in values:
        cum += v
        peak = max(peak, cum)
        deepest = max(deepest, peak - cum)
    return cum, deepest


def test_the_rules_example():
    trades = frame([trade(60 * i, v) for i, v in enumerate([100, -50, -80, 20])])
    assert portfolio_summary(trades) == {
        "trades": 4,
        "pnl_bps": -10.0,
        "hit_rate": 0.5,
        "max_drawdown_bps": 130.0,
        "mean_bps": -2.5,
    }


def test_drawdown_uses_exit_time_order_not_file_order():
    # the file holds the trades in another order (−80, +100, +20, −50): in file order the drawdown
    # would be 80, in time order (+100, −50, −80, +20) it is 130
    rows = [trade(120, -80), trade(0, 100), trade(180, 20), trade(60, -50)]
    trades = frame(rows)
    file_order = walk(trades["net_bps"])[1]
    assert file_order == 80.0
    assert portfolio_summary(trades)["max_drawdown_bps"] == 130.0 != file_order
    assert portfolio_breakdown(trades, "agent").loc["a", "max_drawdown_bps"] == 130.0


def test_exit_time_not_signal_time_orders_the_trades():
    # a later signal can exit earlier (an exit_ts that is not ts + 24 h): exit decides
    rows = [trade(100, -80, ts_minute=0), trade(50, 100, ts_minute=10), trade(200, 20, ts_minute=5)]
    assert portfolio_summary(frame(rows))["max_drawdown_bps"] == 80.0  # +100, −80, +20
    assert list(time_order(frame(rows))) == [1, 0, 2]


def test_ties_are_broken_by_ts_then_run_id_then_instrument():
    rows = [
        trade(60, -100, run_id="r9"),
        trade(60, 100, run_id="r10"),  # "r10" < "r9": first
        trade(60, 30, run_id="r10", instrument="AAAUSDT", ts_minute=60 - 1445),  # earlier ts: first
        trade(60, -30, run_id="r10", instrument="AAAUSDT"),  # same run and time: by instrument
    ]
    trades = frame(rows)
    assert list(time_order(trades)) == [2, 3, 1, 0]
    # +30, −30, +100, −100: the drawdown is 100 (from the peak at 100)
    assert portfolio_summary(trades)["max_drawdown_bps"] == 100.0
    for seed in range(4):
        assert portfolio_summary(trades.sample(frac=1.0, random_state=seed)) == portfolio_summary(trades)


def test_a_book_that_only_loses_falls_from_zero():
    assert portfolio_summary(frame([trade(0, -10), trade(1, -20)]))["max_drawdown_bps"] == 30.0


def test_a_book_that_only_gains_has_no_drawdown():
    summary = portfolio_summary(frame([trade(0, 10), trade(1, 20), trade(2, 0.0)]))
    assert summary["max_drawdown_bps"] == 0.0
    assert summary["hit_rate"] == 2 / 3  # 0 is not a hit


def test_hand_computed_case():
    values = [50, -20, 30, -100, 10, 40, -5]
    # cum 50, 30, 60, −40, −30, 10, 5; peak 50, 50, 60, 60, 60, 60, 60 → deepest 100
    rows = [trade(10 * i, v, agent="ab"[i % 2]) for i, v in enumerate(values)]
    summary = portfolio_summary(frame(rows))
    assert summary == {
        "trades": 7,
        "pnl_bps": 5.0,
        "hit_rate": 4 / 7,
        "max_drawdown_bps": 100.0,
        "mean_bps": 5 / 7,
    }
    by_agent = portfolio_breakdown(frame(rows), "agent")
    # a: 50, 30, 10, −5 → no fall below a peak but −5: drawdown 5; b: −20, −100, 40 → 120
    assert by_agent.loc["a"].to_dict() == {
        "trades": 4,
        "pnl_bps": 85.0,
        "hit_rate": 0.75,
        "max_drawdown_bps": 5.0,
        "mean_bps": 21.25,
    }
    assert by_agent.loc["b"].to_dict() == {
        "trades": 3,
        "pnl_bps": -80.0,
        "hit_rate": 1 / 3,
        "max_drawdown_bps": 120.0,
        "mean_bps": -80 / 3,
    }


def test_empty_portfolio():
    empty = frame([trade(0, 1.0)]).iloc[:0]
    assert portfolio_summary(empty) == {
        "trades": 0,
        "pnl_bps": 0.0,
        "hit_rate": None,
        "max_drawdown_bps": 0.0,
        "mean_bps": None,
    }
    table = portfolio_breakdown(empty, "regime")
    assert table.empty
    assert list(table.columns) == BREAKDOWN_COLUMNS
    assert table.index.name == "regime"
    assert equity_curve(empty).empty


def test_bad_inputs_raise():
    good = frame([trade(0, 1.0)])
    with pytest.raises(ValueError, match="net_bps"):
        portfolio_summary(good.assign(net_bps=np.inf))
    with pytest.raises(ValueError, match="lacks column"):
        portfolio_summary(good.drop(columns=["run_id"]))
    with pytest.raises(ValueError, match="lacks column"):
        portfolio_breakdown(good, "strategy")
    with pytest.raises(ValueError, match="missing timestamp"):
        portfolio_summary(good.assign(ts=pd.Series([pd.NaT], dtype="datetime64[ns, UTC]")))


# ---------------------------------------------------------------------------------- breakdowns
def mixed_fleet(n: int = 400, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    regimes = np.array(["trend", "range", None, "unknown"], dtype=object)
    rows = [
        trade(
            int(m),
            float(v),
            agent=f"agent{int(a)}",
            run_id=f"r{i}",
            instrument=["BTCUSDT", "ETHUSDT", "SOLUSDT"][int(s)],
            regime=regimes[int(g)],
        )
        for i, (m, v, a, s, g) in enumerate(
            zip(
                rng.integers(0, 5 * 1440, n),
                rng.normal(0, 50, n),
                rng.integers(0, 7, n),
                rng.integers(0, 3, n),
                rng.integers(0, 4, n),
                strict=True,
            )
        )
    ]
    return frame(rows).sample(frac=1.0, random_state=seed)


@pytest.mark.parametrize("by", ["agent", "instrument", "regime"])
def test_breakdowns_sum_to_the_total(by):
    trades = mixed_fleet()
    summary = portfolio_summary(trades)
    table = portfolio_breakdown(trades, by)
    assert table["trades"].sum() == summary["trades"]
    assert table["pnl_bps"].sum() == pytest.approx(summary["pnl_bps"], rel=1e-12, abs=1e-9)
    hits = (table["hit_rate"] * table["trades"]).sum()
    assert hits == pytest.approx(summary["hit_rate"] * summary["trades"])
    assert list(table.index) == sorted(table.index)
    assert table["trades"].dtype == np.int64


@pytest.mark.parametrize("by", ["agent", "instrument", "regime"])
def test_each_group_is_its_own_portfolio(by):
    trades = mixed_fleet()
    table = portfolio_breakdown(trades, by)
    keys = trades[by].fillna("unknown")
    for key, row in table.iterrows():
        alone = portfolio_summary(trades[keys == key])
        assert row["trades"] == alone["trades"]
        for column in ("pnl_bps", "hit_rate", "max_drawdown_bps", "mean_bps"):
            assert row[column] == pytest.approx(alone[column], rel=1e-12, abs=1e-9), (key, column)


def test_missing_regime_is_unknown():
    trades = frame([trade(0, 10, regime=None), trade(1, 20, regime="unknown"), trade(2, 5, regime="trend")])
    table = portfolio_breakdown(trades, "regime")
    assert table["trades"].to_dict() == {"trend": 1, "unknown": 2}
    only_missing = portfolio_breakdown(
        frame([trade(0, 10, regime=None), trade(1, -4, regime=np.nan)]), "regime"
    )
    assert only_missing["pnl_bps"].to_dict() == {"unknown": 6.0}


def test_categorical_columns_give_the_same_figures():
    trades = mixed_fleet()
    cat = trades.astype(
        {"agent": "category", "instrument": "category", "regime": "category", "run_id": "category"}
    )
    for by in ("agent", "instrument", "regime"):
        assert_frame_equal(portfolio_breakdown(cat, by), portfolio_breakdown(trades, by))
    assert portfolio_summary(cat) == portfolio_summary(trades)


def test_portfolio_figures_is_the_summary_and_the_breakdowns_with_one_sort():
    trades = mixed_fleet()
    summary, tables = portfolio_figures(trades)
    assert summary == portfolio_summary(trades)
    assert list(tables) == ["agent", "instrument", "regime"]
    for by, table in tables.items():
        assert_frame_equal(table, portfolio_breakdown(trades, by))


# ------------------------------------------------------------------------------------ the curve
def test_equity_curve_small():
    rows = [trade(180, 20), trade(0, 100), trade(120, -80), trade(60, -50)]
    curve = equity_curve(frame(rows))
    assert list(curve.columns) == ["exit_ts", "cum_pnl_bps", "drawdown_bps"]
    assert curve["cum_pnl_bps"].tolist() == [100, 50, -30, -10]
    assert curve["drawdown_bps"].tolist() == [0, -50, -130, -110]
    assert curve["exit_ts"].is_monotonic_increasing
    assert str(curve["exit_ts"].dtype) == "datetime64[ns, UTC]"


def test_equity_curve_is_downsampled_keeping_the_deepest_point():
    rng = np.random.default_rng(1)
    values = rng.normal(0, 30, 10_000)
    trades = frame([trade(i, float(v), run_id=f"r{i:05d}") for i, v in enumerate(values)])
    full = equity_curve(trades, max_points=20_000)
    assert len(full) == 10_000
    small = equity_curve(trades, max_points=500)
    assert len(small) <= 500
    summary = portfolio_summary(trades)
    assert small["drawdown_bps"].min() == -summary["max_drawdown_bps"]
    assert (
        small["cum_pnl_bps"].max() >= full["cum_pnl_bps"].iloc[: int(full["drawdown_bps"].idxmin()) + 1].max()
    )
    assert small["exit_ts"].iloc[0] == full["exit_ts"].iloc[0]
    assert small["exit_ts"].iloc[-1] == full["exit_ts"].iloc[-1]
    merged = small.merge(full, on="exit_ts", suffixes=("", "_full"))
    assert (merged["cum_pnl_bps"] == merged["cum_pnl_bps_full"]).all()  # values kept as they are
    with pytest.raises(ValueError):
        equity_curve(trades, max_points=3)


# ----------------------------------------------------------------------------------- time order
@st.composite
def tie_heavy_frames(draw):
    n = draw(st.integers(1, 40))
    exit_minutes = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    ts_minutes = draw(st.lists(st.integers(-3, 0), min_size=n, max_size=n))
    runs = draw(st.lists(st.sampled_from(["r1", "r10", "r9", "R", "é", ""]), min_size=n, max_size=n))
    instruments = draw(st.lists(st.sampled_from(["BTCUSDT", "ETHUSDT"]), min_size=n, max_size=n))
    directions = draw(st.lists(st.sampled_from(["LONG", "SHORT"]), min_size=n, max_size=n))
    values = draw(st.lists(st.floats(-100, 100), min_size=n, max_size=n))
    rows = []
    for i in range(n):
        row = trade(
            exit_minutes[i], values[i], run_id=runs[i], instrument=instruments[i], ts_minute=ts_minutes[i]
        )
        row["direction"] = directions[i]
        row["run_id"] = runs[i]
        rows.append(row)
    return frame(rows)


@PROPERTY
@given(tie_heavy_frames(), st.booleans())
def test_time_order_matches_python_sorted(trades, categorical):
    if categorical:
        trades = trades.astype({"run_id": "category", "instrument": "category", "direction": "category"})
    keys = list(
        zip(
            trades["exit_ts"],
            trades["ts"],
            trades["run_id"].astype(str),
            trades["instrument"].astype(str),
            trades["direction"].astype(str),
            range(len(trades)),
            strict=True,
        )
    )
    expected = [k[-1] for k in sorted(keys)]
    assert list(time_order(trades)) == expected
    ordered = trades["net_bps"].to_numpy()[expected]
    pnl, deepest = walk(ordered)
    summary = portfolio_summary(trades)
    assert summary["max_drawdown_bps"] == pytest.approx(deepest, abs=1e-9)
    assert summary["pnl_bps"] == pytest.approx(pnl, abs=1e-9)


def test_time_order_on_a_large_frame_matches_lexsort():
    rng = np.random.default_rng(2)
    n = 50_000
    exit_ns = T0.timestamp() * 10**9 + rng.integers(0, 5_000, n) * 10**9  # many ties
    trades = pd.DataFrame(
        {
            "exit_ts": pd.to_datetime(exit_ns.astype(np.int64), unit="ns", utc=True),
            "ts": pd.to_datetime(
                exit_ns.astype(np.int64) - rng.integers(0, 3, n) * 10**9, unit="ns", utc=True
            ),
            "run_id": pd.Series(rng.integers(0, 50, n)).astype(str).radd("run-"),
            "net_bps": rng.normal(0, 1, n),
        }
    )
    expected = np.lexsort(
        (
            np.arange(n),
            pd.factorize(trades["run_id"], sort=True)[0],
            trades["ts"].to_numpy(),
            trades["exit_ts"].to_numpy(),
        )
    )
    assert (time_order(trades) == expected).all()


def test_naive_and_aware_times_are_the_same_instants():
    aware = frame([trade(0, 1.0), trade(1, -1.0)])
    naive = aware.assign(ts=aware["ts"].dt.tz_localize(None), exit_ts=aware["exit_ts"].dt.tz_localize(None))
    other_zone = aware.assign(exit_ts=aware["exit_ts"].dt.tz_convert("Asia/Tokyo"))
    assert portfolio_summary(naive) == portfolio_summary(aware) == portfolio_summary(other_zone)


def test_time_order_with_many_exact_ties_matches_python_sorted():
    """A fleet on a fixed schedule: most trades share their exit time with others, so the ties are
    settled by one multi-key sort; the order must equal Python's sort on the same keys."""
    rng = np.random.default_rng(5)
    n = 5_000
    slots = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 50, n) * 30, unit="min")
    frame = pd.DataFrame(
        {
            "agent": rng.choice(["a", "b", "c"], n),
            "run_id": [f"r{v}" for v in rng.integers(0, 400, n)],
            "instrument": rng.choice(["BTCUSDT", "ETHUSDT", "é"], n),
            "direction": rng.choice(["LONG", "SHORT"], n),
            "ts": slots,
            "exit_ts": slots + pd.Timedelta(hours=24),
            "net_bps": rng.normal(0, 50, n),
        }
    )
    for variant in (frame, frame.astype({"run_id": "category", "instrument": "category"})):
        expected = sorted(
            range(n),
            key=lambda i: (
                frame["exit_ts"].iloc[i],
                frame["ts"].iloc[i],
                frame["run_id"].iloc[i],
                frame["instrument"].iloc[i],
                frame["direction"].iloc[i],
                i,
            ),
        )
        assert list(time_order(variant)) == expected
