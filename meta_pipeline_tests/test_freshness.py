"""The freshness check warns when no run has reconciled for more than an hour before the inputs were
last written: the comparison on its own, then the real check in a real run and executed alone (as the
asset's Checks tab executes it) after the input file is touched."""

import json
import os
from pathlib import Path

import dagster as dg

from meta_pipeline import names
from meta_pipeline.definitions import defs
from meta_pipeline.defs.freshness import MAX_LAG_SECONDS, freshness, newest_input, reconciled_is_fresh
from meta_pipeline.defs.resources import DataRoot, IngestionPolicy, PriceSources, ReconciliationPolicy
from meta_pipeline_tests.fake_exchange import MARKET_DATA_DIR
from meta_pipeline_tests.pipeline import ALL_ASSETS

CHECK_KEY = dg.AssetCheckKey(dg.AssetKey(names.RECONCILED_TRADES), names.RECONCILED_FRESH_CHECK)
PIPELINE = [a for a in ALL_ASSETS if a.key != dg.AssetKey(names.RECONCILED_EXPORT)]
HOUR = 3600.0

# ---- the comparison, no Dagster


def test_no_input_file_passes_with_no_input_yet():
    verdict = freshness(None, None, now=1_000_000.0)
    assert verdict.passed and "no input yet" in verdict.description
    assert freshness(5.0, None, now=1_000_000.0).passed


def test_a_reconciliation_more_than_an_hour_older_than_the_last_write_warns():
    t = 1_700_000_000.0
    assert freshness(t, t + 2 * HOUR, now=t + 2 * HOUR).passed is False
    assert "120 min" in freshness(t, t + 2 * HOUR, now=t + 2 * HOUR).description
    assert freshness(t, t + MAX_LAG_SECONDS + 1, now=t + 2 * HOUR).passed is False
    assert freshness(t, t + MAX_LAG_SECONDS, now=t + 2 * HOUR).passed  # exactly an hour: still fresh
    assert freshness(t, t + 59 * 60, now=t + 10 * HOUR).passed  # the data time does not matter
    assert freshness(t + HOUR, t, now=t + 10 * HOUR).passed  # reconciled after the last write


def test_inputs_never_reconciled_get_an_hour_before_a_warning():
    t = 1_700_000_000.0
    assert freshness(None, t, now=t + 30 * 60).passed
    late = freshness(None, t, now=t + 2 * HOUR)
    assert not late.passed and "never reconciled" in late.description


def test_the_newest_of_the_two_input_files_counts(tmp_path):
    assert newest_input([tmp_path / "missing.jsonl"]) is None
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("")
    b.write_text("")
    os.utime(a, (1000, 1000))
    os.utime(b, (2000, 2000))
    assert newest_input([a, b, tmp_path / "missing.jsonl"]) == (b, 2000)


# ---- the real check on a real instance


def _root(path: Path) -> Path:
    (path / "alpha").mkdir(parents=True)
    (path / "telemetry").mkdir(parents=True)
    line = {"ts": "2024-03-05T10:00:00Z", "agent": "a", "run_id": "r1", "symbol": "BTC", "direction": "LONG"}
    (path / names.SIGNALS_FILE).write_text(json.dumps(line) + "\n")
    (path / names.TELEMETRY_FILE).write_text("")
    return path


def _resources(root: Path) -> dict:
    return {
        "data_root": DataRoot(root=str(root)),
        "ingestion_policy": IngestionPolicy(),
        "price_sources": PriceSources(
            sources=["files"],
            binance_base_url="http://127.0.0.1:9",
            coinbase_base_url="http://127.0.0.1:9",
            bars_dir=str(MARKET_DATA_DIR),
        ),
        "reconciliation_policy": ReconciliationPolicy(),
    }


def _check_alone(root: Path, instance: dg.DagsterInstance) -> dg.AssetCheckEvaluation:
    """Execute only the check, as the UI's Execute button on the asset's Checks tab does (the asset
    job, subset to the check and no asset)."""
    local = dg.Definitions(assets=PIPELINE, asset_checks=[reconciled_is_fresh], resources=_resources(root))
    job = local.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(), asset_check_selection={CHECK_KEY}
    )
    result = job.execute_in_process(instance=instance)
    assert result.success
    assert not result.get_asset_materialization_events()  # nothing was materialized
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


def test_the_check_runs_in_the_main_job_and_alone(tmp_path):
    root, instance = _root(tmp_path / "root"), dg.DagsterInstance.ephemeral()

    fresh_root = _check_alone(root, instance)  # inputs written just now, nothing reconciled yet
    assert fresh_root.passed and "not reconciled yet" in fresh_root.description

    result = dg.materialize(
        [*PIPELINE, reconciled_is_fresh],
        resources=_resources(root),
        instance=instance,
        tags={names.RANGE_START_TAG: "2024-03-05", names.RANGE_END_TAG: "2024-03-05"},
    )
    [in_run] = [e for e in result.get_asset_check_evaluations() if e.asset_check_key == CHECK_KEY]
    assert in_run.passed
    assert in_run.severity == dg.AssetCheckSeverity.WARN

    reconciled_at = instance.get_latest_materialization_event(dg.AssetKey(names.RECONCILED_TRADES)).timestamp
    signals_file = root / names.SIGNALS_FILE
    os.utime(signals_file, (reconciled_at + 2 * HOUR, reconciled_at + 2 * HOUR))  # written 2 h later
    stale = _check_alone(root, instance)
    assert not stale.passed and stale.severity == dg.AssetCheckSeverity.WARN
    assert stale.metadata["lag_minutes"].value > 110

    os.utime(signals_file, (reconciled_at + 0.5 * HOUR, reconciled_at + 0.5 * HOUR))  # within the hour
    assert _check_alone(root, instance).passed

    os.utime(
        root / names.TELEMETRY_FILE, (reconciled_at + 3 * HOUR, reconciled_at + 3 * HOUR)
    )  # the other one
    assert not _check_alone(root, instance).passed

    # the latest result is what the asset page shows
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([CHECK_KEY])[CHECK_KEY]
    assert record.event.dagster_event.event_specific_data.passed is False


def test_a_fresh_root_passes_with_no_input_yet(tmp_path):
    evaluation = _check_alone(tmp_path, dg.DagsterInstance.ephemeral())
    assert evaluation.passed and "no input yet" in evaluation.description


def _checks_of(job_name: str) -> set:
    return set(defs.resolve_job_def(job_name).asset_layer.asset_graph.asset_check_keys)


def test_the_check_runs_with_the_jobs_that_reconcile_and_not_elsewhere():
    assert CHECK_KEY in _checks_of(names.MAIN_JOB)  # so every 30-minute tick evaluates it
    assert CHECK_KEY in _checks_of(names.REPROCESS_JOB)
    assert CHECK_KEY not in _checks_of(names.SUPERVISOR_JOB)
    assert CHECK_KEY not in _checks_of(names.EXPORT_JOB)
