"""Jobs the operators launch from the UI (and the demo runs in-process).

Jobs select asset groups by name, never ``AssetSelection.all()``: assets added later in other groups
(the supervisor, the LP email) do not join the 30-minute refresh by accident.
"""

import dagster as dg

from meta_pipeline import names

main_job = dg.define_asset_job(
    names.MAIN_JOB,
    selection=dg.AssetSelection.groups(*names.PIPELINE_GROUPS),
    description="Ingestion, prices and reconciliation for a day or a range of days (one run per range).",
)

reprocess_inputs = dg.define_asset_job(
    names.REPROCESS_JOB,
    selection=dg.AssetSelection.groups(*names.PIPELINE_GROUPS),
    config={
        "ops": {asset: {"config": {"rebuild_from_start": True}} for asset in (names.SIGNALS, names.TELEMETRY)}
    },
    description=(
        "Rebuilds the chosen days from the start of the input files (and the rotated files still "
        "beside them), then prices and reconciles them: choose the days as a partition range, or "
        "all partitions. Use it after a file was corrected by hand or partitions were deleted."
    ),
)

refresh_export = dg.define_asset_job(
    names.EXPORT_JOB,
    selection=dg.AssetSelection.groups(names.EXPORTS_GROUP),
    description="Rebuilds alpha/reconciled.jsonl from the per-day files (a byte copy, no recomputation).",
)

supervisor_job = dg.define_asset_job(
    names.SUPERVISOR_JOB,
    selection=dg.AssetSelection.groups(names.SUPERVISOR_GROUP),
    description=(
        "Confidence, agent statistics and their blocking checks, decisions and the kill switch, "
        "allocation, portfolio and the meta report, from the reconciled history as it stands."
    ),
)

lp_email_job = dg.define_asset_job(
    names.LP_EMAIL_JOB,
    selection=dg.AssetSelection.groups(names.REPORTS_GROUP),
    description=(
        "Renders and sends the LPs' daily email from the latest meta report (at most once per UTC "
        "day; set force: true in the run config to send again)."
    ),
)

forensics_job = dg.define_asset_job(
    names.FORENSICS_JOB,
    selection=dg.AssetSelection.groups(names.RESEARCH_GROUP),
    description="Failure forensics over the reconciled history: worst trades, per-agent tested hypotheses.",
)
