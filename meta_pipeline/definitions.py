"""The Dagster code location: every definition in the ``meta_pipeline/defs/`` folder, plus the
resources configured from the environment.

``dagster dev``, ``dg dev``, ``dg list defs``, the workspace and the ``meta-pipeline`` CLI all load
``defs`` from this module, under the one code-location name ``meta_pipeline``. A module added to
``defs/`` (for instance with ``dg scaffold defs``) is loaded without editing a list.
"""

from pathlib import Path

import dagster as dg

from meta_pipeline.defs.environment import SETTINGS
from meta_pipeline.defs.resources import default_resources

defs = dg.Definitions.merge(
    dg.components.load_from_defs_folder(path_within_project=Path(__file__).resolve().parent),
    # In-process: a tick is a few seconds of work, and a subprocess per step (Dagster's default
    # multiprocess executor) costs more than the steps. An executor is fixed where jobs are defined,
    # not chosen in run config: deploy/celery/definitions.py is the same code location on Celery
    # (README, "Scaling past one machine").
    dg.Definitions(resources=default_resources(SETTINGS), executor=dg.in_process_executor),
)
