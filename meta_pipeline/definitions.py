"""The Dagster code location: ``dagster dev`` / ``dg dev`` load ``defs`` from here."""


import dagster as dg

from meta_pipeline.defs import ingestion, prices, reconciliation
from meta_pipeline.defs.jobs import jobs
from meta_pipeline.defs.partitions import SETTINGS
from meta_pipeline.defs.resources import default_resources

defs = dg.Definitions(
    assets=[*ingestion.assets, *prices.assets, *reconciliation.assets],
    jobs=jobs,
    resources=default_resources(SETTINGS),
)
