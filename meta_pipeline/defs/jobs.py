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
