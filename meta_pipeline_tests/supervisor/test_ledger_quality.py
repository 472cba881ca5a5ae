"""The quality ledger (meta_pipeline/supervisor/ledger_quality.py) gives history.input_quality of the
full history while reading only the reconciled_trades and telemetry days that changed."""

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
from meta_pipeline.supervisor import history
from meta_pipeline.supervisor import ledger_quality as lq
from meta_pipeline_tests.supervisor.test_ledger import START, write_days

INSTRUMENTS = np.array(["BTCUSDT", "ETHUSDT"], dtype=object)


# ------------------------------------------------------------------------------------ warehouses
def fleet_days(
    rng: np.random.Generator, days: range, runs_per_day: int = 6, *, tag: str = ""
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reconciled_trades rows, telemetry rows) of runs whose ids match across the two.

    A run starts at a random second of its day, a third of them within two minutes of midnight; its
    telemetry line has the run's time, its 1 to 3 signals follow within 3 minutes (so a run's
    trades and its telemetry straddle midnight: neighbouring partitions), each signal with rows at
    1, 4 and 24 h (matured, unpriced or pending). Some runs have no telemetry, some an unreadable
    ``errors``, some a second line on the next day (the first one counts), some a repeated line
    within the day."""
    trades, runs = [], []
    for day in days:
        base = START + pd.Timedelta(days=day)
        for j in range(runs_per_day):
            run_id = f"{tag}r{day}-{j}"
            near_midnight = rng.random() < 0.35
            second = 86_400 - int(rng.integers(1, 120)) if near_midnight else int(rng.integers(0, 86_400))
            t = base + pd.Timedelta(seconds=second)
            errors = float(rng.integers(0, 2)) if rng.random() < 0.8 else np.nan
            kind = rng.random()
            if kind > 0.1:  # else: no telemetry at all
                line = {"agent": "a0", "run_id": run_id, "ts": t, "latency_ms": 100.0, "errors": errors}
                runs.append(line)
                if kind > 0.85:  # written again the next day (later ts: the first line counts)
                    runs.append({**line, "ts": t + pd.Timedelta(days=1), "errors": 0.0})
                elif kind > 0.75:  # written twice in the day
                    runs.append({**line, "errors": np.nan if np.isnan(errors) else errors + 1})
            for k in range(int(rng.integers(1, 4))):
                ts = t + pd.Timedelta(seconds=int(rng.integers(0, 180)))
                for horizon in (1, 4, 24):
                    u = rng.random()
                    status = "matured" if u < 0.75 else ("unpriced" if u < 0.85 else "pending")
                    pnl = float(rng.integers(-4, 5)) * 10.0 if status == "matured" else np.nan
                    trades.append(
                        {
                            "ts": ts,
                            "agent": "a0",
                            "run_id": run_id,
                            "instrument": INSTRUMENTS[k % 2],
                            "direction": "LONG",
                            "horizon_hours": horizon,
                            "realized_pnl_bps": pnl,
                            "net_pnl_bps": pnl,
                            "status": status,
                            "regime": "trend",
                            "confidence": 0.5,
                        }
                    )
    columns = ["agent", "run_id", "ts", "latency_ms", "errors"]
    telemetry = pd.DataFrame(runs, columns=columns).assign(cost_usd=0.01, tokens_in=10.0, tokens_out=1.0)
    return pd.DataFrame(trades), telemetry


def write_fleet(warehouse: Warehouse, rng: np.random.Generator, days: range, tag: str = "", **kw) -> None:
    """Merge the new rows into the stored partitions of their days (a run's lines can fall on the
    next day, whose partition may exist)."""
    trades, runs = fleet_days(rng, days, tag=tag, **kw)
    for asset, frame in ((names.RECONCILED_TRADES, trades), (names.TELEMETRY, runs)):
        if frame.empty:  # every run of the day without telemetry
            continue
        for day, part in frame.groupby(frame["ts"].dt.strftime("%Y-%m-%d"), sort=True):
            old = warehouse.read_partition(asset, day)
            merged = part if old is None else pd.concat([old, part], ignore_index=True)
            warehouse.write_partition(asset, day, merged.reset_index(drop=True))


def snapshot(warehouse: Warehouse) -> dict[str, dict[str, int]]:
    """Per asset, each stored partition's mtime (ns)."""
    return {
        asset: {
            k: warehouse.partition_path(asset, k).stat().st_mtime_ns for k in warehouse.stored_keys(asset)
        }
        for asset in (names.RECONCILED_TRADES, names.TELEMETRY)
    }


def written_since(warehouse: Warehouse, snap: dict) -> dict[str, list[str]]:
    """Per asset, the stored partitions written or new since ``snap`` (sorted keys)."""
    now = snapshot(warehouse)
    return {asset: [k for k, t in now[asset].items() if snap[asset].get(k) != t] for asset in now}


def full(warehouse: Warehouse, as_of: pd.Timestamp) -> history.InputQuality:
    return history.input_quality(
        warehouse, history.matured_trades(warehouse), history.telemetry_runs(warehouse), as_of=as_of
    )


def check(directory: Path, warehouse: Warehouse, as_of: pd.Timestamp) -> lq.QualityLedgerReport:
    """Every figure equal to the full computation's (all are counts: exactly)."""
    quality, report = lq.ledger_input_quality(directory, warehouse, as_of=as_of)
    utc = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of  # the ledger reads naive as UTC
    assert quality == full(warehouse, utc)
    return report


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path / "warehouse")


AS_OF = pd.Timestamp("2025-03-20", tz="UTC")


# ------------------------------------------------------------------------------------------ ticks
def test_ticks_read_only_the_changed_days(warehouse: Warehouse, tmp_path: Path):
    rng = np.random.default_rng(21)
    directory = tmp_path / "ledger"
    write_fleet(warehouse, rng, range(8))
    trade_keys = warehouse.stored_keys(names.RECONCILED_TRADES)
    run_keys = warehouse.stored_keys(names.TELEMETRY)

    report = check(directory, warehouse, AS_OF)
    assert report.trade_days_read == trade_keys and report.run_days_read == run_keys
    quality, _ = lq.ledger_input_quality(directory, warehouse, as_of=AS_OF)
    assert 0 < quality.covered_runs < quality.traded_runs  # the data exercise coverage both ways

    # nothing changed; a later as_of only moves pending rows into due: nothing read
    for as_of in (AS_OF, pd.Timestamp("2025-03-09T12:00", tz="UTC"), pd.Timestamp("2025-03-08T00:30")):
        report = check(directory, warehouse, as_of)
        assert report.trade_days_read == [] and report.run_days_read == [] and report.summary_files_read == 0

    # an appended day (its late-evening runs spill into the next day's partitions)
    snap = snapshot(warehouse)
    write_fleet(warehouse, rng, range(8, 9), tag="n")
    report = check(directory, warehouse, AS_OF)
    written = written_since(warehouse, snap)
    assert "2025-03-09" in written[names.RECONCILED_TRADES]
    assert report.trade_days_read == written[names.RECONCILED_TRADES]
    assert report.run_days_read == written[names.TELEMETRY]
    assert all(day >= "2025-03-08" for day in report.coverage_days)

    # a late row in an old trade day
    old = warehouse.read_partition(names.RECONCILED_TRADES, "2025-03-04")
    late = old.iloc[:1].assign(run_id="late", status="matured", horizon_hours=24)
    warehouse.write_partition(
        names.RECONCILED_TRADES, "2025-03-04", pd.concat([old, late], ignore_index=True)
    )
    report = check(directory, warehouse, AS_OF)
    assert report.trade_days_read == ["2025-03-04"] and report.run_days_read == []
    assert report.coverage_days == ["2025-03-04", "2025-03-05"]  # the day and the next one's home test

    # a changed telemetry day: every line of 2025-03-06 made unreadable, then dropped
    runs = warehouse.read_partition(names.TELEMETRY, "2025-03-06")
    warehouse.write_partition(names.TELEMETRY, "2025-03-06", runs.assign(errors=np.nan))
    report = check(directory, warehouse, AS_OF)
    assert report.trade_days_read == [] and report.run_days_read == ["2025-03-06"]
    assert report.coverage_days == ["2025-03-05", "2025-03-06", "2025-03-07"]
    warehouse.partition_path(names.TELEMETRY, "2025-03-06").unlink()
    report = check(directory, warehouse, AS_OF)
    assert report.trade_days_read == [] and report.run_days_read == []

    # a deleted trade day
    warehouse.partition_path(names.RECONCILED_TRADES, "2025-03-02").unlink()
    report = check(directory, warehouse, AS_OF)
    assert report.trade_days_read == [] and report.run_days_read == []
    assert report.coverage_days == ["2025-03-03"]


def test_pending_rows_become_due_exactly_at_their_horizon(warehouse: Warehouse, tmp_path: Path):
    rows = pd.DataFrame(
        {
            "ts": pd.to_datetime(["2025-03-01T10:00", "2025-03-01T10:00", "2025-03-01T23:00"], utc=True),
            "agent": "a0",
            "run_id": ["r1", "r2", "r3"],
            "instrument": "BTCUSDT",
            "direction": "LONG",
            "horizon_hours": [1.0, 24.0, np.nan],
            "realized_pnl_bps": np.nan,
            "net_pnl_bps": np.nan,
            "status": "pending",
            "regime": None,
            "confidence": 0.5,
        }
    )
    write_days(warehouse, names.RECONCILED_TRADES, rows)
    directory = tmp_path / "l"
    for as_of, due in (
        ("2025-03-01T10:59:59.999999999", 0),
        ("2025-03-01T11:00", 1),  # end ≤ as_of: due at the end itself
        ("2025-03-02T09:59", 1),
        ("2025-03-02T10:00", 2),
        ("2030-01-01", 2),  # a row without a horizon is never due
    ):
        quality, report = lq.ledger_input_quality(directory, warehouse, as_of=pd.Timestamp(as_of, tz="UTC"))
        assert quality.due_rows == due and quality == full(warehouse, pd.Timestamp(as_of, tz="UTC"))
    assert report.trade_days_read == []


def test_coverage_across_midnight(warehouse: Warehouse, tmp_path: Path):
    """A run's telemetry on one day, its trade on the next, and the first of two lines decides."""
    trade = {
        "agent": "a0",
        "instrument": "BTCUSDT",
        "direction": "LONG",
        "horizon_hours": 24,
        "realized_pnl_bps": 5.0,
        "net_pnl_bps": 5.0,
        "status": "matured",
        "regime": None,
        "confidence": 0.5,
    }
    trades = pd.DataFrame(
        [
            {**trade, "run_id": "x", "ts": pd.Timestamp("2025-03-02T00:00:30", tz="UTC")},
            {**trade, "run_id": "y", "ts": pd.Timestamp("2025-03-01T23:59:50", tz="UTC")},
            {**trade, "run_id": "y", "ts": pd.Timestamp("2025-03-02T00:00:10", tz="UTC")},  # y on 2 days
            {**trade, "run_id": "z", "ts": pd.Timestamp("2025-03-02T12:00", tz="UTC")},
        ]
    )
    line = {"agent": "a0", "latency_ms": 1.0, "cost_usd": 0.0, "tokens_in": 1.0, "tokens_out": 1.0}
    runs = pd.DataFrame(
        [
            {**line, "run_id": "x", "ts": pd.Timestamp("2025-03-01T23:59:59", tz="UTC"), "errors": 0.0},
            {**line, "run_id": "y", "ts": pd.Timestamp("2025-03-01T23:59:40", tz="UTC"), "errors": 1.0},
            # z: first line unreadable, a readable repeat on the next day does not count
            {**line, "run_id": "z", "ts": pd.Timestamp("2025-03-02T11:59", tz="UTC"), "errors": np.nan},
            {**line, "run_id": "z", "ts": pd.Timestamp("2025-03-03T01:00", tz="UTC"), "errors": 0.0},
        ]
    )
    write_days(warehouse, names.RECONCILED_TRADES, trades)
    write_days(warehouse, names.TELEMETRY, runs)
    quality, _ = lq.ledger_input_quality(tmp_path / "l", warehouse, as_of=AS_OF)
    assert (quality.traded_runs, quality.covered_runs, quality.telemetry_runs) == (3, 2, 3)
    assert quality == full(warehouse, AS_OF)


def test_documented_approximations(warehouse: Warehouse, tmp_path: Path):
    """A run id on telemetry days that are not neighbours counts once per block; a telemetry line
    two days from the run's trade is not seen."""
    line = {
        "agent": "a0",
        "latency_ms": 1.0,
        "cost_usd": 0.0,
        "tokens_in": 1.0,
        "tokens_out": 1.0,
        "errors": 0.0,
    }
    runs = pd.DataFrame(
        [
            {**line, "run_id": "w", "ts": pd.Timestamp("2025-03-01T12:00", tz="UTC")},
            {**line, "run_id": "w", "ts": pd.Timestamp("2025-03-03T12:00", tz="UTC")},
        ]
    )
    trade = pd.DataFrame(
        [
            {
                "ts": pd.Timestamp("2025-03-04T12:00", tz="UTC"),
                "agent": "a0",
                "run_id": "w",
                "instrument": "BTCUSDT",
                "direction": "LONG",
                "horizon_hours": 24,
                "realized_pnl_bps": 1.0,
                "net_pnl_bps": 1.0,
                "status": "matured",
                "regime": None,
                "confidence": 0.5,
            }
        ]
    )
    write_days(warehouse, names.TELEMETRY, runs)
    write_days(warehouse, names.RECONCILED_TRADES, trade)
    quality, _ = lq.ledger_input_quality(tmp_path / "l", warehouse, as_of=AS_OF)
    expected = full(warehouse, AS_OF)
    assert quality.telemetry_runs == 2 and expected.telemetry_runs == 1
    # w's line of 2025-03-03 is a neighbour of its trade day: seen, though the full computation
    # keeps the line of 2025-03-01 (readable too here, so the figure agrees)
    assert quality.covered_runs == expected.covered_runs == 1


def test_a_partition_off_its_day_falls_back_to_the_full_computation(warehouse: Warehouse, tmp_path: Path):
    write_fleet(warehouse, np.random.default_rng(22), range(3))
    stray = warehouse.read_partition(names.TELEMETRY, "2025-03-02")
    warehouse.write_partition(names.TELEMETRY, "2025-03-01", stray)
    quality, report = lq.ledger_input_quality(tmp_path / "l", warehouse, as_of=AS_OF)
    assert report.mode.startswith("full:") and quality == full(warehouse, AS_OF)


def test_empty_warehouse(warehouse: Warehouse, tmp_path: Path):
    quality, report = lq.ledger_input_quality(tmp_path / "l", warehouse, as_of=AS_OF)
    assert quality == full(warehouse, AS_OF) and quality.empty and report.trade_days_read == []


def test_a_lost_manifest_rebuilds(warehouse: Warehouse, tmp_path: Path):
    write_fleet(warehouse, np.random.default_rng(23), range(4))
    lq.ledger_input_quality(tmp_path / "l", warehouse, as_of=AS_OF)
    (tmp_path / "l" / "manifest.json").write_text("{", encoding="utf-8")
    report = check(tmp_path / "l", warehouse, AS_OF)
    assert report.trade_days_read == warehouse.stored_keys(names.RECONCILED_TRADES)


# ---------------------------------------------------------------------------- random histories
@st.composite
def histories(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    days = draw(st.integers(1, 7))
    per_day = draw(st.integers(1, 6))
    steps = draw(
        st.lists(
            st.sampled_from(["append", "late", "delete_trades", "delete_runs", "telemetry", "none"]),
            min_size=1,
            max_size=4,
        )
    )
    as_of_hours = draw(st.lists(st.integers(0, 24 * 12), min_size=1, max_size=3))
    return seed, days, per_day, steps, as_of_hours


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_random_histories_match_the_full_computation(case):
    """Runs within a day of midnight, repeats on the next day, deletions: every figure exact, and
    only the partitions that changed are read."""
    seed, days, per_day, steps, as_of_hours = case
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        warehouse = Warehouse(Path(tmp) / "warehouse")
        directory = Path(tmp) / "ledger"
        write_fleet(warehouse, rng, range(days), runs_per_day=per_day)
        check(directory, warehouse, AS_OF)
        n = days
        for i, step in enumerate(steps):
            trade_keys = warehouse.stored_keys(names.RECONCILED_TRADES)
            run_keys = warehouse.stored_keys(names.TELEMETRY)
            snap = snapshot(warehouse)
            if step == "append":
                write_fleet(warehouse, rng, range(n, n + 1), tag=f"s{i}", runs_per_day=per_day)
                n += 1
            elif step == "late" and trade_keys:
                key = trade_keys[int(rng.integers(0, len(trade_keys)))]
                old = warehouse.read_partition(names.RECONCILED_TRADES, key)
                late = old.iloc[:2].assign(run_id=f"late{i}", status="matured", horizon_hours=24)
                warehouse.write_partition(
                    names.RECONCILED_TRADES, key, pd.concat([old, late], ignore_index=True)
                )
            elif step == "delete_trades" and trade_keys:
                key = trade_keys[int(rng.integers(0, len(trade_keys)))]
                warehouse.partition_path(names.RECONCILED_TRADES, key).unlink()
            elif step == "delete_runs" and run_keys:
                key = run_keys[int(rng.integers(0, len(run_keys)))]
                warehouse.partition_path(names.TELEMETRY, key).unlink()
            elif step == "telemetry" and run_keys:
                key = run_keys[int(rng.integers(0, len(run_keys)))]
                old = warehouse.read_partition(names.TELEMETRY, key)
                flipped = old["errors"].where(rng.random(len(old)) < 0.5, np.nan)
                warehouse.write_partition(names.TELEMETRY, key, old.assign(errors=flipped))
            written = written_since(warehouse, snap)
            # the first call reads exactly the partitions written or new since the last one
            report = check(directory, warehouse, START + pd.Timedelta(hours=as_of_hours[0]))
            assert report.trade_days_read == written[names.RECONCILED_TRADES]
            assert report.run_days_read == written[names.TELEMETRY]
            for hours in as_of_hours[1:]:  # another as_of: nothing read
                report = check(directory, warehouse, START + pd.Timedelta(hours=hours))
                assert report.trade_days_read == [] and report.run_days_read == []
        # from scratch, the same figures
        with tempfile.TemporaryDirectory() as other:
            quality, _ = lq.ledger_input_quality(Path(other), warehouse, as_of=AS_OF)
            assert quality == full(warehouse, AS_OF)
