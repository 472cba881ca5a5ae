"""Ingestion assets: the app's JSON Lines inputs → validated daily Parquet partitions + quarantine.

The validation rules are in ``meta_pipeline/ingest/``; reading only what was appended since the
last run, and handing each day its new rows, in ``meta_pipeline/staging.py``. A run parses each
input once: whichever of an input's two assets runs first reads the new lines and stages them; each
day's partition then takes its staged rows, and the quarantine table its staged lines.

A missing input file is a fresh start only while nothing has been read from it: afterwards a missing
file (moved, rotated away, a mistyped ``META_PIPELINE_ROOT``) fails the step with its path and
changes nothing stored — it must never read as "no signals" and empty the stored days.
"""

from pathlib import Path

import dagster as dg
import pandas as pd

from meta_pipeline import names, staging
from meta_pipeline.defs.metadata import counts_table, frame_preview, row_count
from meta_pipeline.defs.partitions import daily_partitions
from meta_pipeline.defs.resources import DataRoot, IngestionPolicy
from meta_pipeline.ingest import InputFileMissing

FRESH_START = "no input file yet and nothing read from it before: a fresh start, no signals yet"


class IngestConfig(dg.Config):
    """``rebuild_from_start``: rebuild the selected days from the start of the input files (and the
    rotated files still beside them) instead of adding only the lines appended since the last run.
    The ``reprocess_inputs`` job sets it."""

    rebuild_from_start: bool = False


def stage(context: dg.AssetExecutionContext, data_root: DataRoot, kind: staging.InputKind,
          source: Path) -> tuple[staging.StageResult, str]:  # fmt: skip
    """Stage what was appended to ``source``; returns the result and a note for the UI.

    Raises ``dg.Failure`` (not retried) when the file is missing but lines were read from it before.
    """
    warehouse = data_root.warehouse
    try:
        result = staging.stage_new_lines(warehouse, kind, source)
    except InputFileMissing:
        if staging.Staging(warehouse, kind).has_read() or warehouse.holds_rows(kind.name):
            raise dg.Failure(
                f"input file {source} is missing, but lines were read from it before: nothing was "
                "changed. Restore the file (or fix META_PIPELINE_ROOT) and run again; an empty file "
                "means 'no lines yet'.",
                allow_retries=False,
            ) from None
        return staging.StageResult(), FRESH_START
    for note in result.notes:
        context.log.warning(note)
    if result.lines_read:
        context.log.info(
            f"{source}: read {result.lines_read:,} new line(s): {result.rows:,} rows for "
            f"{len(result.days)} day(s), {result.rejected} rejected, {result.duplicates} duplicates"
        )
    return result, ""


def _read_metadata(result: staging.StageResult, note: str, source: Path) -> dict:
    return {
        **({"note": note} if note else {}),
        "source_file": dg.MetadataValue.path(str(source)),
        "new_lines_read": result.lines_read,
        "new_rows_staged": result.rows,
        "new_lines_rejected": result.rejected,
        "new_duplicate_lines": result.duplicates,
        "days_with_new_rows": ", ".join(sorted(d.isoformat() for d in result.days)[:20]) or "none",
        "pending_bytes": result.pending_bytes,  # a last line still waiting for its newline
    }


def _partitions_asset(kind: staging.InputKind, description: str, file_of) -> dg.AssetsDefinition:
    @dg.asset(
        name=kind.name,
        description=description,
        group_name=names.INGESTION_GROUP,
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"parquet"},
        owners=["team:meta-pipeline"],
    )
    def _asset(
        context: dg.AssetExecutionContext, config: IngestConfig, data_root: DataRoot
    ) -> dg.MaterializeResult:
        warehouse = data_root.warehouse
        source = file_of(data_root)
        result, note = stage(context, data_root, kind, source)
        keys = context.partition_keys
        if config.rebuild_from_start and not note:
            rebuilt = staging.restage_days(warehouse, kind, source, keys)
            note = "; ".join(rebuilt.notes)
            context.log.info(note)
        written: dict[str, int] = {}
        new_rows = duplicates = 0
        frames = []
        for key in keys:
            taken = staging.consolidate_day(
                warehouse, kind, kind.name, key, from_scratch=config.rebuild_from_start
            )
            written[key] = len(taken.rows)
            new_rows += taken.new_rows
            duplicates += taken.duplicates
            if len(frames) < 3:  # a preview needs a few days, not the whole range in memory
                frames.append(taken.rows)
        selected = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return dg.MaterializeResult(
            metadata={
                **row_count(keys, sum(written.values())),
                **_read_metadata(result, note, source),
                "new_rows_in_partitions": new_rows,
                "duplicates_ignored": duplicates,
                "rows_per_partition": counts_table(pd.Series(written), "partition", "rows")
                if len(keys) <= 31
                else dg.MetadataValue.md(f"{len(keys)} partitions, {sum(written.values()):,} rows"),
                "preview": frame_preview(selected.drop(columns=["extra"], errors="ignore"), 10),
                "storage": dg.MetadataValue.path(str(warehouse.directory / kind.name)),
            }
        )

    return _asset


signals = _partitions_asset(
    staging.SIGNALS,
    "The agents' trading signals from alpha/events.jsonl, one row per signal, by the UTC date of its "
    "ts. Lines are validated (ts with an offset, LONG or SHORT, a dollar-quoted symbol, confidence "
    "between 0 and 1) and a signal written twice (same run_id, instrument, direction and instant) "
    "counts once. Each run reads only the lines appended since the last one; rejected lines go to "
    "signal_quarantine.",
    lambda root: root.signals_file,
)

telemetry = _partitions_asset(
    staging.TELEMETRY,
    "One record per agent run from telemetry/events.jsonl — latency, tokens, errors, cost — including "
    "runs that emitted no signal, by the UTC date of ts; a run_id written twice in a day counts once. "
    "Metrics logged in other shapes are read (errors as a list, true/false, a message; numbers as "
    "text); a metric that cannot be read is left empty and named in unreadable_metrics. Rejected "
    "lines go to telemetry_quarantine.",
    lambda root: root.telemetry_file,
)


def _quarantine_asset(name: str, kind: staging.InputKind, input_name: str, file_of) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        description=f"Every rejected line of {input_name} (and of its rotated files), with its line "
        "number, its raw text and the reason it was rejected; each run adds the lines rejected since "
        "the last one (the input is never modified). The check warns when too large a share of all "
        "lines read is rejected.",
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
        warehouse = data_root.warehouse
        source = file_of(data_root)
        result, note = stage(context, data_root, kind, source)
        table, added = staging.consolidate_quarantine(warehouse, kind, name)
        totals = staging.Staging(warehouse, kind).load_state()[2]
        data_lines = totals.lines_read - totals.blank_lines
        share = float(round(totals.rejected / data_lines, 6)) if data_lines else 0.0
        by_reason = counts_table(table["reason"].astype(str).value_counts(), "reason", "lines")
        if added:
            context.log.warning(
                f"{source}: {added} more line(s) rejected; {totals.rejected} of {data_lines} in all"
            )
        threshold = ingestion_policy.max_rejected_share
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(table),
                **_read_metadata(result, note, source),
                "added_this_run": added,
                "rejected_share": share,
                "lines_read_in_all": totals.lines_read,
                "blank_lines_in_all": totals.blank_lines,
                "duplicates_in_all": totals.duplicates,
                "by_reason": by_reason,
                "rejected": frame_preview(table.drop(columns=["file_id"]).tail(50), 50),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name="rejected_share_below_threshold",
                    passed=share <= threshold,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={
                        "rejected_share": share,
                        "threshold": threshold,
                        "rejected_lines": totals.rejected,
                        "by_reason": by_reason,
                    },
                )
            ],
        )

    return _asset


signal_quarantine = _quarantine_asset(
    names.SIGNAL_QUARANTINE, staging.SIGNALS, names.SIGNALS_FILE, lambda r: r.signals_file
)
telemetry_quarantine = _quarantine_asset(
    names.TELEMETRY_QUARANTINE, staging.TELEMETRY, names.TELEMETRY_FILE, lambda r: r.telemetry_file
)
