"""Dagster wiring by concept: assets, checks, jobs, schedules, sensors and resources.

Every module here is loaded by ``meta_pipeline/definitions.py``; the logic they wire lives in the
Dagster-free modules of ``meta_pipeline/``.
"""

import warnings

import dagster as dg

# Single-run backfills (BackfillPolicy.single_run) and partition mappings that allow nonexistent
# upstream partitions are beta APIs this project relies on on purpose: say so once, here, instead of
# printing the same warnings on every command.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
