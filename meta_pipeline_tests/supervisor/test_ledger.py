"""The ledger (meta_pipeline/supervisor/ledger.py) gives the full computation's agent table while
reading only the warehouse days that changed."""

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
from meta_pipeline.supervisor import history, ledger, portfolio, stats

START = pd.Timestamp("2025-03-01", tz="UTC")
INSTRUMENTS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
EXACT = ["trades", "runs", "error_runs", "chain_trades"]


# ------------------------------------------------------------------------------------ warehouses
def trade_rows(
    rng: np.random.Generator, days: range, agents: int = 4, per_day: int = 6, *, tag: str = ""
) -> pd.DataFrame:
    """Rows of ``reconciled_trades`` (the columns history.py reads): matured 24 h trades on a 30-minute
    grid (so entry times tie, within and across agents, and exit times tie), a few other horizons and
    pending rows (not read), PnL on a coarse grid (ties and zeros: hits must not count 0)."""
    n = len(days) * per_day
    day = np.repeat(np.asarray(list(days)), per_day)
    slot = rng.integers(0, 48, n)
    ts = START + pd.to_timedelta(day, unit="D") + pd.to_timedelta(slot * 30, unit="min")
    gross = rng.integers(-6, 7, n) * 25.0
    frame = pd.DataFrame(
        {
            "ts": ts,
            "agent": np.array([f"a{i}" for i in range(agents)], dtype=object)[rng.integers(0, agents, n)],
            "run_id": [f"r{tag}{i}-{rng.integers(0, 3)}" for i in range(n)],
            "instrument": np.array(INSTRUMENTS, dtype=object)[rng.integers(0, 3, n)],
            "direction": np.where(rng.random(n) < 0.6, "LONG", "SHORT").astype(object),
            "horizon_hours": np.where(rng.random(n) < 0.85, 24, 4),
            "realized_pnl_bps": gross,
            "net_pnl_bps": gross - rng.integers(0, 2, n) * 5.0,
            "status": np.where(rng.random(n) < 0.95, "matured", "pending").astype(object),
            "regime": "trend",
            "confidence": 0.5,
        }
    )
    return frame.sample(frac=1.0, random_state=int(rng.integers(0, 2**31))).reset_index(
        drop=True
    )  # file order


def run_rows(
    rng: np.random.Generator, days: range, agents: int = 5, per_day: int = 8, *, tag: str = ""
) -> pd.DataFrame:
    """Rows of ``telemetry``: integer-ms latencies with repeats, some NaN, errors some NaN (unreadable)."""
    n = len(days) * per_day
    day = np.repeat(np.asarray(list(days)), per_day)
    ts = START + pd.to_timedelta(day, unit="D") + pd.to_timedelta(rng.integers(0, 86_400, n), unit="s")
    latency = rng.integers(1, 20, n) * 50.0
    latency[rng.random(n) < 0.1] = np.nan
    errors = rng.integers(0, 3, n).astype(float) * (rng.random(n) < 0.3)
    errors[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame(
        {
            "agent": np.array([f"a{i}" for i in range(agents)], dtype=object)[rng.integers(0, agents, n)],
            "run_id": [f"u{tag}{i}" for i in range(n)],
            "ts": ts,
            "latency_ms": latency,
            "errors": errors,
            "cost_usd": rng.integers(0, 100, n) / 1000.0,
            "tokens_in": 1000.0,
            "tokens_out": 100.0,
        }
    )


def write_days(warehouse: Warehouse, asset: str, frame: pd.DataFrame) -> None:
    """One partition per UTC day of ``ts``, as the reconciliation and the ingestion write them."""
    for day, part in frame.groupby(frame["ts"].dt.strftime("%Y-%m-%d"), sort=True):
        warehouse.write_partition(asset, day, part.reset_index(drop=True))


def full(warehouse: Warehouse, *, since=None, start=None, n_trials=None) -> pd.DataFrame:
    """The reference: stats.agent_stats on everything stored, cut as the agent_stats asset cuts it."""
    trades = history.matured_trades(warehouse)
    runs = history.telemetry_runs(warehouse)
    if start is not None:
        trades = trades[trades["exit_ts"] >= start]
        runs = runs[runs["ts"] >= start]
    return stats.agent_stats(trades, runs, since=since, n_trials=n_trials)


def assert_same(table: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Counts and the chain exactly; floats to rtol 1e-9: the ledger adds the same numbers in another
    order (per day, then across days; stats in one compensated pass), which moves the last bits
    (about 1e-15 relative) and never more than 1e-12 on these magnitudes. An absolute 1e-9 bps covers
    a figure that is a difference of nearly equal sums (a drawdown or std of 0 against 1e-13)."""
    assert list(table.columns) == list(expected.columns)
    assert table.index.equals(expected.index), (table.index, expected.index)
    assert table.index.dtype == expected.index.dtype
    assert (table.dtypes == expected.dtypes).all(), pd.concat([table.dtypes, expected.dtypes], axis=1)
    for column in EXACT:
        np.testing.assert_array_equal(table[column].to_numpy(), expected[column].to_numpy(), err_msg=column)
    pd.testing.assert_series_equal(table["psr_reason"], expected["psr_reason"])
    floats = [c for c in table.columns if c not in EXACT and c != "psr_reason"]
    for column in floats:
        np.testing.assert_allclose(
            table[column].to_numpy(dtype=float),
            expected[column].to_numpy(dtype=float),
            rtol=1e-9,
            atol=1e-9,
            err_msg=column,
        )


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path / "warehouse")


# ------------------------------------------------------------------------------------------ ticks
def test_initial_build_then_ticks_match_the_full_computation(warehouse: Warehouse, tmp_path: Path):
    rng = np.random.default_rng(1)
    directory = tmp_path / "ledger"
    write_days(warehouse, names.RECONCILED_TRADES, trade_rows(rng, range(12)))
    write_days(warehouse, names.TELEMETRY, run_rows(rng, range(12)))

    table, report = ledger.ledger_agent_stats(directory, warehouse)
    assert_same(table, full(warehouse))
    assert len(report.trade_days_read) == 12 and report.checkpoint["trades"] == "rebuilt"

    # nothing changed: nothing is read raw
    table, report = ledger.ledger_agent_stats(directory, warehouse)
    assert_same(table, full(warehouse))
    assert report.trade_days_read == [] and report.run_days_read == []
    assert report.trade_days_reused == 12 and report.chain_from is None

    # a new day: only it is read
    write_days(warehouse, names.RECONCILED_TRADES, trade_rows(rng, range(12, 13), tag="n"))
    write_days(warehouse, names.TELEMETRY, run_rows(rng, range(12, 13), tag="n"))
    table, report = ledger.ledger_agent_stats(directory, warehouse)
    assert_same(table, full(warehouse))
    assert report.trade_days_read == ["2025-03-13"] and report.run_days_read == ["2025-03-13"]
    assert report.checkpoint == {"trades": "advanced", "runs": "advanced"}
    assert report.chain_from == "2025-03-13"

    # a late trade on an old day: that day is read, and the chain continues from it
    old = warehouse.read_partition(names.RECONCILED_TRADES, "2025-03-05")
    late = old.iloc[:1].assign(
        run_id="late", ts=pd.Timestamp("2025-03-05T00:00", tz="UTC"), net_pnl_bps=-400.0
    )
    warehouse.write_partition(
        names.RECONCILED_TRADES, "2025-03-05", pd.concat([old, late], ignore_index=True)
    )
    table, report = ledger.ledger_agent_stats(directory, warehouse)
    assert_same(table, full(warehouse))
    assert report.checkpoint["trades"] == "rebuilt" and report.chain_from == "2025-03-05"
    assert report.trade_days_read == [f"2025-03-{d:02d}" for d in range(5, 14)]  # the chain's days
    assert report.run_days_read == []

    # a deleted day
    warehouse.partition_path(names.RECONCILED_TRADES, "2025-03-08").unlink()
    warehouse.partition_path(names.TELEMETRY, "2025-03-08").unlink()
    table, report = ledger.ledger_agent_stats(directory, warehouse)
    assert_same(table, full(warehouse))
    assert report.run_days_read == []

    # the last day rewritten (trades maturing): only it is read, the checkpoint stays
    last = warehouse.read_partition(names.RECONCILED_TRADES, "2025-03-13")
    warehouse.write_partition(
        names.RECONCILED_TRADES, "2025-03-13", last.assign(net_pnl_bps=last["net_pnl_bps"] + 1)
    )
    table, report = ledger.ledger_agent_stats(directory, warehouse)
    assert_same(table, full(warehouse))
    assert report.trade_days_read == ["2025-03-13"] and report.checkpoint["trades"] == "reused"


def test_revive_and_window_match_the_full_computation(warehouse: Warehouse, tmp_path: Path):
    rng = np.random.default_rng(2)
    directory = tmp_path / "ledger"
    write_days(warehouse, names.RECONCILED_TRADES, trade_rows(rng, range(15)))
    write_days(warehouse, names.TELEMETRY, run_rows(rng, range(15)))
    ledger.ledger_agent_stats(directory, warehouse)

    since = {"a1": pd.Timestamp("2025-03-06T13:17", tz="UTC"), "a2": pd.Timestamp("2025-03-14", tz="UTC")}
    table, report = ledger.ledger_agent_stats(directory, warehouse, since=since)
    assert_same(table, full(warehouse, since=since))
    # the revive days are read (a1's cut day; the chain from the first revive on), nothing before
    assert min(report.trade_days_read) == "2025-03-06"
    assert report.run_days_read == ["2025-03-06"]
    # the same revive on the next tick: only the day the revive cuts (summarized from its rows ≥ since)
    table, report = ledger.ledger_agent_stats(directory, warehouse, since=since)
    assert_same(table, full(warehouse, since=since))
    assert report.trade_days_read == ["2025-03-06"] and report.run_days_read == ["2025-03-06"]
    assert report.chain_from is None

    # a revive after every trade of the agent: it keeps its row with 0 trades
    since = {"a3": pd.Timestamp("2025-04-30", tz="UTC")}
    table, _ = ledger.ledger_agent_stats(directory, warehouse, since=since)
    assert_same(table, full(warehouse, since=since))
    assert table.loc["a3", "trades"] == 0 and table.loc["a3", "psr_reason"] == "no matured trades"

    # a look-back window (start at midnight, as the asset's), and with a revive inside it
    for start, since in (
        (pd.Timestamp("2025-03-09", tz="UTC"), None),
        (pd.Timestamp("2025-03-09", tz="UTC"), {"a0": pd.Timestamp("2025-03-11T05:00", tz="UTC")}),
        (pd.Timestamp("2025-03-09T07:30", tz="UTC"), {"a0": pd.Timestamp("2025-03-02", tz="UTC")}),
    ):
        table, report = ledger.ledger_agent_stats(directory, warehouse, start=start, since=since)
        assert_same(table, full(warehouse, start=start, since=since))
        assert min(report.trade_days_read, default="9") >= "2025-03-08"  # bounded by the window
        # the window's second tick of the day reads nothing new
        table, report = ledger.ledger_agent_stats(directory, warehouse, start=start, since=since)
        assert_same(table, full(warehouse, start=start, since=since))
    # back to all history
    table, _ = ledger.ledger_agent_stats(directory, warehouse)
    assert_same(table, full(warehouse))


def test_n_trials_and_errors_as_stats(warehouse: Warehouse, tmp_path: Path):
    rng = np.random.default_rng(3)
    write_days(warehouse, names.RECONCILED_TRADES, trade_rows(rng, range(5)))
    table, _ = ledger.ledger_agent_stats(tmp_path / "l", warehouse, n_trials=40)
    assert_same(table, full(warehouse, n_trials=40))
    with pytest.raises(ValueError, match="n_trials"):
        ledger.ledger_agent_stats(tmp_path / "l", warehouse, n_trials=1)


def test_known_agents_count_as_trials_with_the_history_s_own(warehouse: Warehouse, tmp_path: Path):
    rng = np.random.default_rng(4)
    write_days(warehouse, names.RECONCILED_TRADES, trade_rows(rng, range(40)))
    agents = set(full(warehouse).index)
    known = {"retired_long_ago", "killed_last_year", *list(agents)[:2]}  # two overlap the history
    table, _ = ledger.ledger_agent_stats(tmp_path / "l", warehouse, known_agents=known)
    assert_same(table, full(warehouse, n_trials=len(agents) + 2))
    assert not table["deflated_sharpe"].equals(full(warehouse)["deflated_sharpe"])  # N mattered


def test_empty_warehouse(warehouse: Warehouse, tmp_path: Path):
    table, report = ledger.ledger_agent_stats(tmp_path / "l", warehouse)
    assert_same(table, full(warehouse))
    assert table.empty and report.trade_days_read == []


def test_runs_only(warehouse: Warehouse, tmp_path: Path):
    rng = np.random.default_rng(4)
    write_days(warehouse, names.TELEMETRY, run_rows(rng, range(6)))
    table, _ = ledger.ledger_agent_stats(tmp_path / "l", warehouse)
    assert_same(table, full(warehouse))


def test_a_partition_off_its_day_falls_back_to_the_full_computation(warehouse: Warehouse, tmp_path: Path):
    rng = np.random.default_rng(5)
    frame = trade_rows(rng, range(3))
    write_days(warehouse, names.RECONCILED_TRADES, frame)
    stray = warehouse.read_partition(names.RECONCILED_TRADES, "2025-03-02")
    warehouse.write_partition(names.RECONCILED_TRADES, "2025-03-01", stray)  # rows of another day
    table, report = ledger.ledger_agent_stats(tmp_path / "l", warehouse)
    assert report.mode.startswith("full:")
    pd.testing.assert_frame_equal(table, full(warehouse))


def test_a_run_id_on_two_days_counts_once_per_day(warehouse: Warehouse, tmp_path: Path):
    """The documented difference: the full computation keeps the earlier; the ledger both."""
    runs = run_rows(np.random.default_rng(6), range(2), agents=1, per_day=2)
    runs.loc[3, "run_id"] = runs.loc[0, "run_id"]  # day 2 repeats a run id of day 1
    write_days(warehouse, names.TELEMETRY, runs)
    table, _ = ledger.ledger_agent_stats(tmp_path / "l", warehouse)
    assert table.loc["a0", "runs"] == 4
    assert full(warehouse).loc["a0", "runs"] == 3
    # a run id twice within a day counts once, as in the full computation
    runs.loc[3, "run_id"] = runs.loc[2, "run_id"]
    write_days(warehouse, names.TELEMETRY, runs)
    table, _ = ledger.ledger_agent_stats(tmp_path / "l", warehouse)
    assert_same(table, full(warehouse))


# ------------------------------------------------------------------------------------ drawdown
def _reference_drawdown(x: list[float]) -> float:
    cum = np.cumsum(x)
    return float((np.maximum.accumulate(np.maximum(cum, 0.0)) - cum).max()) if x else 0.0


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        ([[100, -50], [-80, 20]], 130.0),  # the rules' example split across two days
        ([[-10], [-20], [5]], 30.0),  # below the flat start at once: the peak is 0, not the first trade
        ([[50], [-20, 60], [-100]], 100.0),  # the peak is in the second day
        ([[10, 10], [10]], 0.0),
        ([[0.0], [-0.0, 0.0]], 0.0),
    ],
)
def test_drawdown_composition_hand_computed(segments, expected):
    flat = [v for segment in segments for v in segment]
    assert _reference_drawdown(flat) == expected
    summaries = [
        ledger.segment_drawdown(np.asarray(s, dtype=float), np.zeros(len(s), dtype=np.int64), 1)
        for s in segments
    ]
    folded = ledger.compose_drawdown(
        np.zeros(len(segments), dtype=np.int64),
        1,
        *(
            np.concatenate([s[c] for s in summaries])
            for c in ("dd_total", "dd_top", "dd_bottom", "dd_within")
        ),
    )
    assert folded["dd_within"][0] == expected
    assert folded["dd_total"][0] == sum(flat)
    # and it is the portfolio's own definition (peak floored at 0)
    x = np.asarray(flat, dtype=float)
    assert portfolio._group_max_drawdown(x, np.zeros(len(x), dtype=np.int64), 1)[0] == expected


@given(st.lists(st.lists(st.integers(-50, 50), min_size=1, max_size=6), min_size=1, max_size=6))
def test_drawdown_composition_any_split(segments):
    flat = [float(v) for segment in segments for v in segment]
    summaries = [
        ledger.segment_drawdown(np.asarray(s, dtype=float), np.zeros(len(s), dtype=np.int64), 1)
        for s in segments
    ]
    folded = ledger.compose_drawdown(
        np.zeros(len(segments), dtype=np.int64),
        1,
        *(
            np.concatenate([s[c] for s in summaries])
            for c in ("dd_total", "dd_top", "dd_bottom", "dd_within")
        ),
    )
    assert folded["dd_within"][0] == _reference_drawdown(flat)  # integers: exact
    cum = np.cumsum(flat)
    assert folded["dd_top"][0] == max(0.0, cum.max()) and folded["dd_bottom"][0] == min(0.0, cum.min())


# ---------------------------------------------------------------------------- random histories
@st.composite
def histories(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    days = draw(st.integers(1, 9))
    agents = draw(st.integers(1, 4))
    per_day = draw(st.integers(1, 7))
    steps = draw(
        st.lists(
            st.sampled_from(["append", "late", "delete", "rewrite_last", "none"]), min_size=1, max_size=4
        )
    )
    revive_day = draw(st.one_of(st.none(), st.integers(0, days + 2)))
    revive_minute = draw(st.integers(0, 1439))
    window = draw(st.one_of(st.none(), st.integers(0, days + 2)))
    return seed, days, agents, per_day, steps, revive_day, revive_minute, window


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_random_histories_match_the_full_computation(case):
    seed, days, agents, per_day, steps, revive_day, revive_minute, window = case
    rng = np.random.default_rng(seed)
    since = (
        None
        if revive_day is None
        else {"a0": START + pd.Timedelta(days=revive_day) + pd.Timedelta(minutes=revive_minute)}
    )
    start = None if window is None else START + pd.Timedelta(days=window)
    with tempfile.TemporaryDirectory() as tmp:
        warehouse = Warehouse(Path(tmp) / "warehouse")
        directory = Path(tmp) / "ledger"
        write_days(warehouse, names.RECONCILED_TRADES, trade_rows(rng, range(days), agents, per_day))
        write_days(warehouse, names.TELEMETRY, run_rows(rng, range(days), agents + 1, per_day))
        table, _ = ledger.ledger_agent_stats(directory, warehouse)
        assert_same(table, full(warehouse))
        n = days
        for i, step in enumerate(steps):
            keys = warehouse.stored_keys(names.RECONCILED_TRADES)
            if step == "append":
                write_days(
                    warehouse,
                    names.RECONCILED_TRADES,
                    trade_rows(rng, range(n, n + 1), agents, per_day, tag=f"s{i}"),
                )
                write_days(
                    warehouse,
                    names.TELEMETRY,
                    run_rows(rng, range(n, n + 1), agents + 1, per_day, tag=f"s{i}"),
                )
                n += 1
            elif step == "late" and keys:
                key = keys[int(rng.integers(0, len(keys)))]
                old = warehouse.read_partition(names.RECONCILED_TRADES, key)
                extra = trade_rows(
                    rng,
                    range(
                        (pd.Timestamp(key, tz="UTC") - START).days,
                        (pd.Timestamp(key, tz="UTC") - START).days + 1,
                    ),
                    agents,
                    2,
                    tag=f"l{i}",
                )
                warehouse.write_partition(
                    names.RECONCILED_TRADES, key, pd.concat([old, extra], ignore_index=True)
                )
            elif step == "delete" and keys:
                key = keys[int(rng.integers(0, len(keys)))]
                warehouse.partition_path(names.RECONCILED_TRADES, key).unlink()
            elif step == "rewrite_last" and keys:
                old = warehouse.read_partition(names.RECONCILED_TRADES, keys[-1])
                warehouse.write_partition(
                    names.RECONCILED_TRADES, keys[-1], old.iloc[::-1].reset_index(drop=True)
                )
            table, _ = ledger.ledger_agent_stats(directory, warehouse, since=since, start=start)
            assert_same(table, full(warehouse, since=since, start=start))
        table, _ = ledger.ledger_agent_stats(directory, warehouse)
        assert_same(table, full(warehouse))


def test_a_lost_manifest_or_chain_base_rebuilds(warehouse: Warehouse, tmp_path: Path):
    """A crash between the ledger's writes leaves files the manifest does not describe: rebuilt."""
    rng = np.random.default_rng(7)
    directory = tmp_path / "ledger"
    write_days(warehouse, names.RECONCILED_TRADES, trade_rows(rng, range(8)))
    write_days(warehouse, names.TELEMETRY, run_rows(rng, range(8)))
    ledger.ledger_agent_stats(directory, warehouse)
    (directory / "chain_base.parquet").unlink()
    table, report = ledger.ledger_agent_stats(directory, warehouse)
    assert_same(table, full(warehouse))
    assert report.chain_from == "2025-03-01"
    (directory / "manifest.json").unlink()
    table, report = ledger.ledger_agent_stats(directory, warehouse)
    assert_same(table, full(warehouse))
    assert report.checkpoint == {"trades": "rebuilt", "runs": "rebuilt"}


def test_a_damaged_ledger_file_is_rebuilt_from_the_partitions(warehouse: Warehouse, tmp_path: Path):
    """The ledger is a cache: any of its files torn (a damaged disk, a hand edit) makes the next call
    rebuild it from the partitions, with the same table, instead of failing the supervisor."""
    rng = np.random.default_rng(6)
    write_days(warehouse, names.RECONCILED_TRADES, trade_rows(rng, range(8)))
    write_days(warehouse, names.TELEMETRY, run_rows(rng, range(8)))
    directory = tmp_path / "ledger"
    ledger.ledger_agent_stats(directory, warehouse)
    files = sorted(p for p in directory.rglob("*.parquet"))
    assert len(files) > 10
    for path in files:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        table, report = ledger.ledger_agent_stats(directory, warehouse)
        assert_same(table, full(warehouse))
        if report.mode != "ledger":  # a file this call needed: rebuilt, and said so
            assert report.mode.startswith("rebuilt: ") and str(path.name) in report.mode
            assert len(report.trade_days_read) == 8
        ledger.ledger_agent_stats(directory, warehouse)  # whole again for the next file
