"""Ingestion assets: the app's JSON Lines inputs → validated daily Parquet partitions + quarantine.

Each run re-reads the whole input file (inputs are append-only and never modified), so a partition
is always rebuilt from the full, current file: re-running is idempotent and a late-appended line for
an old day lands in its day on the next run of that day.
"""

from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pandas as pd

from meta_pipeline import ingest
from meta_pipeline.defs.metadata import counts_table, frame_preview, row_count
from meta_pipeline.defs.partitions import daily_partitions
from meta_pipeline.defs.resources import DataRoot, IngestionPolicy

GROUP = "ingestion"


def _ingested_partitions_asset(
    name: str,
    description: str,
    read: Callable[[Path], ingest.IngestResult],
    file_of: Callable[[DataRoot], Path],
) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        description=description,
        group_name=GROUP,
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"parquet"},
    )
    def _asset(context: dg.AssetExecutionContext, data_root: DataRoot) -> dg.MaterializeResult:
        source = file_of(data_root)
        result = read(source)
        keys = context.partition_keys
        by_date = dict(tuple(result.valid.groupby("date", sort=True))) if len(result.valid) else {}
        written = {}
        for key in keys:
            part = by_date.get(key, result.valid.iloc[0:0])
            data_root.warehouse.write_partition(name, key, part.sort_values(["ts", "line_no"]))
            written[key] = len(part)
        context.log.info(
            f"{name}: wrote {sum(written.values())} rows to {len(keys)} partition(s) "
            f"from {source} ({result.lines_read} lines, {result.rejected} rejected, "
            f"{result.duplicates} duplicates)"
        )
        selected = result.valid[result.valid["date"].isin(keys)]
        outside = len(result.valid) - int(
            result.valid["date"].isin(daily_partitions.get_partition_keys()).sum()
        )
        return dg.MaterializeResult(
            metadata={
                **row_count(keys, len(selected)),
                "rows_per_partition": counts_table(pd.Series(written), "partition", "rows"),
                "by_agent": counts_table(selected["agent"].value_counts(), "agent", "rows"),
                "source_file": dg.MetadataValue.path(str(source)),
                "file_lines": result.lines_read,
                "file_valid_rows": int(len(result.valid)),
                "file_duplicates": result.duplicates,
                "file_rejected_lines": result.rejected,
                "file_rows_outside_partitions": outside,
                "preview": frame_preview(selected.drop(columns=["extra"]), 10),
                "storage": dg.MetadataValue.path(str(data_root.warehouse.directory / name)),
            }
        )

    return _asset


signals = _ingested_partitions_asset(
    "signals",
    "Trading signals from alpha/events.jsonl, validated (ts with offset, LONG/SHORT, dollar-quoted "
    "symbol, confidence in [0,1]) and de-duplicated on (run_id, instrument, direction, ts); "
    "partitioned on the UTC date of ts.",
    ingest.read_signals,
    lambda root: root.signals_file,
)

telemetry = _ingested_partitions_asset(
    "telemetry",
    "One record per agent run from telemetry/events.jsonl (latency, tokens, errors, cost), including "
    "runs that emitted no signal; de-duplicated on run_id; partitioned on the UTC date of ts.",
    ingest.read_telemetry,
    lambda root: root.telemetry_file,
)


def _quarantine_asset(
    name: str,
    input_name: str,
    read: Callable[[Path], ingest.IngestResult],
    file_of: Callable[[DataRoot], Path],
) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        description=f"Every rejected line of the {input_name} input with its line number, raw text and "
        "reason. Rebuilt from the whole file on each run; the input is never modified.",
        group_name=GROUP,
        kinds={"parquet"},
        check_specs=[
            dg.AssetCheckSpec(
                "rejected_share_below_threshold",
                asset=name,
                description="Warns when the share of rejected lines exceeds IngestionPolicy.max_rejected_share.",
            )
        ],
    )
    def _asset(
        context: dg.AssetExecutionContext, data_root: DataRoot, ingestion_policy: IngestionPolicy
    ) -> dg.MaterializeResult:
        source = file_of(data_root)
        result = read(source)
        data_root.warehouse.write_table(name, result.quarantine)
        by_reason = counts_table(pd.Series(result.rejected_by_reason(), dtype="int64"), "reason", "lines")
        if result.rejected:
            context.log.warning(
                f"{source}: {result.rejected} of {result.lines_read} lines rejected: "
                f"{result.rejected_by_reason()}"
            )
        share = float(round(result.rejected_share, 6))
        threshold = ingestion_policy.max_rejected_share
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": result.rejected,
                "rejected_share": share,
                "lines_read": result.lines_read,
                "blank_lines": result.blank_lines,
                "duplicates_ignored": result.duplicates,
                "by_reason": by_reason,
                "rejected": frame_preview(result.quarantine, 50),
                "source_file": dg.MetadataValue.path(str(source)),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name="rejected_share_below_threshold",
                    passed=share <= threshold,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={
                        "rejected_share": share,
                        "threshold": threshold,
                        "rejected_lines": result.rejected,
                        "by_reason": by_reason,
                    },
                )
            ],
        )

    return _asset


signal_quarantine = _quarantine_asset(
    "signal_quarantine", "alpha/events.jsonl", ingest.read_signals, lambda root: root.signals_file
)
telemetry_quarantine = _quarantine_asset(
    "telemetry_quarantine", "telemetry/events.jsonl", ingest.read_telemetry, lambda root: root.telemetry_file
)

assets = [signals, telemetry, signal_quarantine, telemetry_quarantine]
