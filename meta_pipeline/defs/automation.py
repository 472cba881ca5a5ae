"""Schedules and sensors that keep the pipeline current.

Both start stopped: switch them on in the UI (*Automation*) once the environment points at the real
data root and exchanges.

* ``refresh_every_30_minutes`` re-runs the main job over the days whose rows can still change
  (today and the ``REACH_DAYS`` before it): new signals are priced, pending rows mature.
* ``new_input_lines`` watches the input files. It remembers how far it has read each file (byte
  offset) and, when lines are appended, reads only the new bytes, finds the UTC days they belong
  to, and asks for one run over those days plus the days their horizons reach.
"""

import json
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from meta_pipeline.defs.jobs import main_job
from meta_pipeline.defs.partitions import REACH_DAYS, SETTINGS
from meta_pipeline.defs.resources import DataRoot
from meta_pipeline.ingest import Rejected, iter_lines, parse_ts

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def range_tags(first: date, last: date) -> dict[str, str]:
    return {RANGE_START: first.isoformat(), RANGE_END: last.isoformat()}


def clip_range(first: date, last: date, today: date) -> tuple[date, date] | None:
    """Keep a day range inside the partitions that exist (start date … today)."""
    first, last = max(first, SETTINGS.start_date), min(last, today)
    return (first, last) if first <= last else None


@dg.schedule(
    job=main_job,
    cron_schedule="*/30 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Every 30 minutes: today and the days whose horizons still reach today.",
)
def refresh_every_30_minutes(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    today = context.scheduled_execution_time.astimezone(UTC).date()
    window = clip_range(today - timedelta(days=REACH_DAYS), today, today)
    if window is None:
        return dg.SkipReason(f"no partition yet: META_PIPELINE_START_DATE is {SETTINGS.start_date}")
    return dg.RunRequest(run_key=None, tags=range_tags(*window))


def new_line_days(data: bytes) -> tuple[set[date], int]:
    """UTC days of the complete lines in ``data`` (an appended chunk), and how many bytes those
    lines span. A trailing line without its newline is left for the next tick; lines whose ``ts``
    cannot be read are the ingestion's business (quarantine), not the sensor's."""
    complete = data[: data.rfind(b"\n") + 1]
    days = set()
    for _, raw, _ in iter_lines(complete):
        try:
            days.add(parse_ts(json.loads(raw)["ts"]).date())
        except (ValueError, KeyError, TypeError, Rejected):
            continue
    return days, len(complete)


@dg.sensor(
    job=main_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Starts a run when lines are appended to alpha/events.jsonl or telemetry/events.jsonl.",
)
def new_input_lines(context: dg.SensorEvaluationContext, data_root: DataRoot) -> dg.SensorResult:
    offsets = json.loads(context.cursor) if context.cursor else {}
    days: set[date] = set()
    for name, path in (("signals", data_root.signals_file), ("telemetry", data_root.telemetry_file)):
        if not path.exists():
            continue
        size, offset = path.stat().st_size, int(offsets.get(name, 0))
        if size < offset:
            context.log.warning(
                f"{path} shrank from {offset} to {size} bytes (inputs should only grow); "
                "reading it again from the start"
            )
            offset = 0
        if size == offset:
            continue
        with path.open("rb") as handle:
            handle.seek(offset)
            chunk = handle.read(size - offset)
        chunk_days, consumed = new_line_days(chunk)
        days |= chunk_days
        offsets[name] = offset + consumed
    cursor = json.dumps(offsets, sort_keys=True)
    if not days:
        return dg.SensorResult(skip_reason="no new lines", cursor=cursor)
    today = datetime.now(UTC).date()
    window = clip_range(min(days), max(days) + timedelta(days=REACH_DAYS), today)
    if window is None:
        return dg.SensorResult(
            skip_reason=f"new lines only for days outside the partitions: {sorted(days)}", cursor=cursor
        )
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=cursor, tags=range_tags(*window))], cursor=cursor
    )


schedules = [refresh_every_30_minutes]
sensors = [new_input_lines]
