"""Incremental ticks give what a full recomputation from scratch gives: appended lines, a late line
for an old day, a half-written last line, a rotated file, a replaced file of the same size, and a
partition rebuilt from scratch — the partitions, the quarantine and the export, each time."""

import json
import os
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from meta_pipeline import names
from meta_pipeline.defs.automation import new_input_lines
from meta_pipeline.defs.ingestion import (
    IngestConfig,
    signal_quarantine,
    signals,
    telemetry,
    telemetry_quarantine,
)
from meta_pipeline.defs.prices import price_bars
from meta_pipeline.defs.reconciliation import reconciled_export, reconciled_trades
from meta_pipeline.defs.resources import DataRoot
from meta_pipeline.storage import Warehouse
from meta_pipeline_tests.pipeline import run_range, test_resources

ASSETS = [
    signals,
    telemetry,
    signal_quarantine,
    telemetry_quarantine,
    price_bars,
    reconciled_trades,
    reconciled_export,
]
FIRST, LAST = "2024-03-01", "2024-03-06"


def _signal(ts: str, run: str, side: str = "LONG") -> bytes:
    return (
        json.dumps({"ts": ts, "agent": "a", "run_id": run, "symbol": "BTC", "direction": side}) + "\n"
    ).encode()


def _run_line(ts: str, run: str) -> bytes:
    return (
        json.dumps({"ts": ts, "agent": "a", "run_id": run, "latency_ms": 500, "errors": 0}) + "\n"
    ).encode()


def _root(path: Path, signal_bytes: bytes = b"", telemetry_bytes: bytes = b"") -> Path:
    (path / "alpha").mkdir(parents=True, exist_ok=True)
    (path / "telemetry").mkdir(parents=True, exist_ok=True)
    (path / names.SIGNALS_FILE).write_bytes(signal_bytes)
    (path / names.TELEMETRY_FILE).write_bytes(telemetry_bytes)
    return path


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


def _run(
    root: Path, fx, first: str = FIRST, last: str = LAST, *, rebuild: bool = False, assets=ASSETS
) -> None:
    config = {"ops": {a: {"config": {"rebuild_from_start": True}} for a in (names.SIGNALS, names.TELEMETRY)}}
    resources = test_resources(root, fx, sources=["binance"])
    assert run_range(
        root, fx, first, last, assets, resources=resources, run_config=config if rebuild else None
    ).success


def _state(root: Path, *, line_numbers: bool = True) -> dict:
    """Everything a run leaves that a person or the app reads, in comparable form."""
    warehouse = Warehouse(root / names.WAREHOUSE_DIR)
    drop = [] if line_numbers else ["line_no"]
    state = {}
    for asset in (names.SIGNALS, names.TELEMETRY, names.RECONCILED_TRADES):
        for key in warehouse.stored_keys(asset):
            frame = warehouse.read_partition(asset, key).drop(columns=drop, errors="ignore")
            state[f"{asset}/{key}"] = frame.astype(str).to_dict("records")
    for asset in (names.SIGNAL_QUARANTINE, names.TELEMETRY_QUARANTINE):
        table = warehouse.read_table(asset)
        columns = ["reason", "raw"] + (["line_no"] if line_numbers else [])
        state[asset] = (
            sorted(map(tuple, table[columns].astype(str).to_numpy().tolist())) if table is not None else []
        )
    export = root / names.RECONCILED_FILE
    state["export"] = (
        [json.loads(line) for line in export.read_text().splitlines()] if export.exists() else None
    )
    return state


def _from_scratch(tmp_path: Path, fx, signal_bytes: bytes, telemetry_bytes: bytes, **state) -> dict:
    scratch = _root(
        tmp_path / f"scratch{len(list(tmp_path.glob('scratch*')))}", signal_bytes, telemetry_bytes
    )
    _run(scratch, fx)
    return _state(scratch, **state)


BASE = _signal("2024-03-01T10:00:00Z", "s1") + _signal("2024-03-02T10:00:00Z", "s2", "SHORT") + b"not json\n"
BASE_RUNS = _run_line("2024-03-01T09:59:00Z", "s1") + _run_line("2024-03-02T09:59:00Z", "s2")


@pytest.fixture
def root(tmp_path, fake_exchange):
    root = _root(tmp_path / "live", BASE, BASE_RUNS)
    _run(root, fake_exchange)
    return root


def test_appended_lines_and_a_late_line_for_an_old_day(root, tmp_path, fake_exchange):
    more = (
        _signal("2024-03-02T12:00:00Z", "s3")
        + _signal("2024-03-03T08:00:00Z", "s4")
        + b'{"ts": 5}\n'
        + _signal("2024-03-01T12:00:00+02:00", "s1")  # s1 again, in a later tick: it counts once
    )
    _append(root / names.SIGNALS_FILE, more)
    _run(root, fake_exchange, "2024-03-02", "2024-03-05")  # a tick over the days the lines touch
    late = _signal("2024-03-01T23:00:00Z", "late")
    _append(root / names.SIGNALS_FILE, late)
    _run(root, fake_exchange, "2024-03-01", "2024-03-03")  # the sensor's run for the late line's day
    assert _state(root) == _from_scratch(tmp_path, fake_exchange, BASE + more + late, BASE_RUNS)


def test_a_crash_after_staging_and_before_saving_the_offset_changes_nothing(
    root, tmp_path, fake_exchange, monkeypatch
):
    from meta_pipeline import staging

    more = _signal("2024-03-02T12:00:00Z", "s3")
    _append(root / names.SIGNALS_FILE, more)
    real = staging.Staging._save_state

    def crash(self, *args):
        raise OSError("disk vanished")

    monkeypatch.setattr(staging.Staging, "_save_state", crash)
    with pytest.raises(OSError, match="disk vanished"):
        _run(root, fake_exchange)  # the rows are staged, the offset is not moved
    monkeypatch.setattr(staging.Staging, "_save_state", real)
    _run(root, fake_exchange)  # the same bytes are read and staged again
    assert _state(root) == _from_scratch(tmp_path, fake_exchange, BASE + more, BASE_RUNS)


def test_a_tick_reads_only_the_appended_bytes(root, fake_exchange, monkeypatch):
    from meta_pipeline import ingest

    seen = []
    real = ingest.ingest_bytes
    monkeypatch.setattr(
        ingest, "ingest_bytes", lambda data, *a, **k: seen.append(data) or real(data, *a, **k)
    )
    new = _signal("2024-03-03T08:00:00Z", "s4")
    _append(root / names.SIGNALS_FILE, new)
    _run(root, fake_exchange, "2024-03-03", "2024-03-03")
    assert seen == [new]  # once per run (not once per asset), and only the new line


def test_a_half_written_last_line_waits_for_its_newline(root, tmp_path, fake_exchange):
    line = _signal("2024-03-03T08:00:00Z", "s4")
    _append(root / names.SIGNALS_FILE, line[:20])
    _run(root, fake_exchange)
    assert "incomplete" not in json.dumps(_state(root)[names.SIGNAL_QUARANTINE])
    _append(root / names.SIGNALS_FILE, line[20:])
    _run(root, fake_exchange)
    assert _state(root) == _from_scratch(tmp_path, fake_exchange, BASE + line, BASE_RUNS)


def test_a_rotated_file_loses_no_line(root, tmp_path, fake_exchange):
    events = root / names.SIGNALS_FILE
    tail = _signal("2024-03-02T20:00:00Z", "tail")  # written just before the rotation
    _append(events, tail)
    os.rename(events, events.with_name("events.jsonl.1"))
    new = _signal("2024-03-03T08:00:00Z", "n1") + _signal("2024-03-04T08:00:00Z", "n2") + b"[1]\n"
    events.write_bytes(new)
    _run(root, fake_exchange)
    expected = _from_scratch(tmp_path, fake_exchange, BASE + tail + new, BASE_RUNS, line_numbers=False)
    assert _state(root, line_numbers=False) == expected

    # rebuilding every day from scratch reads the rotated file too, and gives the same rows
    for path in (root / names.WAREHOUSE_DIR / names.SIGNALS).glob("*.parquet"):
        path.unlink()
    _run(root, fake_exchange, rebuild=True)
    assert _state(root, line_numbers=False) == expected


def test_a_replaced_file_of_the_same_size_is_read_from_its_start(root, tmp_path, fake_exchange):
    events = root / names.SIGNALS_FILE
    replacement = BASE.replace(b"s1", b"r1").replace(b"s2", b"r2")
    assert len(replacement) == len(BASE)
    staged = tmp_path / "new.jsonl"
    staged.write_bytes(replacement)
    os.replace(staged, events)
    _run(root, fake_exchange)
    # nothing read before is lost; the new file's lines are all read
    expected = _from_scratch(tmp_path, fake_exchange, BASE + replacement, BASE_RUNS, line_numbers=False)
    assert _state(root, line_numbers=False) == expected


def test_a_partition_deleted_by_hand_is_rebuilt_from_scratch_with_the_same_rows(root, fake_exchange):
    _append(root / names.SIGNALS_FILE, _signal("2024-03-02T12:00:00Z", "s3"))
    _run(root, fake_exchange)
    before = _state(root)
    for asset in (names.SIGNALS, names.TELEMETRY, names.RECONCILED_TRADES):
        (root / names.WAREHOUSE_DIR / asset / "2024-03-02.parquet").unlink()
    shutil.rmtree(root / names.RECONCILED_DAYS_DIR)
    _run(root, fake_exchange, "2024-03-02", "2024-03-02", rebuild=True)
    assert _state(root) == before


def test_a_cleared_sensor_cursor_resumes_from_what_ingestion_read(root):
    _append(root / names.SIGNALS_FILE, _signal("2024-03-04T08:00:00Z", "s9"))
    with dg.build_sensor_context(cursor=None, resources={"data_root": DataRoot(root=str(root))}) as context:
        result = new_input_lines(context)
    [request] = result.run_requests
    assert request.tags[names.RANGE_START_TAG] == "2024-03-04"


def test_ingest_config_defaults_to_incremental():
    assert IngestConfig().rebuild_from_start is False
    assert pd.Timestamp(FIRST) < pd.Timestamp(LAST)


def test_the_full_export_copies_its_unchanged_prefix_and_equals_a_full_rebuild(
    root, tmp_path, fake_exchange, monkeypatch
):
    from meta_pipeline import export

    target = root / names.RECONCILED_FILE
    warehouse = Warehouse(root / names.WAREHOUSE_DIR)
    days_dir = root / names.RECONCILED_DAYS_DIR
    _append(root / names.SIGNALS_FILE, _signal("2024-03-03T08:00:00Z", "s4"))
    _run(root, fake_exchange, "2024-03-03", "2024-03-05", assets=ASSETS[:-1])  # a tick: 03-03..05 only

    copied = []
    real_copy = export._copy_range
    monkeypatch.setattr(
        export, "_copy_range", lambda src, out, off, n: copied.append((off, n)) or real_copy(src, out, off, n)
    )
    read = []
    real_day_file = export.day_file
    monkeypatch.setattr(export, "day_file", lambda d, k: read.append(k) or real_day_file(d, k))
    export.refresh_full_export(warehouse, days_dir, target)
    # the unchanged days 03-01 and 03-02 came from the previous file in one range
    assert len(copied) == 1 and copied[0][0] == 0
    assert copied[0][1] == sum((days_dir / f"2024-03-0{d}.jsonl").stat().st_size for d in (1, 2))

    incremental = target.read_bytes()
    export.index_path(target).unlink()  # no index: everything from the day files
    export.refresh_full_export(warehouse, days_dir, target)
    assert target.read_bytes() == incremental

    target.write_bytes(b"edited by hand\n")  # the index no longer describes the file: full rebuild
    export.refresh_full_export(warehouse, days_dir, target)
    assert target.read_bytes() == incremental


def test_runs_at_once_never_lose_or_double_a_row(tmp_path):
    """Writers append while several runs stage and consolidate the same day concurrently."""
    import threading

    from meta_pipeline import staging

    root = _root(tmp_path / "busy")
    warehouse = Warehouse(root / names.WAREHOUSE_DIR)
    events = root / names.SIGNALS_FILE
    append_lock = threading.Lock()
    errors = []

    def run(worker: int) -> None:
        try:
            for i in range(15):
                with append_lock:
                    _append(events, _signal(f"2024-03-01T10:{worker:02d}:{i:02d}Z", f"w{worker}-{i}"))
                staging.stage_new_lines(warehouse, staging.SIGNALS, events)
                staging.consolidate_day(warehouse, staging.SIGNALS, names.SIGNALS, "2024-03-01")
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    staging.stage_new_lines(warehouse, staging.SIGNALS, events)
    staging.consolidate_day(warehouse, staging.SIGNALS, names.SIGNALS, "2024-03-01")
    run_ids = warehouse.read_partition(names.SIGNALS, "2024-03-01")["run_id"].tolist()
    assert sorted(run_ids) == sorted(f"w{w}-{i}" for w in range(4) for i in range(15))
