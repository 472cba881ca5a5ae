"""Schedules and sensors that keep the pipeline current.

They start stopped (unless ``META_PIPELINE_AUTOMATION=on``): switch them on in the UI (*Automation*)
once the environment points at the real data root and exchanges.

* ``refresh_every_30_minutes`` runs the main job over the days whose rows can still change (today
  and the ``REACH_DAYS`` before it): new signals are priced, pending rows mature.
* ``supervisor_follows_reconciliation`` requests the supervisor's assets after new reconciled data
  (their automation condition is in ``defs/supervisor.py``).
* ``new_input_lines`` watches the input files (``meta_pipeline/input_watch.py``): when lines are
  appended it asks for one run per cluster of the days they belong to, plus the days their
  horizons reach.
* ``lp_email_daily`` (07:10 UTC) sends the LPs' email; ``failure_forensics_daily`` (08:30 UTC) runs
  the forensics. Their jobs select their own groups, so the 30-minute tick never sends the email.

``heal_pending_rows`` (``defs/healing.py``) is on by default; the freshness check on
``reconciled_trades`` is in ``defs/freshness.py``.
"""

import hashlib
import json
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from meta_pipeline import input_watch, names, staging
from meta_pipeline.defs.environment import SETTINGS
from meta_pipeline.defs.jobs import forensics_job, lp_email_job, main_job, refresh_export
from meta_pipeline.defs.partitions import REACH_DAYS
from meta_pipeline.defs.resources import DataRoot

MAX_RUNS_PER_TICK = 4

# Stopped by default, switched on in the UI once the environment points at the real data root;
# META_PIPELINE_AUTOMATION=on (the live demo, or a deployment that wants them running from its first
# start) makes them start running instead.
SCHEDULE_STATUS = (
    dg.DefaultScheduleStatus.RUNNING if SETTINGS.automation_on else dg.DefaultScheduleStatus.STOPPED
)
SENSOR_STATUS = dg.DefaultSensorStatus.RUNNING if SETTINGS.automation_on else dg.DefaultSensorStatus.STOPPED


def range_tags(first: date, last: date) -> dict[str, str]:
    return {names.RANGE_START_TAG: first.isoformat(), names.RANGE_END_TAG: last.isoformat()}


def clip_range(first: date, last: date, today: date) -> tuple[date, date] | None:
    """Keep a day range inside the partitions that exist (start date … today)."""
    first, last = max(first, SETTINGS.start_date), min(last, today)
    return (first, last) if first <= last else None


def day_clusters(days: set[date], reach_days: int) -> list[tuple[date, date]]:
    """Group days into ranges (each extended by ``reach_days``); a new range starts where two
    consecutive days are more than ``reach_days`` apart, so one late line for an old day does not
    make a run over every day in between."""
    clusters: list[list[date]] = []
    for day in sorted(days):
        if clusters and (day - clusters[-1][1]).days <= reach_days:
            clusters[-1][1] = day
        else:
            clusters.append([day, day])
    return [(first, last + timedelta(days=reach_days)) for first, last in clusters]


def at_most_runs_per_tick(ranges: list[tuple[date, date]]) -> list[tuple[date, date]]:
    """Sorted day ranges cut to ``MAX_RUNS_PER_TICK``: the oldest are merged into one, so no day is
    dropped and the newest keep runs of their own."""
    if len(ranges) <= MAX_RUNS_PER_TICK:
        return ranges
    return [(ranges[0][0], ranges[-MAX_RUNS_PER_TICK][1]), *ranges[-MAX_RUNS_PER_TICK + 1 :]]


def plan_runs(days: set[date], today: date) -> tuple[list[tuple[date, date]], list[date]]:
    """The day ranges to run (inside the partitions, at most ``MAX_RUNS_PER_TICK``, the newest
    kept) and the days that lie outside every partition (before the start date or in the future)."""
    inside = {d for d in days if SETTINGS.start_date <= d <= today}
    outliers = sorted(days - inside)
    ranges = [r for r in (clip_range(a, b, today) for a, b in day_clusters(inside, REACH_DAYS)) if r]
    ranges = at_most_runs_per_tick(ranges)
    return ranges, outliers


@dg.schedule(
    job=main_job,
    cron_schedule="*/30 * * * *",
    execution_timezone="UTC",
    default_status=SCHEDULE_STATUS,
    description="Every 30 minutes: today and the days whose horizons still reach today.",
)
def refresh_every_30_minutes(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    today = context.scheduled_execution_time.astimezone(UTC).date()
    window = clip_range(today - timedelta(days=REACH_DAYS), today, today)
    if window is None:
        return dg.SkipReason(f"no partition yet: META_PIPELINE_START_DATE is {SETTINGS.start_date}")
    return dg.RunRequest(run_key=None, tags=range_tags(*window))


@dg.schedule(
    job=refresh_export,
    cron_schedule="5 * * * *",
    execution_timezone="UTC",
    default_status=SCHEDULE_STATUS,
    description="Hourly: rebuild alpha/reconciled.jsonl from the per-day files the ticks wrote.",
)
def refresh_export_hourly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=None)


@dg.schedule(
    job=lp_email_job,
    cron_schedule="10 7 * * *",
    execution_timezone="UTC",
    default_status=SCHEDULE_STATUS,
    description=(
        "Daily at 07:10 UTC: renders the LPs' email from the latest meta report and sends it (at most "
        "once per UTC day, whatever else launches the job); with SMTP unset it only writes the files."
    ),
)
def lp_email_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = context.scheduled_execution_time.astimezone(UTC).date()
    return dg.RunRequest(run_key=f"lp-email-{day}")


@dg.schedule(
    job=forensics_job,
    cron_schedule="30 8 * * *",
    execution_timezone="UTC",
    default_status=SCHEDULE_STATUS,
    description=(
        "Daily at 08:30 UTC: failure forensics over the reconciled history (worst trades, each "
        "agent's tested hypotheses), written to meta_supervisor/research/failure_forensics.json."
    ),
)
def failure_forensics_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = context.scheduled_execution_time.astimezone(UTC).date()
    return dg.RunRequest(run_key=f"forensics-{day}")


def covers_more_than_a_tick(tags: dict[str, str]) -> bool:
    """Whether a run's tags say it was a backfill or covered more days than a 30-minute tick does."""
    if "dagster/backfill" in tags:
        return True
    try:
        first, last = (
            date.fromisoformat(tags[names.RANGE_START_TAG]),
            date.fromisoformat(tags[names.RANGE_END_TAG]),
        )
    except (KeyError, ValueError):
        return False
    return (last - first).days > REACH_DAYS


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    request_job=refresh_export,
    default_status=SENSOR_STATUS,
    minimum_interval_seconds=60,
    description="After a backfill (or any run over more days than a tick) succeeds, rebuild alpha/reconciled.jsonl.",
)
def export_after_backfill(context: dg.RunStatusSensorContext):
    run = context.dagster_run
    if run.job_name == names.EXPORT_JOB or not covers_more_than_a_tick(run.tags):
        return dg.SkipReason(f"run {run.run_id} was not a backfill: the hourly refresh will pick it up")
    return dg.RunRequest(run_key=f"export-after-{run.run_id}")


def _positions(cursor: str | None) -> dict[str, input_watch.Position]:
    try:
        raw = json.loads(cursor) if cursor else {}
        return {name: input_watch.Position(**value) for name, value in raw.items() if isinstance(value, dict)}
    except (ValueError, TypeError):
        return {}  # an unreadable cursor is a cleared one: start from the ends of the files


@dg.sensor(
    job=main_job,
    minimum_interval_seconds=60,
    default_status=SENSOR_STATUS,
    description=(
        "Starts a run when lines are appended to alpha/events.jsonl or telemetry/events.jsonl, over "
        "the days the new lines belong to (plus the days their horizons reach). It follows rotated "
        "and replaced files. A cleared cursor resumes from where ingestion stopped reading; to "
        "process lines already read again, run the reprocess_inputs job over their days."
    ),
)
def new_input_lines(context: dg.SensorEvaluationContext, data_root: DataRoot) -> dg.SensorResult:
    positions = _positions(context.cursor)
    if not positions:  # first tick or a cleared cursor: resume from what ingestion has read
        for name, kind in ((names.SIGNALS, staging.SIGNALS), (names.TELEMETRY, staging.TELEMETRY)):
            stored = staging.Staging(data_root.warehouse, kind).position()
            if stored is not None:
                positions[name] = stored
    cursor: dict[str, dict | None] = {}
    days: set[date] = set()
    notes: list[str] = []
    chunks: list = []
    for name, path in ((names.SIGNALS, data_root.signals_file), (names.TELEMETRY, data_root.telemetry_file)):
        try:
            look = input_watch.look_at(path, positions.get(name))
        except OSError as exc:  # keep the old position: the lines are read once the file is readable
            notes.append(f"{path}: cannot read ({exc}); will try again")
            look = input_watch.Look(positions.get(name))
        cursor[name] = look.as_cursor()
        days |= look.days
        notes += look.notes
        chunks += look.chunks
        if look.unreadable_lines:
            notes.append(
                f"{path}: {look.unreadable_lines} new line(s) without a readable ts (see the quarantine)"
            )
    for note in notes:
        context.log.info(note)
    new_cursor = json.dumps(cursor, sort_keys=True)
    today = datetime.now(UTC).date()
    ranges, outliers = plan_runs(days, today)
    if outliers:
        shown = ", ".join(d.isoformat() for d in outliers[:5]) + (" …" if len(outliers) > 5 else "")
        notes.append(
            f"{len(outliers)} day(s) outside the partitions ({SETTINGS.start_date} … {today}) ignored: {shown}"
        )
        context.log.warning(notes[-1])
    if not ranges:
        reason = "; ".join([*notes, "no new lines"] if not days else notes) or "no new lines"
        hint = f" (to process lines already read again, run the {names.REPROCESS_JOB} job over their days)"
        return dg.SensorResult(skip_reason=(reason + hint)[:2000], cursor=new_cursor)
    # the key names the bytes read (file identity and byte range), so the same lines never start two
    # runs, and a rotated or replaced file (a new identity) always does
    data_id = hashlib.sha1(json.dumps(sorted(chunks)).encode()).hexdigest()[:16]
    requests = [
        dg.RunRequest(run_key=f"{data_id}:{first}:{last}", tags=range_tags(first, last))
        for first, last in ranges
    ]
    return dg.SensorResult(run_requests=requests, cursor=new_cursor)


supervisor_automation = dg.AutomationConditionSensorDefinition(
    "supervisor_follows_reconciliation",
    target=dg.AssetSelection.groups(names.SUPERVISOR_GROUP),
    default_status=SENSOR_STATUS,
    minimum_interval_seconds=60,
    description=(
        "Updates the supervisor (confidence, statistics and their blocking checks, decisions, "
        "allocation, portfolio, report) once after new reconciled data — a backfill of many days is "
        "one update — and never while a blocking check on its inputs is failing."
    ),
)
