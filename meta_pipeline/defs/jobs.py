"""Jobs the operators launch from the UI (and the demo runs in-process)."""

import dagster as dg

from meta_pipeline.defs.partitions import daily_partitions

MAIN_JOB = "meta_pipeline_job"

main_job = dg.define_asset_job(
    MAIN_JOB,
    selection=dg.AssetSelection.all(),
    partitions_def=daily_partitions,
    description="Everything, end to end, for a day or a range of days (one run per range).",
)

jobs = [main_job]
