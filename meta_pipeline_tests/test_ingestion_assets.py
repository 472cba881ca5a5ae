"""The Dagster ingestion assets: definitions load, daily and single-run range materialisations write
one Parquet file per UTC day, re-runs are idempotent, quarantine and its asset check."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from meta_pipeline.defs import ingestion
from meta_pipeline.defs.jobs import main_job
from meta_pipeline.defs.resources import DataRoot, IngestionPolicy
from meta_pipeline.names import INGESTION_GROUP, MAIN_JOB

INGESTION_ASSETS = [
    ingestion.signals,
    ingestion.telemetry,
    ingestion.signal_quarantine,
    ingestion.telemetry_quarantine,
]
INGESTION_KEYS = {
    dg.AssetKey(k) for k in ("signals", "telemetry", "signal_quarantine", "telemetry_quarantine")
}
CHECK = "rejected_share_below_threshold"
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def _signal(run_id: str, ts: str, **extra) -> dict:
    return {
        "ts": ts,
        "agent": extra.pop("agent", "alpha"),
        "run_id": run_id,
        "symbol": extra.pop("symbol", "BTC"),
        "direction": extra.pop("direction", "long"),
        "confidence": 0.6,
        **extra,
    }


def _telemetry(run_id: str, ts: str, **extra) -> dict:
    return {
        "ts": ts,
        "agent": "alpha",
        "run_id": run_id,
        "latency_ms": 900,
        "tokens_in": 1000,
        "tokens_out": 200,
        "errors": 0,
        "cost_usd": 0.01,
        **extra,
    }


SIGNALS = [
    _signal("s1", "2024-03-01T00:00:00Z"),
    _signal("s2", "2024-03-01T23:59:59.999Z", direction="SHORT", model="gpt-x"),
    _signal("s3", "2024-03-02T01:00:00+02:00", symbol="eth-usd"),  # → 2024-03-01 UTC
    _signal("s4", "2024-03-02T00:00Z", agent="beta"),
    _signal("s5", "2024-03-02T12:00:00Z", symbol="SOL/USDC"),
    _signal("s5", "2024-03-02T13:00:00+01:00", symbol="sol-usdt", direction="LONG"),  # duplicate of s5
    _signal("s6", "2024-03-04T08:00:00Z"),
]
SIGNAL_ROWS_PER_DAY = {"2024-03-01": 3, "2024-03-02": 2, "2024-03-03": 0, "2024-03-04": 1}
BAD_SIGNAL_LINES = [b'{"ts": "2024-03-01T10:00:00Z", "agent": "alpha"', b'{"ts": 1709294400, "agent": "a"}']

TELEMETRY = [
    _telemetry("s1", "2024-03-01T00:00:01Z"),
    _telemetry("quiet-1", "2024-03-01T05:00:00Z"),  # a run that emitted no signal
    _telemetry("s4", "2024-03-02T00:00:01Z"),
    _telemetry("s4", "2024-03-02T00:00:01Z"),  # duplicate run_id
    _telemetry("quiet-2", "2024-03-03T09:00:00Z"),
]
TELEMETRY_ROWS_PER_DAY = {"2024-03-01": 2, "2024-03-02": 1, "2024-03-03": 1, "2024-03-04": 0}


def _write_lines(path: Path, lines: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def _dumps(obj: dict) -> bytes:
    return json.dumps(obj).encode()


@pytest.fixture
def root(tmp_path) -> Path:
    signal_lines = [_dumps(s) for s in SIGNALS]
    signal_lines[2:2] = [BAD_SIGNAL_LINES[0], b""]
    signal_lines.append(BAD_SIGNAL_LINES[1])
    _write_lines(tmp_path / "alpha" / "events.jsonl", signal_lines)
    _write_lines(tmp_path / "telemetry" / "events.jsonl", [_dumps(t) for t in TELEMETRY])
    return tmp_path


def _resources(root: Path, max_rejected_share: float = 0.5) -> dict:
    return {
        "data_root": DataRoot(root=str(root)),
        "ingestion_policy": IngestionPolicy(max_rejected_share=max_rejected_share),
    }


def _materialize(
    root: Path, *, partition_key=None, tags=None, instance=None, **policy
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        INGESTION_ASSETS,
        partition_key=partition_key,
        tags=tags,
        resources=_resources(root, **policy),
        instance=instance or dg.DagsterInstance.ephemeral(),
    )


def _run_range(root: Path, start: str, end: str, instance: dg.DagsterInstance, **policy):
    """The operators' job, over the ingestion assets, for a partition range in ONE run."""
    defs = dg.Definitions(assets=INGESTION_ASSETS, jobs=[main_job], resources=_resources(root, **policy))
    return defs.resolve_job_def(MAIN_JOB).execute_in_process(
        instance=instance, tags={RANGE_START: start, RANGE_END: end}
    )


def _partition_files(root: Path, asset: str) -> dict[str, Path]:
    return {p.stem: p for p in sorted((root / "warehouse" / asset).glob("*.parquet"))}


def _materialized_partitions(result, asset: str) -> list:
    return sorted(
        e.event_specific_data.materialization.partition
        for e in result.get_asset_materialization_events()
        if e.event_specific_data.materialization.asset_key == dg.AssetKey(asset)
    )


def _check(result, asset: str) -> dg.AssetCheckEvaluation:
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.asset_key == dg.AssetKey(asset)]
    assert evaluation.check_name == CHECK
    return evaluation


# --------------------------------------------------------------------------- definitions


def test_definitions_load_and_job_resolves():
    from meta_pipeline.definitions import defs

    keys = set(defs.resolve_all_asset_keys())
    assert keys >= INGESTION_KEYS
    job = defs.resolve_job_def(MAIN_JOB)
    assert job.partitions_def is not None
    assert set(job.asset_layer.executable_asset_keys) >= INGESTION_KEYS
    checks = defs.resolve_asset_graph().asset_check_keys
    for asset in ("signal_quarantine", "telemetry_quarantine"):
        assert dg.AssetCheckKey(dg.AssetKey(asset), CHECK) in checks
    for asset in ("signals", "telemetry"):
        spec_def = defs.resolve_assets_def(asset)
        assert spec_def.partitions_def == job.partitions_def
        assert spec_def.backfill_policy == dg.BackfillPolicy.single_run()
        assert spec_def.group_names_by_key[dg.AssetKey(asset)] == INGESTION_GROUP


def test_dagster_definitions_validate(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("META_PIPELINE_")}
    env.update(DAGSTER_HOME=str(home), META_PIPELINE_ROOT=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "meta_pipeline.definitions"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- one day


def test_materialize_one_day(root):
    result = _materialize(root, partition_key="2024-03-02")
    assert result.success

    signals = _partition_files(root, "signals")
    assert list(signals) == ["2024-03-02"], "only the requested partition is written"
    frame = pd.read_parquet(signals["2024-03-02"])
    assert frame["run_id"].tolist() == ["s4", "s5"]
    assert frame["instrument"].tolist() == ["BTCUSDT", "SOLUSDT"]
    assert (frame["date"] == "2024-03-02").all()
    assert str(frame["ts"].dtype).startswith("datetime64") and str(frame["ts"].dt.tz) == "UTC"

    telemetry = _partition_files(root, "telemetry")
    assert list(telemetry) == ["2024-03-02"]
    assert pd.read_parquet(telemetry["2024-03-02"])["run_id"].tolist() == ["s4"]

    assert _materialized_partitions(result, "signals") == ["2024-03-02"]
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.event_specific_data.materialization.asset_key == dg.AssetKey("signals")
    ]
    metadata = event.event_specific_data.materialization.metadata
    assert metadata["dagster/row_count"].value == 2
    # the run parses the file once: whichever of signals / signal_quarantine runs first reads it
    both = [
        e.event_specific_data.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.event_specific_data.materialization.asset_key
        in (dg.AssetKey("signals"), dg.AssetKey("signal_quarantine"))
    ]
    assert sum(m["new_duplicate_lines"].value for m in both) == 1
    assert sum(m["new_lines_rejected"].value for m in both) == len(BAD_SIGNAL_LINES)
    assert sorted(m["new_lines_read"].value for m in both)[0] == 0


def test_day_boundaries_land_in_their_utc_day(root):
    _materialize(root, partition_key="2024-03-01")
    frame = pd.read_parquet(root / "warehouse" / "signals" / "2024-03-01.parquet")
    assert frame["run_id"].tolist() == ["s1", "s3", "s2"], "sorted by ts; 01:00+02:00 is the previous UTC day"
    assert frame["instrument"].tolist() == ["BTCUSDT", "ETHUSDT", "BTCUSDT"]
    assert json.loads(frame.set_index("run_id").loc["s2", "extra"]) == {"model": "gpt-x"}


# --------------------------------------------------------------------------- ranges


def test_range_is_one_run_and_writes_one_file_per_day(root):
    instance = dg.DagsterInstance.ephemeral()
    result = _run_range(root, "2024-03-01", "2024-03-04", instance)
    assert result.success
    assert len(instance.get_runs()) == 1, "a single-run backfill"

    for asset, expected in (("signals", SIGNAL_ROWS_PER_DAY), ("telemetry", TELEMETRY_ROWS_PER_DAY)):
        files = _partition_files(root, asset)
        assert list(files) == list(expected)
        assert {day: len(pd.read_parquet(path)) for day, path in files.items()} == expected
        assert _materialized_partitions(result, asset) == list(expected)

    empty = pd.read_parquet(root / "warehouse" / "signals" / "2024-03-03.parquet")
    full = pd.read_parquet(root / "warehouse" / "signals" / "2024-03-01.parquet")
    assert list(empty.columns) == list(full.columns), "an empty day is an empty table, not a missing file"
    telemetry = pd.read_parquet(root / "warehouse" / "telemetry")
    assert sorted(telemetry["run_id"]) == ["quiet-1", "quiet-2", "s1", "s4"], "runs without signals are kept"


def test_range_via_materialize_tags(root):
    result = _materialize(root, tags={RANGE_START: "2024-03-02", RANGE_END: "2024-03-03"})
    assert result.success
    assert list(_partition_files(root, "signals")) == ["2024-03-02", "2024-03-03"]
    assert list(_partition_files(root, "telemetry")) == ["2024-03-02", "2024-03-03"]


def test_rerun_is_idempotent(root):
    instance = dg.DagsterInstance.ephemeral()
    _run_range(root, "2024-03-01", "2024-03-04", instance)
    warehouse = root / "warehouse"
    first = {p.relative_to(warehouse): p.read_bytes() for p in sorted(warehouse.rglob("*.parquet"))}
    first_frames = {p: pd.read_parquet(warehouse / p) for p in first}

    _run_range(root, "2024-03-01", "2024-03-04", instance)
    _materialize(root, partition_key="2024-03-02", instance=instance)
    second = {p.relative_to(warehouse): p.read_bytes() for p in sorted(warehouse.rglob("*.parquet"))}

    assert list(second) == list(first), "no extra files (temp files are renamed or removed)"
    for path, frame in first_frames.items():
        pd.testing.assert_frame_equal(pd.read_parquet(warehouse / path), frame)
    assert second == first, "identical bytes"
    assert not [p for p in warehouse.rglob("*") if p.name.endswith(".tmp")]


def test_late_line_for_an_old_day_lands_on_rerun(root):
    _run_range(root, "2024-03-01", "2024-03-04", dg.DagsterInstance.ephemeral())
    with open(root / "alpha" / "events.jsonl", "ab") as handle:
        handle.write(_dumps(_signal("late", "2024-03-03T10:00:00Z")) + b"\n")
    _materialize(root, partition_key="2024-03-03")
    assert pd.read_parquet(root / "warehouse" / "signals" / "2024-03-03.parquet")["run_id"].tolist() == [
        "late"
    ]
    assert len(pd.read_parquet(root / "warehouse" / "signals" / "2024-03-01.parquet")) == 3


def test_materialising_does_not_modify_inputs(root):
    inputs = [root / "alpha" / "events.jsonl", root / "telemetry" / "events.jsonl"]
    before = [(p.read_bytes(), p.stat().st_mtime_ns) for p in inputs]
    _run_range(root, "2024-03-01", "2024-03-04", dg.DagsterInstance.ephemeral())
    assert [(p.read_bytes(), p.stat().st_mtime_ns) for p in inputs] == before


def test_missing_input_files_give_empty_partitions(tmp_path):
    result = _materialize(tmp_path, partition_key="2024-03-01")
    assert result.success
    assert len(pd.read_parquet(tmp_path / "warehouse" / "signals" / "2024-03-01.parquet")) == 0
    assert len(pd.read_parquet(tmp_path / "warehouse" / "signal_quarantine.parquet")) == 0
    assert _check(result, "signal_quarantine").passed


@pytest.mark.parametrize("first_run", ["file_without_regime", "no_input_file_yet"])
def test_partitions_written_by_different_runs_read_back_together(tmp_path, first_run):
    """The warehouse docs promise that a person can query ``warehouse/signals/*.parquet`` in place.
    Each run writes its partitions with the dtypes of *that* run's frame: a column that is all null
    in the whole file (``regime`` when no agent sends one yet, or every text column when the file is
    empty/absent) is stored with Parquet type ``null``; a later run writes the same column as
    ``string`` for its day. Reading the directory then fails."""
    if first_run == "file_without_regime":
        _write_lines(tmp_path / "alpha" / "events.jsonl", [_dumps(_signal("a", "2024-03-01T09:00:00Z"))])
    _materialize(tmp_path, partition_key="2024-03-01")
    _write_lines(
        tmp_path / "alpha" / "events.jsonl",
        [
            _dumps(_signal("a", "2024-03-01T09:00:00Z")),
            _dumps(_signal("b", "2024-03-02T09:00:00Z", regime="trend")),
        ],
    )
    _materialize(tmp_path, partition_key="2024-03-02")

    frame = pd.read_parquet(tmp_path / "warehouse" / "signals")
    expected = ["a", "b"] if first_run == "file_without_regime" else ["b"]
    assert sorted(frame["run_id"]) == expected


# --------------------------------------------------------------------------- quarantine + check


def test_quarantine_table_holds_the_bad_lines(root):
    result = _materialize(root, partition_key="2024-03-01")
    quarantine = pd.read_parquet(root / "warehouse" / "signal_quarantine.parquet")
    assert quarantine["line_no"].tolist() == [3, 10]
    assert quarantine["reason"].tolist() == ["invalid_json", "ts_not_iso_string"]
    assert quarantine["raw"].tolist() == [line.decode() for line in BAD_SIGNAL_LINES]
    assert len(pd.read_parquet(root / "warehouse" / "telemetry_quarantine.parquet")) == 0

    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.event_specific_data.materialization.asset_key == dg.AssetKey("signal_quarantine")
    ]
    metadata = event.event_specific_data.materialization.metadata
    assert metadata["dagster/row_count"].value == 2
    assert metadata["blank_lines_in_all"].value == 1
    assert metadata["duplicates_in_all"].value == 1
    assert metadata["rejected_share"].value == pytest.approx(2 / 9)  # 10 lines, 1 blank


def test_asset_check_passes_below_threshold(root):
    result = _materialize(root, partition_key="2024-03-01", max_rejected_share=0.25)
    assert result.success
    evaluation = _check(result, "signal_quarantine")
    assert evaluation.passed
    assert evaluation.metadata["rejected_share"].value == pytest.approx(2 / 9, abs=1e-6)
    assert evaluation.metadata["threshold"].value == 0.25
    assert _check(result, "telemetry_quarantine").passed


def test_asset_check_fails_with_warn_severity_above_threshold(root):
    result = _materialize(root, partition_key="2024-03-01", max_rejected_share=0.2)
    assert result.success, "a WARN check does not fail the run"
    evaluation = _check(result, "signal_quarantine")
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["rejected_lines"].value == 2
    assert _check(result, "telemetry_quarantine").passed, "telemetry has no rejected lines"
