"""The Dagster code location: ``dagster dev`` / ``dg dev`` load ``defs`` from here."""

import warnings

import dagster as dg

from meta_pipeline.defs import automation, ingestion, prices, reconciliation
from meta_pipeline.defs.jobs import jobs
from meta_pipeline.defs.partitions import SETTINGS
from meta_pipeline.defs.resources import default_resources

# single-run backfills and nonexistent-upstream partition mappings are beta APIs we rely on on purpose
warnings.filterwarnings("ignore", category=dg.BetaWarning)

defs = dg.Definitions(
    assets=[*ingestion.assets, *prices.assets, *reconciliation.assets],
    jobs=jobs,
    schedules=automation.schedules,
    sensors=automation.sensors,
    resources=default_resources(SETTINGS),
)
