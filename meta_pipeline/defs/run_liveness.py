"""Free pool slots held by runs whose process is gone (see :mod:`meta_pipeline.run_liveness`).

``record_this_process`` is called by a pool-bound asset (``price_bars``) at the start of its step;
the ``reap_dead_runs`` sensor then fails such runs and frees their slots once their process is
provably gone. Importing this module only defines them.
"""

import dagster as dg

from meta_pipeline import run_liveness


def record_this_process(context: dg.AssetExecutionContext) -> None:
    """Tag the current run with the processes running this step and the machine's boot id.

    Call it first thing in a step that holds a pool slot. Bookkeeping must never fail the asset:
    an error is logged as a warning and the run is left untagged (it is then never reaped).
    """
    try:
        run_liveness.record_run_process(context.instance, context.run_id)
    except Exception as exc:  # liveness tags are best effort
        context.log.warning(f"could not record this run's process for run_liveness: {exc!r}")


@dg.sensor(
    name="reap_dead_runs",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Marks runs as failed whose recorded process is gone (killed, crashed, machine rebooted)"
        " and frees their pool slots, so a killed `price_bars` run does not hold the `exchange_api`"
        " slot for ever. Safe to leave on: it only touches runs tagged by"
        " meta_pipeline.run_liveness whose every recorded process provably no longer exists; it"
        " never touches other runs, never kills anything and launches no runs."
    ),
)
def reap_dead_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    reaped = run_liveness.reap_dead_runs(context.instance)
    if not reaped:
        return dg.SkipReason("no dead runs")
    listed = ", ".join(reaped)
    context.log.info(f"reaped dead runs: {listed}")
    return dg.SkipReason(
        f"reaped {len(reaped)} run(s) whose process is gone (unfinished ones marked failed,"
        f" pool slots freed): {listed}"
    )
