"""The project's code location with its jobs on the Celery executor (``dagster-celery``).

Why a second code location rather than a run-config switch: ``meta_pipeline/definitions.py`` sets
``executor=dg.in_process_executor`` for every job, and an executor is chosen where jobs are
defined, not in run config (the in-process executor's config has no way to select another one).
This module takes the project's definitions unchanged and replaces only the executor, so the
default stays in-process for everyone and a Celery deployment points its workspace here
(``deploy/celery/workspace.yaml``). Each step of a run becomes a Celery task that a
``dagster-celery worker`` runs; the run worker only orchestrates.

The broker comes from ``DAGSTER_CELERY_BROKER_URL`` (e.g. ``pyamqp://guest@127.0.0.1:5672//`` for
RabbitMQ or ``redis://127.0.0.1:6379/0`` for Redis); results come back over the broker (``rpc://``).
Workers must use the same broker (``deploy/celery/worker.yaml``), the same DAGSTER_HOME instance
(Postgres: ``deploy/postgres/dagster.yaml``) and the same META_PIPELINE_* environment, and must see
the same data root and Dagster's step outputs (``$DAGSTER_HOME/storage``): shared storage when they
run on other machines.
"""

from dagster_celery import celery_executor
from dagster_shared.record import copy

from meta_pipeline import definitions as project  # a module, not its Definitions: one per module scope

celery = celery_executor.configured(
    {"broker": {"env": "DAGSTER_CELERY_BROKER_URL"}, "backend": "rpc://"}, name="celery"
)

# a copy through Definitions' own constructor (so it is validated like any Definitions) with every
# field but the executor kept: assets, jobs, schedules, sensors, resources, loggers, metadata
defs = copy(project.defs, executor=celery)
