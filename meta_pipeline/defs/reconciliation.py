"""``reconciled_trades``: the wiring of the reconciliation (the rules are in
``meta_pipeline/reconcile.py`` and ``meta_pipeline/day_reconciliation.py``)."""

from datetime import date

import dagster as dg
import pandas as pd

from meta_pipeline import export, names
from meta_pipeline.day_reconciliation import BarCache, reconcile_day
from meta_pipeline.defs.environment import SETTINGS
from meta_pipeline.defs.metadata import counts_table, frame_preview, markdown_table, row_count
from meta_pipeline.defs.partitions import REACH_DAYS, daily_partitions
from meta_pipeline.defs.resources import DataRoot, ReconciliationPolicy
from meta_pipeline.reconcile import MATURED, PENDING, UNPRICED


@dg.asset(
    name=names.RECONCILED_TRADES,
    group_name=names.RECONCILIATION_GROUP,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[
        dg.AssetDep(names.SIGNALS),
        dg.AssetDep(
            names.PRICE_BARS,
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=0, end_offset=REACH_DAYS, allow_nonexistent_upstream_partitions=True
            ),
        ),
    ],
    kinds={"parquet", "json"},
    owners=["team:meta-pipeline"],
    description=(
        "Realized PnL per signal and horizon (1 h, 4 h, 24 h), by the signal's UTC date: entry and exit "
        "price from the first bar opening at or after the time, gross and net bps, and a status — "
        "matured, pending (its exit is in the future or its bars are not fetched yet) or unpriced "
        "(with the reason). Every run recomputes its days whole, so re-runs are idempotent and pending "
        "rows mature by themselves; a day whose signals were never materialized is written empty, "
        "marked blocked, and the other days go on. The matured rows of each day are written to "
        "alpha/reconciled/<day>.jsonl."
    ),
)
def reconciled_trades(
    context: dg.AssetExecutionContext, data_root: DataRoot, reconciliation_policy: ReconciliationPolicy
) -> dg.MaterializeResult:
    warehouse = data_root.warehouse
    as_of = pd.Timestamp.now(tz="UTC")
    bar_cache = BarCache(warehouse)
    # compute every day before writing any, so a failure leaves the stored days as they were
    results = [
        reconcile_day(
            warehouse,
            date.fromisoformat(key),
            horizons_hours=SETTINGS.horizons_hours,
            reach_days=REACH_DAYS,
            as_of=as_of,
            round_trip_cost_bps=reconciliation_policy.round_trip_cost_bps,
            max_gap=SETTINGS.max_bar_gap,
            bar_cache=bar_cache,
        )
        for key in context.partition_keys
    ]
    exported = 0
    with data_root.export_lock:
        for result in results:
            key = result.day.isoformat()
            warehouse.write_partition(
                names.RECONCILED_TRADES, key, result.rows, facts={"blocked": result.blocked}
            )
            exported += export.write_day(data_root.reconciled_days_dir, key, result.rows)
    # one log line per run, not per day: every log line is an event-log write
    blocked_days = [f"{r.day}: {r.blocked}" for r in results if r.blocked]
    if blocked_days:
        context.log.warning(f"{len(blocked_days)} day(s) blocked: " + "; ".join(blocked_days[:10]))
    context.log.info(
        f"wrote {exported:,} matured rows to {len(results)} day file(s) in {data_root.reconciled_days_dir}"
    )
    rows = pd.concat([r.rows for r in results], ignore_index=True)
    blocked = pd.DataFrame([{"day": r.day.isoformat(), "reason": r.blocked} for r in results if r.blocked])
    return dg.MaterializeResult(
        metadata={
            **row_count(context.partition_keys, len(rows)),
            **summary_metadata(rows, exported, str(data_root.reconciled_days_dir)),
            # a range run's metadata is shown on each of its days: say it is the run's
            "blocked_days_in_run": len(blocked),
            "blocked_in_run": frame_preview(blocked, 31)
            if len(blocked)
            else markdown_table(blocked, empty="_none_"),
        }
    )


def summary_metadata(rows: pd.DataFrame, exported: int, export_path: str) -> dict:
    status = rows["status"].astype(str)
    matured = rows[status == MATURED]
    horizon = rows["horizon_hours"].map(lambda h: f"{h:g} h")
    per_horizon = (
        matured.assign(horizon=horizon[status == MATURED])
        .groupby("horizon", sort=False)["realized_pnl_bps"]
        .agg(["count", "mean", "median"])
        .round(2)
        .reset_index()
    )
    by_status_horizon = pd.crosstab(horizon, status).reset_index() if len(rows) else pd.DataFrame()
    reasons = rows.loc[status != MATURED, "reason"].astype(str).value_counts()
    return {
        "matured": int((status == MATURED).sum()),
        "pending": int((status == PENDING).sum()),
        "unpriced": int((status == UNPRICED).sum()),
        "matured_share": float(round((status == MATURED).mean(), 4)) if len(rows) else 0.0,
        "rows_by_status_and_horizon": markdown_table(by_status_horizon, empty="_no signals yet_"),
        "pnl_bps_by_horizon": markdown_table(per_horizon, empty="_no matured rows_"),
        "not_matured_reasons": counts_table(reasons, "reason", "rows"),
        "preview": frame_preview(rows.drop(columns=["date"]), 15),
        "exported_lines": exported,
        "day_files": dg.MetadataValue.path(export_path),
    }


@dg.asset(
    name=names.RECONCILED_EXPORT,
    group_name=names.EXPORTS_GROUP,
    deps=[dg.AssetDep(names.RECONCILED_TRADES)],
    kinds={"json"},
    owners=["team:meta-pipeline"],
    description=(
        "alpha/reconciled.jsonl, the file the app reads: every matured (signal, horizon) once, sorted "
        "by time, replaced atomically. Built by copying the per-day files alpha/reconciled/<day>.jsonl "
        "in day order (never parsed), so it costs a file copy, not a recomputation. Refreshed hourly "
        "by its schedule, after backfills, and by the command-line runs."
    ),
)
def reconciled_export(context: dg.AssetExecutionContext, data_root: DataRoot) -> dg.MaterializeResult:
    with data_root.export_lock:
        days, lines, size = export.refresh_full_export(
            data_root.warehouse, data_root.reconciled_days_dir, data_root.reconciled_file
        )
    context.log.info(f"{data_root.reconciled_file}: {lines:,} lines from {days} day file(s), {size:,} bytes")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": lines,
            "days": days,
            "bytes": size,
            "path": dg.MetadataValue.path(str(data_root.reconciled_file)),
        }
    )
