"""``reconciled_trades``: the wiring of the reconciliation (the rules are in
``meta_pipeline/reconcile.py`` and ``meta_pipeline/day_reconciliation.py``)."""

from datetime import date

import dagster as dg
import numpy as np
import pandas as pd

from meta_pipeline import export, names
from meta_pipeline.day_reconciliation import BarCache, DayRows, empty_rows, reconcile_day
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
    summary = RunSummary()
    with data_root.export_lock:
        for key in context.partition_keys:
            day = date.fromisoformat(key)
            try:
                result = reconcile_day(
                    warehouse,
                    day,
                    horizons_hours=SETTINGS.horizons_hours,
                    reach_days=REACH_DAYS,
                    as_of=as_of,
                    round_trip_cost_bps=reconciliation_policy.round_trip_cost_bps,
                    max_gap=SETTINGS.max_bar_gap,
                    bar_cache=bar_cache,
                )
            except Exception as exc:  # one day that cannot be computed must not fail the others
                context.log.exception(f"{key}: cannot be reconciled")
                result = DayRows(
                    day, empty_rows(SETTINGS.horizons_hours), blocked=f"error: {type(exc).__name__}: {exc}"
                )
            # written day by day (memory stays at a few days); a day that failed is written as
            # blocked, so the files always match what Dagster records for the run
            warehouse.write_partition(
                names.RECONCILED_TRADES, key, result.rows, facts={"blocked": result.blocked}
            )
            summary.add(result, export.write_day(data_root.reconciled_days_dir, key, result.rows))
    # one log line per run, not per day: every log line is an event-log write
    if summary.blocked:
        shown = "; ".join(f"{b['day']}: {b['reason']}" for b in summary.blocked[:10])
        context.log.warning(f"{len(summary.blocked)} day(s) blocked: {shown}")
    context.log.info(
        f"wrote {summary.exported:,} matured rows to {len(context.partition_keys)} day file(s) in "
        f"{data_root.reconciled_days_dir}"
    )
    blocked = pd.DataFrame(summary.blocked, columns=["day", "reason"])
    return dg.MaterializeResult(
        metadata={
            **row_count(context.partition_keys, summary.rows),
            **summary.metadata(str(data_root.reconciled_days_dir)),
            # a range run's metadata is shown on each of its days: say it is the run's
            "blocked_days_in_run": len(blocked),
            "blocked_in_run": frame_preview(blocked, 31)
            if len(blocked)
            else markdown_table(blocked, empty="_none_"),
        }
    )


MAX_PENDING_DAYS_LISTED = 100


class RunSummary:
    """What the UI shows about a run, gathered day by day in bounded memory: counts by status and
    horizon, the matured PnL per horizon (two numbers a row), reasons, and a preview of the first rows."""

    def __init__(self) -> None:
        self.rows = self.exported = 0
        self.counts: dict[tuple[str, str], int] = {}
        self.reasons: dict[str, int] = {}
        self.pnl: dict[str, list[np.ndarray]] = {}
        self.preview = pd.DataFrame()
        self.blocked: list[dict] = []
        self.pending_days: list[str] = []  # the days with rows waiting for bars (pending rows heal)

    def add(self, result: DayRows, exported: int) -> None:
        rows = result.rows
        self.exported += exported
        self.rows += len(rows)
        if result.blocked:
            self.blocked.append({"day": result.day.isoformat(), "reason": result.blocked})
        if rows.empty:
            return
        status = rows["status"].astype(str)
        if (status == PENDING).any():
            self.pending_days.append(result.day.isoformat())
        hours = rows["horizon_hours"]
        labels = {h: f"{h:g} h" for h in hours.unique()}
        for (h, st), n in pd.crosstab(hours, status).stack().items():
            self.counts[(labels[h], st)] = self.counts.get((labels[h], st), 0) + int(n)
        for reason, n in rows.loc[status != MATURED, "reason"].astype(str).value_counts().items():
            self.reasons[reason] = self.reasons.get(reason, 0) + int(n)
        matured = rows[status == MATURED]
        for h, pnl in matured.groupby("horizon_hours")["realized_pnl_bps"]:
            self.pnl.setdefault(labels[h], []).append(pnl.to_numpy())
        if len(self.preview) < 15:
            self.preview = pd.concat([self.preview, rows.head(15 - len(self.preview))], ignore_index=True)

    def metadata(self, export_path: str) -> dict:
        def total(st: str) -> int:
            return sum(n for (_, s), n in self.counts.items() if s == st)

        counts = pd.Series(self.counts, dtype="int64")
        by_status_horizon = (
            counts.unstack(fill_value=0).rename_axis("horizon_hours").reset_index()
            if len(counts)
            else pd.DataFrame()
        )
        per_horizon = pd.DataFrame(
            [
                {
                    "horizon": h,
                    "count": int(sum(map(len, parts))),
                    "mean": np.concatenate(parts).mean(),
                    "median": np.median(np.concatenate(parts)),
                }  # fmt: skip
                for h, parts in self.pnl.items()
            ]
        ).round(2)
        matured = total(MATURED)
        pending_days = (
            # which days hold pending rows, for the pending-rows sensor; bounded so a year's backfill
            # does not put a year of dates into every partition's event (the sensor then uses the total)
            {"pending_days": dg.MetadataValue.json(self.pending_days)}
            if len(self.pending_days) <= MAX_PENDING_DAYS_LISTED
            else {}
        )
        return {
            "matured": matured,
            "pending": total(PENDING),
            **pending_days,
            "unpriced": total(UNPRICED),
            "matured_share": float(round(matured / self.rows, 4)) if self.rows else 0.0,
            "rows_by_status_and_horizon": markdown_table(by_status_horizon, empty="_no signals yet_"),
            "pnl_bps_by_horizon": markdown_table(per_horizon, empty="_no matured rows_"),
            "not_matured_reasons": counts_table(
                pd.Series(self.reasons, dtype="int64").sort_values(ascending=False), "reason", "rows"
            ),
            "preview": frame_preview(self.preview.drop(columns=["date"], errors="ignore"), 15),
            "exported_lines": self.exported,
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
