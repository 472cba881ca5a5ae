"""Ingestion assets: the app's JSON Lines inputs → validated daily Parquet partitions + quarantine
(the validation rules are in ``meta_pipeline/ingest.py``).

A missing input file is a fresh start only while nothing has been ingested from it: once the
warehouse holds rows read from that file, a missing file (moved, rotated, a mistyped
``META_PIPELINE_ROOT``) fails the step with its path and changes nothing stored — it must never read
as "no signals" and empty the stored days.
"""

from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pandas as pd

from meta_pipeline import ingest, names
from meta_pipeline.defs.metadata import counts_table, frame_preview, row_count
from meta_pipeline.defs.partitions import daily_partitions
from meta_pipeline.defs.resources import DataRoot, IngestionPolicy

Reader = Callable[[Path], ingest.IngestResult]
FRESH_START = "no input file yet and nothing stored: a fresh start, no signals yet"


def read_input(
    data_root: DataRoot, source: Path, read: Reader, columns: list[str], ingested_as: str
) -> tuple[ingest.IngestResult, str]:
    """Read an input file, or explain why there is nothing to read.

    Returns the result and a note for the UI. Raises ``dg.Failure`` (not retried) when the file is
    missing but the warehouse already holds rows ingested from it (asset ``ingested_as``).
    """
    try:
        return read(source), ""
    except FileNotFoundError:
        if data_root.warehouse.holds_rows(ingested_as):
            raise dg.Failure(
                f"input file {source} is missing, but {data_root.warehouse.directory / ingested_as} holds rows "
                "read from it: "
                "nothing was changed. Restore the file (or fix META_PIPELINE_ROOT) and run again; "
                "an empty file means 'no lines yet'.",
                allow_retries=False,
            ) from None
        empty = ingest.IngestResult(
            valid=pd.DataFrame(columns=columns), quarantine=pd.DataFrame(columns=ingest.QUARANTINE_COLUMNS)
        )
        return empty, FRESH_START


def _ingested_partitions_asset(name: str, description: str, read: Reader, columns: list[str],
                               file_of: Callable[[DataRoot], Path]) -> dg.AssetsDefinition:  # fmt: skip
    @dg.asset(
        name=name,
        description=description,
        group_name=names.INGESTION_GROUP,
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"parquet"},
        owners=["team:meta-pipeline"],
    )
    def _asset(context: dg.AssetExecutionContext, data_root: DataRoot) -> dg.MaterializeResult:
        source = file_of(data_root)
        result, note = read_input(data_root, source, read, columns, name)
        valid = result.valid
        keys = context.partition_keys
        by_date = dict(tuple(valid.groupby("date", sort=True))) if len(valid) else {}
        written = {}
        for key in keys:
            part = by_date.get(key, valid.iloc[0:0])
            data_root.warehouse.write_partition(name, key, part.sort_values(["ts", "line_no"]))
            written[key] = len(part)
        context.log.info(
            f"{name}: wrote {sum(written.values())} rows to {len(keys)} partition(s) from {source} "
            f"({result.lines_read} lines, {result.rejected} rejected, {result.duplicates} duplicates)"
        )
        selected = valid[valid["date"].isin(keys)]
        outside = len(valid) - int(valid["date"].isin(daily_partitions.get_partition_keys()).sum())
        return dg.MaterializeResult(
            metadata={
                **row_count(keys, len(selected)),
                **({"note": note} if note else {}),
                "rows_per_partition": counts_table(pd.Series(written), "partition", "rows"),
                "by_agent": counts_table(selected["agent"].value_counts(), "agent", "rows"),
                "source_file": dg.MetadataValue.path(str(source)),
                "file_lines": result.lines_read,
                "file_valid_rows": int(len(valid)),
                "file_duplicates": result.duplicates,
                "file_rejected_lines": result.rejected,
                "file_rows_outside_partitions": outside,
                "preview": frame_preview(selected.drop(columns=["extra"]), 10),
                "storage": dg.MetadataValue.path(str(data_root.warehouse.directory / name)),
            }
        )

    return _asset


signals = _ingested_partitions_asset(
    names.SIGNALS,
    "The agents' trading signals from alpha/events.jsonl, one row per signal, by the UTC date of its "
    "ts. Lines are validated (ts with an offset, LONG or SHORT, a dollar-quoted symbol, confidence "
    "between 0 and 1) and a signal written twice (same run_id, instrument, direction and instant) "
    "counts once. Rejected lines go to signal_quarantine.",
    ingest.read_signals,
    ingest.SIGNAL_COLUMNS,
    lambda root: root.signals_file,
)

telemetry = _ingested_partitions_asset(
    names.TELEMETRY,
    "One record per agent run from telemetry/events.jsonl — latency, tokens, errors, cost — including "
    "runs that emitted no signal, by the UTC date of ts; a run_id written twice counts once. "
    "Rejected lines go to telemetry_quarantine.",
    ingest.read_telemetry,
    ingest.TELEMETRY_COLUMNS,
    lambda root: root.telemetry_file,
)


def _quarantine_asset(name: str, input_name: str, read: Reader, columns: list[str], ingested_as: str,
                      file_of: Callable[[DataRoot], Path]) -> dg.AssetsDefinition:  # fmt: skip
    @dg.asset(
        name=name,
        description=f"Every rejected line of {input_name}, with its line number, its raw text and the "
        "reason it was rejected, rebuilt from the whole file on each run (the input is never "
        "modified). The check warns when too large a share of the lines is rejected.",
        group_name=names.INGESTION_GROUP,
        kinds={"parquet"},
        owners=["team:meta-pipeline"],
        check_specs=[
            dg.AssetCheckSpec(
                "rejected_share_below_threshold",
                asset=name,
                description="Warns when the share of rejected lines exceeds ingestion_policy.max_rejected_share.",
            )
        ],
    )
    def _asset(context: dg.AssetExecutionContext, data_root: DataRoot, ingestion_policy: IngestionPolicy) -> dg.MaterializeResult:  # fmt: skip
        source = file_of(data_root)
        result, note = read_input(data_root, source, read, columns, ingested_as)
        data_root.warehouse.write_table(name, result.quarantine)
        by_reason = counts_table(pd.Series(result.rejected_by_reason(), dtype="int64"), "reason", "lines")
        if result.rejected:
            context.log.warning(
                f"{source}: {result.rejected} of {result.lines_read} lines rejected: {result.rejected_by_reason()}"
            )
        share = float(round(result.rejected_share, 6))
        threshold = ingestion_policy.max_rejected_share
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(result.quarantine),
                **({"note": note} if note else {}),
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
    names.SIGNAL_QUARANTINE,
    "alpha/events.jsonl",
    ingest.read_signals,
    ingest.SIGNAL_COLUMNS,
    names.SIGNALS,
    lambda r: r.signals_file,
)
telemetry_quarantine = _quarantine_asset(
    names.TELEMETRY_QUARANTINE,
    "telemetry/events.jsonl",
    ingest.read_telemetry,
    ingest.TELEMETRY_COLUMNS,
    names.TELEMETRY,
    lambda r: r.telemetry_file,
)
