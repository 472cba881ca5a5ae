"""``reconciled_trades``: realized PnL per (signal, horizon), partitioned on the signal's UTC date.

Each run recomputes its partitions whole from the stored signals and bars (so re-running is
idempotent and pending rows mature on later runs), then rewrites ``alpha/reconciled.jsonl``.
"""

from datetime import date

import dagster as dg
import pandas as pd

from meta_pipeline import price_store
from meta_pipeline.defs.metadata import counts_table, frame_preview, row_count
from meta_pipeline.defs.partitions import REACH_DAYS, SETTINGS, daily_partitions
from meta_pipeline.defs.resources import DataRoot, ReconciliationPolicy
from meta_pipeline.export import export_reconciled
from meta_pipeline.reconcile import MATURED, PENDING, UNPRICED, reconcile

ASSET = "reconciled_trades"


def reconcile_day(
    data_root: DataRoot,
    day: date,
    policy: ReconciliationPolicy,
    as_of: pd.Timestamp,
    bar_cache: dict[date, pd.DataFrame | None],
) -> pd.DataFrame:
    """Reconcile the stored signals of ``day`` against the stored bars of the days they reach."""
    warehouse = data_root.warehouse
    signals = warehouse.read_partition("signals", day.isoformat())
    if signals is None:
        raise dg.Failure(
            f"signals for {day} are not materialized; materialize `signals` first", allow_retries=False
        )
    days = price_store.window(day, REACH_DAYS)
    for cached in [d for d in bar_cache if d < day]:
        del bar_cache[cached]  # a range run walks forward: older days are not needed again
    for d in days:
        if d not in bar_cache:
            bar_cache[d] = warehouse.read_partition(price_store.ASSET, d.isoformat())
    bars = [b for b in (bar_cache[d] for d in days) if b is not None and len(b)]
    sidecars = {d: warehouse.read_sidecar(price_store.ASSET, d.isoformat()) for d in days}
    cover = price_store.coverage(sorted(signals["instrument"].astype(str).unique()), days, sidecars)
    rows = reconcile(
        signals,
        pd.concat(bars, ignore_index=True) if bars else None,
        SETTINGS.horizons_hours,
        as_of=as_of,
        known_until=cover.known_until,
        unpriceable=cover.unpriceable,
        round_trip_cost_bps=policy.round_trip_cost_bps,
        max_gap=pd.Timedelta(minutes=policy.max_bar_gap_minutes),
    )
    return explain_blocked(rows, cover, as_of)


def explain_blocked(rows: pd.DataFrame, cover: price_store.Coverage, as_of: pd.Timestamp) -> pd.DataFrame:
    """A row still pending although its horizon has passed is waiting on missing or failed bars:
    say which. A source failure makes it ``unpriced`` (recomputed, so it heals on a later run)."""
    if not cover.blocked or rows.empty:
        return rows
    due = rows["ts"] + pd.to_timedelta(rows["horizon_hours"], unit="h") <= as_of
    status = rows["status"].astype(str)
    reason = rows["reason"].astype(object)
    for instrument, (_, why) in cover.blocked.items():
        hit = (status == PENDING) & due & (rows["instrument"].astype(str) == instrument)
        reason[hit] = why
        if why.startswith("price source failure"):
            status[hit] = UNPRICED
    rows["status"] = pd.Categorical(status, categories=[MATURED, PENDING, UNPRICED])
    rows["reason"] = pd.Categorical(reason)
    return rows


@dg.asset(
    group_name="reconciliation",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[
        dg.AssetDep("signals"),
        dg.AssetDep(
            "price_bars",
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=0, end_offset=REACH_DAYS, allow_nonexistent_upstream_partitions=True
            ),
        ),
    ],
    kinds={"parquet"},
    description=__doc__,
)
def reconciled_trades(
    context: dg.AssetExecutionContext, data_root: DataRoot, reconciliation_policy: ReconciliationPolicy
) -> dg.MaterializeResult:
    warehouse = data_root.warehouse
    as_of = pd.Timestamp.now(tz="UTC")
    bar_cache: dict[date, pd.DataFrame | None] = {}
    parts = []
    for key in context.partition_keys:
        rows = reconcile_day(data_root, date.fromisoformat(key), reconciliation_policy, as_of, bar_cache)
        warehouse.write_partition(ASSET, key, rows)
        parts.append(rows)
        context.log.info(f"{key}: {rows['status'].value_counts().to_dict()}")
    exported = export_reconciled(warehouse, data_root.reconciled_file)
    context.log.info(f"wrote {exported:,} matured rows to {data_root.reconciled_file}")
    rows = pd.concat(parts, ignore_index=True)
    return dg.MaterializeResult(
        metadata={
            **row_count(context.partition_keys, len(rows)),
            **summary_metadata(rows, exported, str(data_root.reconciled_file)),
        }
    )


def summary_metadata(rows: pd.DataFrame, exported: int, export_path: str) -> dict:
    status = rows["status"].astype(str)
    matured = rows[status == MATURED]
    per_horizon = (
        matured.groupby("horizon_hours")["realized_pnl_bps"].agg(["count", "mean", "median"]).round(2)
    )
    by_status_horizon = pd.crosstab(rows["horizon_hours"], status).reset_index()
    reasons = rows.loc[status != MATURED, "reason"].astype(str).value_counts()
    return {
        "matured": int((status == MATURED).sum()),
        "pending": int((status == PENDING).sum()),
        "unpriced": int((status == UNPRICED).sum()),
        "matured_share": float(round((status == MATURED).mean(), 4)) if len(rows) else 0.0,
        "rows_by_status_and_horizon": dg.MetadataValue.md(by_status_horizon.to_markdown(index=False)),
        "pnl_bps_by_horizon": dg.MetadataValue.md(per_horizon.reset_index().to_markdown(index=False))
        if len(matured)
        else dg.MetadataValue.md("_no matured rows_"),
        "not_matured_reasons": counts_table(reasons, "reason", "rows"),
        "preview": frame_preview(rows.drop(columns=["date"]), 15),
        "exported_lines": exported,
        "export": dg.MetadataValue.path(export_path),
    }


assets = [reconciled_trades]
