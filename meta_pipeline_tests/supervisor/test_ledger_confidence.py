"""The incremental confidence fold (meta_pipeline/supervisor/ledger_confidence.py) gives exactly the
full fold's state (bit for bit, attrs, confidence.json bytes) while reading only the partitions from
the earliest change on."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meta_pipeline import names
from meta_pipeline.storage import Warehouse
from meta_pipeline.supervisor import history, ledger_confidence
from meta_pipeline.supervisor.confidence import ConfidenceRule, confidence_json, fold_confidence
from meta_pipeline.supervisor.ledger_confidence import ledger_confidence as incremental
from meta_pipeline_tests.supervisor.test_ledger import START, trade_rows, write_days

TRADES = names.RECONCILED_TRADES


def day_key(day: int) -> str:
    return (START + pd.Timedelta(days=day)).strftime("%Y-%m-%d")


def full(warehouse: Warehouse, rule: ConfidenceRule | None = None, since=None) -> pd.DataFrame:
    """The reference: the confidence_state asset's fold over everything stored."""
    return fold_confidence(history.matured_trades(warehouse), rule or ConfidenceRule(), since)


def assert_identical(state: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Same frame to the bit (floats compared as their bit patterns: -0.0 is not 0.0 here), same
    attrs, same confidence.json bytes."""
    pd.testing.assert_frame_equal(state, expected, check_exact=True)
    assert state.index.dtype == expected.index.dtype
    for column in expected.columns:
        if expected[column].dtype == np.float64:
            np.testing.assert_array_equal(
                state[column].to_numpy().view(np.int64), expected[column].to_numpy().view(np.int64), column
            )
    assert state.attrs == expected.attrs
    dump = json.dumps(confidence_json(state), sort_keys=True).encode()
    assert dump == json.dumps(confidence_json(expected), sort_keys=True).encode()


def add_late_trade(warehouse: Warehouse, key: str, *, run_id: str = "late", net: float = -400.0) -> None:
    old = warehouse.read_partition(TRADES, key)
    late = old.iloc[:1].assign(
        run_id=run_id,
        ts=pd.Timestamp(key, tz="UTC") + pd.Timedelta(minutes=1),
        net_pnl_bps=net,
        status="matured",
        horizon_hours=24,
    )
    warehouse.write_partition(TRADES, key, pd.concat([old, late], ignore_index=True))


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path / "warehouse")


# ------------------------------------------------------------------------------------------ ticks
def test_build_then_each_kind_of_change_matches_the_full_fold(warehouse: Warehouse, tmp_path: Path):
    rng = np.random.default_rng(1)
    directory = tmp_path / "ledger"
    write_days(warehouse, TRADES, trade_rows(rng, range(12), agents=5, per_day=8))

    state, report = incremental(directory, warehouse, checkpoint_days=3)
    assert_identical(state, full(warehouse))
    assert report.mode == "rebuilt: no ledger yet" and len(report.days_read) == 12

    # nothing changed: no partition read, a checkpoint and at most 2 day files
    state, report = incremental(directory, warehouse, checkpoint_days=3)
    assert_identical(state, full(warehouse))
    assert report.mode == "ledger" and report.days_read == [] and report.days_reused == 12
    assert report.snapshot_files_read <= 3

    # an appended day: only it is read
    write_days(warehouse, TRADES, trade_rows(rng, range(12, 13), agents=5, per_day=8, tag="n"))
    state, report = incremental(directory, warehouse, checkpoint_days=3)
    assert_identical(state, full(warehouse))
    assert report.changed_days == [day_key(12)] and report.days_read == [day_key(12)]
    assert report.resumed_from == day_key(12) and report.day_files_written == 1

    # a late trade in an old day: resumed from the state through that day, the days from it read
    add_late_trade(warehouse, day_key(4))
    state, report = incremental(directory, warehouse, checkpoint_days=3)
    assert_identical(state, full(warehouse))
    assert report.resumed_from == day_key(4)
    assert report.days_read == [day_key(d) for d in range(4, 13)]
    assert report.snapshot_files_read <= 3  # a checkpoint and the day files after it

    # a deleted day: the days after it are read
    warehouse.partition_path(TRADES, day_key(8)).unlink()
    state, report = incremental(directory, warehouse, checkpoint_days=3)
    assert_identical(state, full(warehouse))
    assert report.changed_days == [day_key(8)] and report.resumed_from == day_key(8)
    assert report.days_read == [day_key(d) for d in range(9, 13)]

    # the last day rewritten (trades maturing): only it
    last = warehouse.read_partition(TRADES, day_key(12))
    warehouse.write_partition(TRADES, day_key(12), last.assign(net_pnl_bps=last["net_pnl_bps"] - 30))
    state, report = incremental(directory, warehouse, checkpoint_days=3)
    assert_identical(state, full(warehouse))
    assert report.days_read == [day_key(12)]

    # the last day deleted: nothing to read, the state through the day before
    warehouse.partition_path(TRADES, day_key(12)).unlink()
    state, report = incremental(directory, warehouse, checkpoint_days=3)
    assert_identical(state, full(warehouse))
    assert report.days_read == []


def test_every_stored_snapshot_is_the_fold_through_its_day(warehouse: Warehouse, tmp_path: Path):
    """The day files and checkpoints are what ``fold_confidence(through_day=E)`` gives for each E."""
    rng = np.random.default_rng(2)
    write_days(warehouse, TRADES, trade_rows(rng, range(10), agents=4, per_day=5))
    add_late_trade(warehouse, day_key(3))
    incremental(tmp_path / "l", warehouse, checkpoint_days=4)
    add_late_trade(warehouse, day_key(6), run_id="late2", net=90.0)
    incremental(tmp_path / "l", warehouse, checkpoint_days=4)  # the snapshots from day 6 rewritten
    trades = history.matured_trades(warehouse)
    manifest = json.loads((tmp_path / "l" / "confidence" / "manifest.json").read_text())
    assert manifest["checkpoints"] and manifest["trusted_through"] is None
    store = ledger_confidence._Store(
        tmp_path / "l", ConfidenceRule(), ledger_confidence.ConfidenceLedgerReport()
    )
    first = ledger_confidence._day(manifest["days"][0])
    for day in range(first, ledger_confidence._day(manifest["days"][-1]) + 1):
        stored = ledger_confidence._to_state(
            store.state_through(day, manifest["days"], manifest["checkpoints"]), ConfidenceRule()
        )
        expected = fold_confidence(trades, through_day=pd.Timestamp(day * 86_400 * 10**9, tz="UTC"))
        expected.attrs = stored.attrs = {}
        pd.testing.assert_frame_equal(stored, expected, check_exact=True)


def test_empty_warehouse_then_the_first_days(warehouse: Warehouse, tmp_path: Path):
    state, report = incremental(tmp_path / "l", warehouse)
    assert_identical(state, full(warehouse))
    assert state.empty and report.days_read == [] and state.attrs["folded_through"] is None
    state, report = incremental(tmp_path / "l", warehouse)
    assert_identical(state, full(warehouse))
    # a day with pending rows only: no matured trade, still nothing folded
    rows = trade_rows(np.random.default_rng(3), range(1)).assign(status="pending")
    write_days(warehouse, TRADES, rows)
    state, report = incremental(tmp_path / "l", warehouse)
    assert_identical(state, full(warehouse))
    assert state.empty and report.days_read == [day_key(0)]
    write_days(warehouse, TRADES, trade_rows(np.random.default_rng(4), range(1, 3), tag="x"))
    state, report = incremental(tmp_path / "l", warehouse)
    assert_identical(state, full(warehouse))
    assert report.days_read == [day_key(1), day_key(2)]


# ---------------------------------------------------------------------------- lost or damaged
@pytest.mark.parametrize(
    "damage", ["manifest lost", "manifest corrupt", "ledger files corrupt", "checkpoint lost", "ledger lost"]
)
def test_a_lost_or_corrupt_ledger_is_rebuilt(warehouse: Warehouse, tmp_path: Path, damage: str):
    rng = np.random.default_rng(5)
    directory = tmp_path / "ledger"
    write_days(warehouse, TRADES, trade_rows(rng, range(9)))
    incremental(directory, warehouse, checkpoint_days=3)
    folder = directory / "confidence"
    if damage == "manifest lost":
        (folder / "manifest.json").unlink()
    elif damage == "manifest corrupt":
        (folder / "manifest.json").write_text('{"version": 1, "sour')
    elif damage == "ledger files corrupt":
        for path in folder.rglob("*.parquet"):
            path.write_bytes(b"not parquet")
    elif damage == "checkpoint lost":
        for path in (folder / "checkpoints").glob("*.parquet"):
            path.unlink()
    else:
        for path in sorted(folder.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
    add_late_trade(warehouse, day_key(5))  # a resume needs the snapshot through day 5
    state, report = incremental(directory, warehouse, checkpoint_days=3)
    assert_identical(state, full(warehouse))
    assert report.mode.startswith("rebuilt:") and len(report.days_read) == 9
    # and the rebuilt ledger serves the next tick
    add_late_trade(warehouse, day_key(7), run_id="late7")
    state, report = incremental(directory, warehouse, checkpoint_days=3)
    assert_identical(state, full(warehouse))
    assert report.mode == "ledger" and report.days_read == [day_key(7), day_key(8)]


def test_a_crash_between_the_writes_is_redone(warehouse: Warehouse, tmp_path: Path, monkeypatch):
    rng = np.random.default_rng(6)
    directory = tmp_path / "ledger"
    write_days(warehouse, TRADES, trade_rows(rng, range(10)))
    incremental(directory, warehouse, checkpoint_days=2)
    add_late_trade(warehouse, day_key(3))
    real_write = ledger_confidence._Store.write
    calls = {"n": 0}

    def dying_write(self, kind, key, table):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk gone")
        real_write(self, kind, key, table)

    monkeypatch.setattr(ledger_confidence._Store, "write", dying_write)
    with pytest.raises(OSError, match="disk gone"):
        incremental(directory, warehouse, checkpoint_days=2)
    monkeypatch.setattr(ledger_confidence._Store, "write", real_write)
    # the files after day 3 are half rewritten; the manifest says not to trust them
    add_late_trade(warehouse, day_key(8), run_id="late8")
    state, report = incremental(directory, warehouse, checkpoint_days=2)
    assert_identical(state, full(warehouse))
    assert report.mode == "ledger" and report.resumed_from == day_key(3)


def test_a_partition_off_its_day_falls_back_to_the_full_fold(warehouse: Warehouse, tmp_path: Path):
    rng = np.random.default_rng(7)
    write_days(warehouse, TRADES, trade_rows(rng, range(4)))
    incremental(tmp_path / "l", warehouse)
    stray = warehouse.read_partition(TRADES, day_key(2))
    warehouse.write_partition(TRADES, day_key(1), stray)  # rows of another day
    state, report = incremental(tmp_path / "l", warehouse)
    assert report.mode.startswith("full:")
    assert_identical(state, full(warehouse))


def test_another_rule_or_horizon(warehouse: Warehouse, tmp_path: Path):
    rng = np.random.default_rng(8)
    write_days(warehouse, TRADES, trade_rows(rng, range(6)))
    incremental(tmp_path / "l", warehouse)
    rule = ConfidenceRule(recent_trades=3, gain_above_bps=20.0)
    state, report = incremental(tmp_path / "l", warehouse, rule=rule)
    assert_identical(state, full(warehouse, rule))
    assert report.mode == "rebuilt: manifest of another rule"
    state, report = incremental(tmp_path / "l", warehouse, rule=ConfidenceRule(horizon_hours=4))
    assert report.mode.startswith("full:")
    trades = history.matured_trades(warehouse, horizon_hours=4)
    assert_identical(state, fold_confidence(trades, ConfidenceRule(horizon_hours=4)))
    with pytest.raises(ValueError, match="checkpoint_days"):
        incremental(tmp_path / "l", warehouse, checkpoint_days=0)


def test_revives(warehouse: Warehouse, tmp_path: Path):
    rng = np.random.default_rng(9)
    directory = tmp_path / "l"
    write_days(warehouse, TRADES, trade_rows(rng, range(12)))
    incremental(directory, warehouse)
    first = {"a1": START + pd.Timedelta(days=6, hours=13)}
    state, report = incremental(directory, warehouse, since=first)
    assert_identical(state, full(warehouse, since=first))
    assert report.mode.startswith("rebuilt:")  # a first revive: the agent's early rows change
    moved = {"a1": START + pd.Timedelta(days=9, hours=2)}
    state, report = incremental(directory, warehouse, since=moved)
    assert_identical(state, full(warehouse, since=moved))
    assert report.mode == "ledger" and report.resumed_from == day_key(6)  # day(min(old, new))
    state, report = incremental(directory, warehouse, since=moved)
    assert report.days_read == []
    assert_identical(state, full(warehouse, since=moved))
    state, report = incremental(directory, warehouse, since={"a1": None})  # None: no revive
    assert_identical(state, full(warehouse))
    assert report.mode.startswith("rebuilt:")


# ---------------------------------------------------------------------------- random histories
@st.composite
def histories(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    days = draw(st.integers(0, 8))
    agents = draw(st.integers(1, 4))
    per_day = draw(st.integers(1, 6))
    every = draw(st.integers(1, 5))
    kinds = ["append", "late", "delete", "rewrite_last", "revive", "none", "add_old"]
    steps = draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=5))
    return seed, days, agents, per_day, every, steps


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_random_histories_with_random_changes_match_the_full_fold(case):
    seed, days, agents, per_day, every, steps = case
    rng = np.random.default_rng(seed)
    since = None
    with tempfile.TemporaryDirectory() as tmp:
        warehouse = Warehouse(Path(tmp) / "warehouse")
        directory = Path(tmp) / "ledger"
        if days:
            write_days(warehouse, TRADES, trade_rows(rng, range(days), agents, per_day))
        state, _ = incremental(directory, warehouse, checkpoint_days=every)
        assert_identical(state, full(warehouse))
        n = days
        for i, step in enumerate(steps):
            keys = warehouse.stored_keys(TRADES)
            before = {k: warehouse.partition_path(TRADES, k).stat().st_mtime_ns for k in keys}
            old_since = since
            if step == "append":
                write_days(warehouse, TRADES, trade_rows(rng, range(n, n + 1), agents, per_day, tag=f"s{i}"))
                n += 1
            elif step == "add_old":  # a backfilled day before everything
                write_days(
                    warehouse, TRADES, trade_rows(rng, range(-1 - i, -i), agents, per_day, tag=f"o{i}")
                )
            elif step == "late" and keys:
                key = keys[int(rng.integers(0, len(keys)))]
                offset = (pd.Timestamp(key, tz="UTC") - START).days
                extra = trade_rows(rng, range(offset, offset + 1), agents, 2, tag=f"l{i}")
                old = warehouse.read_partition(TRADES, key)
                warehouse.write_partition(TRADES, key, pd.concat([old, extra], ignore_index=True))
            elif step == "delete" and keys:
                warehouse.partition_path(TRADES, keys[int(rng.integers(0, len(keys)))]).unlink()
            elif step == "rewrite_last" and keys:
                old = warehouse.read_partition(TRADES, keys[-1])
                warehouse.write_partition(TRADES, keys[-1], old.assign(net_pnl_bps=old["net_pnl_bps"] * -1.0))
            elif step == "revive":
                since = {"a0": START + pd.Timedelta(minutes=int(rng.integers(0, (n + 1) * 1440)))}
            state, report = incremental(directory, warehouse, since=since, checkpoint_days=every)
            assert_identical(state, full(warehouse, since=since))
            now = warehouse.stored_keys(TRADES)
            if report.mode == "ledger" and old_since == since:
                # only the partitions from the earliest change on were read
                changed = sorted(
                    set(now) ^ set(keys)
                    | {
                        k
                        for k in now
                        if k in before and warehouse.partition_path(TRADES, k).stat().st_mtime_ns != before[k]
                    }
                )
                assert report.changed_days == changed
                assert report.days_read == ([k for k in now if k >= changed[0]] if changed else [])
        state, _ = incremental(directory, warehouse, since=since, checkpoint_days=every)
        assert_identical(state, full(warehouse, since=since))


def test_the_report_as_metadata():
    report = ledger_confidence.ConfidenceLedgerReport(days_read=["2025-03-01"], changed_days=["2025-03-01"])
    meta = report.as_metadata()
    assert meta["days_read"] == 1 and meta["resumed_from"] == "start" and json.dumps(meta)
    assert asdict(report)["mode"] == "ledger"
