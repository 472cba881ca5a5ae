"""The portfolio ledger (meta_pipeline/supervisor/ledger_portfolio.py) gives portfolio_figures of the
full history while reading only the reconciled_trades days that changed."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meta_pipeline import names
from meta_pipeline.storage import Warehouse
from meta_pipeline.supervisor import history, portfolio
from meta_pipeline.supervisor import ledger_portfolio as lp
from meta_pipeline_tests.supervisor.test_ledger import START, trade_rows, write_days

KEYS = ("agent", "instrument", "regime")


def trades_with_regimes(
    rng: np.random.Generator, days: range, agents: int = 4, per_day: int = 6, tag: str = ""
):
    """test_ledger's rows (30-minute grid: ties in time; coarse PnL: ties and zeros) with several
    regimes and some missing ones (grouped as "unknown")."""
    frame = trade_rows(rng, days, agents, per_day, tag=tag)
    frame["regime"] = np.array(["trend", "range", None], dtype=object)[rng.integers(0, 3, len(frame))]
    return frame


def expected(warehouse: Warehouse) -> tuple[dict, dict[str, pd.DataFrame]]:
    return portfolio.portfolio_figures(history.matured_trades(warehouse), KEYS)


def assert_same(summary: dict, breakdowns: dict, warehouse: Warehouse) -> None:
    """Counts (and hit rates: the same integer ratios) exactly; sums, means and drawdowns to rtol 1e-9
    (atol 1e-9 bps): the ledger adds the same numbers per day, then across days, where the portfolio
    takes one running sum, so only the last bits (≈ 1e-15 relative) can move; the atol covers a
    figure that is 0 in one and ±1e-13 in the other."""
    want_summary, want = expected(warehouse)
    assert summary.keys() == want_summary.keys()
    assert summary["trades"] == want_summary["trades"] and type(summary["trades"]) is int
    assert summary["hit_rate"] == want_summary["hit_rate"]
    for key in ("pnl_bps", "max_drawdown_bps", "mean_bps"):
        if want_summary[key] is None:
            assert summary[key] is None
        else:
            assert summary[key] == pytest.approx(want_summary[key], rel=1e-9, abs=1e-9), key
    assert breakdowns.keys() == want.keys()
    for by, table in breakdowns.items():
        pd.testing.assert_index_equal(table.index, want[by].index)
        assert list(table.columns) == list(want[by].columns)
        assert (table.dtypes == want[by].dtypes).all()
        np.testing.assert_array_equal(table["trades"], want[by]["trades"])
        np.testing.assert_array_equal(table["hit_rate"], want[by]["hit_rate"])
        pd.testing.assert_frame_equal(table, want[by], check_exact=False, rtol=1e-9, atol=1e-9)


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path / "warehouse")


# ------------------------------------------------------------------------------------------ ticks
def test_ticks_read_only_the_changed_days(warehouse: Warehouse, tmp_path: Path):
    rng = np.random.default_rng(11)
    directory = tmp_path / "ledger"
    write_days(warehouse, names.RECONCILED_TRADES, trades_with_regimes(rng, range(10)))

    summary, breakdowns, _, report = lp.ledger_portfolio_figures(directory, warehouse)
    assert_same(summary, breakdowns, warehouse)
    assert report.days_read == [f"2025-03-{d:02d}" for d in range(1, 11)] and report.mode == "ledger"

    # nothing changed: nothing read
    summary, breakdowns, _, report = lp.ledger_portfolio_figures(directory, warehouse)
    assert_same(summary, breakdowns, warehouse)
    assert report.days_read == [] and report.days_reused == 10

    # an appended day
    write_days(warehouse, names.RECONCILED_TRADES, trades_with_regimes(rng, range(10, 11), tag="n"))
    summary, breakdowns, _, report = lp.ledger_portfolio_figures(directory, warehouse)
    assert_same(summary, breakdowns, warehouse)
    assert report.days_read == ["2025-03-11"] and report.days_reused == 10

    # a late row in an old day, large enough to move the fleet's drawdown
    old = warehouse.read_partition(names.RECONCILED_TRADES, "2025-03-04")
    late = old.iloc[:1].assign(
        run_id="late", ts=pd.Timestamp("2025-03-04T23:59:59", tz="UTC"), status="matured", horizon_hours=24
    )
    late = late.assign(net_pnl_bps=-5000.0, regime="crash", agent="a9")
    warehouse.write_partition(
        names.RECONCILED_TRADES, "2025-03-04", pd.concat([old, late], ignore_index=True)
    )
    summary, breakdowns, _, report = lp.ledger_portfolio_figures(directory, warehouse)
    assert_same(summary, breakdowns, warehouse)
    assert report.days_read == ["2025-03-04"]
    assert "crash" in breakdowns["regime"].index and "a9" in breakdowns["agent"].index

    # a deleted day: nothing read, its rows dropped (and the late agent with them)
    warehouse.partition_path(names.RECONCILED_TRADES, "2025-03-04").unlink()
    summary, breakdowns, _, report = lp.ledger_portfolio_figures(directory, warehouse)
    assert_same(summary, breakdowns, warehouse)
    assert report.days_read == [] and report.days_removed == ["2025-03-04"]
    assert "a9" not in breakdowns["agent"].index

    # the last day rewritten in another row order (trades maturing): only it is read
    last = warehouse.read_partition(names.RECONCILED_TRADES, "2025-03-11")
    warehouse.write_partition(names.RECONCILED_TRADES, "2025-03-11", last.iloc[::-1].reset_index(drop=True))
    summary, breakdowns, _, report = lp.ledger_portfolio_figures(directory, warehouse)
    assert_same(summary, breakdowns, warehouse)
    assert report.days_read == ["2025-03-11"]


def test_drawdown_across_days_is_composed_exactly(warehouse: Warehouse, tmp_path: Path):
    """The rules' example, +100, −50 | −80, +20 on two days: 130 bps, though neither day alone
    nor the end-of-day series (100 − 50 = 50, then −10) shows it."""
    rows = []
    for day, pnls in ((0, [100.0, -50.0]), (1, [-80.0, 20.0])):
        for i, pnl in enumerate(pnls):
            rows.append(
                {
                    "ts": START + pd.Timedelta(days=day, hours=i),
                    "agent": "a0",
                    "run_id": f"r{day}{i}",
                    "instrument": "BTCUSDT",
                    "direction": "LONG",
                    "horizon_hours": 24,
                    "realized_pnl_bps": pnl,
                    "net_pnl_bps": pnl,
                    "status": "matured",
                    "regime": None,
                    "confidence": 0.5,
                }
            )
    write_days(warehouse, names.RECONCILED_TRADES, pd.DataFrame(rows))
    summary, breakdowns, series, _ = lp.ledger_portfolio_figures(tmp_path / "l", warehouse)
    assert summary["max_drawdown_bps"] == 130.0 and summary["pnl_bps"] == -10.0
    assert breakdowns["regime"].index.tolist() == ["unknown"]
    assert breakdowns["agent"].loc["a0", "max_drawdown_bps"] == 130.0
    assert series["cum_pnl_bps"].tolist() == [50.0, -10.0]
    assert series["drawdown_bps"].tolist() == [-50.0, -110.0]  # end of day, below the intraday peak 100
    assert series["worst_drawdown_bps"].tolist() == [-50.0, -130.0]
    assert series["low_bps"].tolist() == [0.0, -30.0] and series["high_bps"].tolist() == [100.0, 50.0]
    assert series["exit_day"].tolist() == [
        pd.Timestamp("2025-03-02", tz="UTC"),
        pd.Timestamp("2025-03-03", tz="UTC"),
    ]
    curve = lp.chart_curve(series)
    assert curve.columns.tolist() == ["exit_ts", "cum_pnl_bps", "drawdown_bps"]
    assert curve["drawdown_bps"].min() == -130.0


def test_daily_series_against_the_per_trade_curve(warehouse: Warehouse, tmp_path: Path):
    rng = np.random.default_rng(12)
    write_days(warehouse, names.RECONCILED_TRADES, trades_with_regimes(rng, range(9), per_day=9))
    summary, _, series, _ = lp.ledger_portfolio_figures(tmp_path / "l", warehouse)
    trades = history.matured_trades(warehouse)
    curve = portfolio.equity_curve(trades, max_points=10**6)
    day = curve["exit_ts"].dt.floor("D")
    by_day = curve.groupby(day, sort=True)
    np.testing.assert_array_equal(series["exit_day"].to_numpy(), by_day.size().index.to_numpy())
    np.testing.assert_array_equal(series["trades"], by_day.size().to_numpy())
    np.testing.assert_allclose(series["cum_pnl_bps"], by_day["cum_pnl_bps"].last(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(series["drawdown_bps"], by_day["drawdown_bps"].last(), rtol=1e-9, atol=1e-9)
    # the day's range includes its opening level, the previous day's close (0 before the first day)
    opening = np.r_[0.0, series["cum_pnl_bps"].to_numpy()[:-1]]
    opening_down = np.r_[0.0, series["drawdown_bps"].to_numpy()[:-1]]
    np.testing.assert_allclose(
        series["worst_drawdown_bps"],
        np.minimum(by_day["drawdown_bps"].min(), opening_down),
        rtol=1e-9,
        atol=1e-9,
    )
    np.testing.assert_allclose(
        series["low_bps"], np.minimum(by_day["cum_pnl_bps"].min(), opening), rtol=1e-9, atol=1e-9
    )
    np.testing.assert_allclose(
        series["high_bps"], np.maximum(by_day["cum_pnl_bps"].max(), opening), rtol=1e-9, atol=1e-9
    )
    assert -series["worst_drawdown_bps"].min() == pytest.approx(
        summary["max_drawdown_bps"], rel=1e-9, abs=1e-9
    )


def test_empty_warehouse(warehouse: Warehouse, tmp_path: Path):
    summary, breakdowns, series, report = lp.ledger_portfolio_figures(tmp_path / "l", warehouse)
    assert_same(summary, breakdowns, warehouse)
    assert series.empty and list(series.columns) == lp.SERIES_COLUMNS and report.days_read == []
    # days without a matured 24 h trade (pending rows only) are read once and give no rows
    frame = trade_rows(np.random.default_rng(13), range(2)).assign(status="pending")
    write_days(warehouse, names.RECONCILED_TRADES, frame)
    summary, breakdowns, series, report = lp.ledger_portfolio_figures(tmp_path / "l", warehouse)
    assert_same(summary, breakdowns, warehouse)
    assert summary["trades"] == 0 and series.empty and len(report.days_read) == 2


def test_a_partition_off_its_day_falls_back_to_the_full_computation(warehouse: Warehouse, tmp_path: Path):
    rng = np.random.default_rng(14)
    write_days(warehouse, names.RECONCILED_TRADES, trades_with_regimes(rng, range(3)))
    stray = warehouse.read_partition(names.RECONCILED_TRADES, "2025-03-02")
    warehouse.write_partition(names.RECONCILED_TRADES, "2025-03-01", stray)  # rows of another day
    summary, breakdowns, series, report = lp.ledger_portfolio_figures(tmp_path / "l", warehouse)
    assert report.mode.startswith("full:")
    want_summary, want = expected(warehouse)
    assert summary == want_summary
    for by in KEYS:
        pd.testing.assert_frame_equal(breakdowns[by], want[by])
    assert series["trades"].sum() == summary["trades"]


def test_a_damaged_file_is_rebuilt(warehouse: Warehouse, tmp_path: Path):
    rng = np.random.default_rng(15)
    write_days(warehouse, names.RECONCILED_TRADES, trades_with_regimes(rng, range(4)))
    lp.ledger_portfolio_figures(tmp_path / "l", warehouse)
    (tmp_path / "l" / "days.parquet").write_bytes(b"not parquet")
    summary, breakdowns, _, report = lp.ledger_portfolio_figures(tmp_path / "l", warehouse)
    assert_same(summary, breakdowns, warehouse)
    assert report.mode.startswith("rebuilt:") and len(report.days_read) == 4


# ---------------------------------------------------------------------------- random histories
@st.composite
def histories(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    days = draw(st.integers(1, 8))
    agents = draw(st.integers(1, 4))
    per_day = draw(st.integers(1, 7))
    steps = draw(
        st.lists(
            st.sampled_from(["append", "late", "delete", "rewrite_last", "none"]), min_size=1, max_size=4
        )
    )
    return seed, days, agents, per_day, steps


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_random_histories_match_the_full_computation(case):
    seed, days, agents, per_day, steps = case
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        warehouse = Warehouse(Path(tmp) / "warehouse")
        directory = Path(tmp) / "ledger"
        write_days(warehouse, names.RECONCILED_TRADES, trades_with_regimes(rng, range(days), agents, per_day))
        summary, breakdowns, _, report = lp.ledger_portfolio_figures(directory, warehouse)
        assert_same(summary, breakdowns, warehouse)
        n = days
        for i, step in enumerate(steps):
            keys = warehouse.stored_keys(names.RECONCILED_TRADES)
            touched: list[str] = []
            if step == "append":
                write_days(
                    warehouse,
                    names.RECONCILED_TRADES,
                    trades_with_regimes(rng, range(n, n + 1), agents, per_day, tag=f"s{i}"),
                )
                touched = warehouse.stored_keys(names.RECONCILED_TRADES)[-1:]
                n += 1
            elif step == "late" and keys:
                key = keys[int(rng.integers(0, len(keys)))]
                offset = (pd.Timestamp(key, tz="UTC") - START).days
                old = warehouse.read_partition(names.RECONCILED_TRADES, key)
                extra = trades_with_regimes(rng, range(offset, offset + 1), agents, 2, tag=f"l{i}")
                warehouse.write_partition(
                    names.RECONCILED_TRADES, key, pd.concat([old, extra], ignore_index=True)
                )
                touched = [key]
            elif step == "delete" and keys:
                key = keys[int(rng.integers(0, len(keys)))]
                warehouse.partition_path(names.RECONCILED_TRADES, key).unlink()
            elif step == "rewrite_last" and keys:
                old = warehouse.read_partition(names.RECONCILED_TRADES, keys[-1])
                warehouse.write_partition(
                    names.RECONCILED_TRADES, keys[-1], old.iloc[::-1].reset_index(drop=True)
                )
                touched = [keys[-1]]
            summary, breakdowns, series, report = lp.ledger_portfolio_figures(directory, warehouse)
            assert_same(summary, breakdowns, warehouse)
            assert report.days_read == touched
            assert series["trades"].sum() == summary["trades"]
