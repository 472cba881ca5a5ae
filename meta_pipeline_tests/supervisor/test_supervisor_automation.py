"""The supervisor follows reconciliation by itself: once per batch of new reconciled days (a
backfill of 30 days is one update), on an instance where most past days were never materialized,
and never past a failed blocking check."""

from __future__ import annotations

import dagster as dg

from meta_pipeline import names
from meta_pipeline.definitions import defs
from meta_pipeline.defs.supervisor import BLOCKING_CHECKS

SUPERVISED = {
    names.CONFIDENCE_STATE,
    names.AGENT_STATS,
    names.AGENT_DECISIONS,
    names.ALLOCATION_WEIGHTS,
    names.PORTFOLIO,
    names.META_REPORT,
}
SELECTION = dg.AssetSelection.groups(names.SUPERVISOR_GROUP)


def reconciled(instance: dg.DagsterInstance, days: list[str]) -> None:
    for day in days:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=names.RECONCILED_TRADES, partition=day)
        )


def tick(instance, cursor=None) -> tuple[set[str], object]:
    """One automation tick: the supervisor assets it requests (each once: unpartitioned)."""
    result = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=SELECTION, cursor=cursor
    )
    requested = {name for name in SUPERVISED if result.get_num_requested(dg.AssetKey(name))}
    assert all(result.get_num_requested(dg.AssetKey(name)) <= 1 for name in SUPERVISED)
    return requested, result.cursor


def test_new_reconciled_days_request_the_supervisor_once():
    instance = dg.DagsterInstance.ephemeral()
    requested, cursor = tick(instance)
    assert requested == set()  # nothing new: nothing to do
    reconciled(instance, ["2025-09-05"])  # 1 of many days: the others were never materialized
    requested, cursor = tick(instance, cursor)
    assert requested == SUPERVISED
    requested, cursor = tick(instance, cursor)
    assert requested == set()  # handled: not requested again on the next tick


def test_a_thirty_day_backfill_is_one_update():
    instance = dg.DagsterInstance.ephemeral()
    _, cursor = tick(instance)
    reconciled(instance, [f"2025-08-{d:02d}" for d in range(1, 31)])
    requested, cursor = tick(instance, cursor)
    assert requested == SUPERVISED
    assert tick(instance, cursor)[0] == set()


def test_decisions_wait_while_a_blocking_check_is_failing():
    instance = dg.DagsterInstance.ephemeral()
    _, cursor = tick(instance)
    # agent_stats was materialized by some run and its coverage check failed there
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=names.AGENT_STATS))
    for name in BLOCKING_CHECKS:
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey(names.AGENT_STATS),
                check_name=name,
                passed=name != "telemetry_coverage",
                severity=dg.AssetCheckSeverity.ERROR,
            )
        )
    requested, cursor = tick(instance, cursor)
    assert names.AGENT_DECISIONS not in requested and names.ALLOCATION_WEIGHTS not in requested
    assert names.AGENT_STATS not in requested  # its own inputs did not change
