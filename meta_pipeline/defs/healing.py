"""``heal_pending_rows``: a reconciled day whose rows wait for bars is run again once those bars exist.

A day's 24 h rows need the bars of the days after it (``REACH_DAYS``). When days are run one at a
time — a backfill done as separate daily runs, the new-lines sensor's runs, a command-line run per
day — day D is reconciled before the bars of D+1 and D+2 are fetched, and its rows stay ``pending``
although a later run has stored the bars they wait for. The 30-minute schedule re-runs only the days
whose horizons still reach today; this sensor covers the days before them:

* it reads, for each of the last ``HEAL_LOOKBACK_DAYS`` days before the schedule's window, the latest
  materialization of ``reconciled_trades`` and of ``price_bars`` (two grouped queries of the event
  log, then the metadata of the few candidate materializations) — never a scan of the history;
* a day is healed when its latest reconciliation recorded pending rows and a ``price_bars`` day its
  horizons reach was materialized after it;
* the days to heal become range runs of the main job (neighbouring days merged, as the schedule's
  and the new-lines sensor's runs are), each with a run key made of the materialization ids it
  acts on, so the same state never starts two runs; the cursor remembers what was requested;
* it waits while a run of the pipeline is queued or in progress (the state it would act on is
  about to change).

A healing run materializes ``price_bars`` of its days before ``reconciled_trades``, so once it has
run, its days are newer than their bars: nothing is requested again until bars change again. The
days the schedule covers (today and the ``REACH_DAYS`` before it) are never requested here: their
pending rows may simply wait for the future, and the schedule re-runs them every 30 minutes.
"""

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from meta_pipeline import names, price_store
from meta_pipeline.defs.automation import at_most_runs_per_tick, range_tags
from meta_pipeline.defs.environment import SETTINGS
from meta_pipeline.defs.jobs import main_job
from meta_pipeline.defs.partitions import REACH_DAYS

HEAL_LOOKBACK_DAYS = 35
# what reconciliation.py records on each materialization (a range run records its totals on every
# day of the range; a per-day list of the days with pending rows is used when present)
PENDING_KEY = "pending"
PENDING_DAYS_KEY = "pending_days"
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


@dataclass(frozen=True)
class DayState:
    """What the event log says about one reconciled day."""

    day: date
    reconciled_id: int  # storage id of the day's latest reconciled_trades materialization
    newest_bars_id: int  # the largest latest-materialization storage id of price_bars its horizons reach
    pending: bool  # that reconciliation recorded pending rows (read only when newer bars exist)

    @property
    def waits_for_stored_bars(self) -> bool:
        return self.pending and self.newest_bars_id > self.reconciled_id

    def as_cursor(self) -> list[int]:
        return [self.reconciled_id, self.newest_bars_id]


def utc_today() -> date:
    return datetime.now(UTC).date()


def healable_days(today: date) -> list[date]:
    """The days this sensor looks at: at most ``HEAL_LOOKBACK_DAYS`` days before the schedule's window
    (today and the ``REACH_DAYS`` days before it), from the first partition on."""
    last = today - timedelta(days=REACH_DAYS + 1)
    first = max(SETTINGS.start_date, last - timedelta(days=HEAL_LOOKBACK_DAYS - 1))
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def pending_on(metadata: Mapping[str, dg.MetadataValue], day: str) -> bool:
    """Whether a reconciled_trades materialization of ``day`` recorded pending rows."""
    per_day = metadata.get(PENDING_DAYS_KEY)
    if per_day is not None:
        return day in (per_day.value or ())
    total = metadata.get(PENDING_KEY)  # a range run's total: may name another day's rows (one extra run)
    return bool(total is not None and total.value)


def heal_ranges(days: Iterable[date]) -> list[tuple[date, date]]:
    """Day ranges to run: days with at most ``REACH_DAYS`` days between them share a run (those are cheap
    to recompute; a second run is not), and beyond ``MAX_RUNS_PER_TICK`` ranges the oldest are merged."""
    ranges: list[list[date]] = []
    for day in sorted(set(days)):
        if ranges and (day - ranges[-1][1]).days <= REACH_DAYS + 1:
            ranges[-1][1] = day
        else:
            ranges.append([day, day])
    return at_most_runs_per_tick([(first, last) for first, last in ranges])


def plan_healing(
    states: Iterable[DayState], requested: Mapping[str, list[int]]
) -> tuple[list[dg.RunRequest], dict[str, list[int]]]:
    """The run requests for the days whose pending rows can mature now and were not requested in this
    very state before, and the new cursor (the state each requested day was requested in)."""
    states = {s.day: s for s in states}
    todo = {
        day: s
        for day, s in states.items()
        if s.waits_for_stored_bars and requested.get(day.isoformat()) != s.as_cursor()
    }
    cursor = {
        key: value for key, value in requested.items() if date.fromisoformat(key) in states
    }  # forget the days that left the window
    requests = []
    for first, last in heal_ranges(todo):
        in_range = [s for day, s in sorted(states.items()) if first <= day <= last]
        # the run key names the materializations acted on: the same state never starts two runs
        state_id = json.dumps([[s.day.isoformat(), *s.as_cursor()] for s in in_range])
        digest = hashlib.sha1(state_id.encode()).hexdigest()[:16]
        healed = [s for s in in_range if s.day in todo]
        requests.append(
            dg.RunRequest(
                run_key=f"heal:{first}:{last}:{digest}",
                tags={**range_tags(first, last), names.HEALING_TAG: str(len(healed))},
            )
        )
        cursor.update({s.day.isoformat(): s.as_cursor() for s in healed})
    return requests, cursor


def day_states(instance: dg.DagsterInstance, days: list[date]) -> list[DayState]:
    """The latest reconciliation of each of ``days`` that recorded pending rows, and the newest
    materialization of the bars its horizons reach (bounded: two grouped queries and one read of
    the candidate materializations)."""
    if not days:
        return []
    keys = {d.isoformat() for d in days}
    reconciled = instance.get_latest_storage_id_by_partition(
        dg.AssetKey(names.RECONCILED_TRADES), dg.DagsterEventType.ASSET_MATERIALIZATION, keys
    )
    if not reconciled:
        return []
    bar_keys = {b.isoformat() for d in days for b in price_store.window(d, REACH_DAYS)}
    bars = instance.get_latest_storage_id_by_partition(
        dg.AssetKey(names.PRICE_BARS), dg.DagsterEventType.ASSET_MATERIALIZATION, bar_keys
    )
    newest_bars = {
        key: max(bars.get(d.isoformat(), 0) for d in price_store.window(date.fromisoformat(key), REACH_DAYS))
        for key in reconciled
    }
    candidates = [key for key, storage_id in reconciled.items() if newest_bars[key] > storage_id]
    if not candidates:
        return [DayState(date.fromisoformat(k), reconciled[k], newest_bars[k], False) for k in reconciled]
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(names.RECONCILED_TRADES),
            storage_ids=[reconciled[k] for k in candidates],
        ),
        limit=len(candidates),
    ).records
    pending = {
        record.partition_key
        for record in records
        if record.asset_materialization is not None
        and pending_on(record.asset_materialization.metadata, record.partition_key)
    }
    return [DayState(date.fromisoformat(k), reconciled[k], newest_bars[k], k in pending) for k in reconciled]


def _requested(cursor: str | None) -> dict[str, list[int]]:
    try:
        raw = json.loads(cursor) if cursor else {}
        return {k: list(v) for k, v in raw.items() if isinstance(v, list)} if isinstance(raw, dict) else {}
    except (ValueError, TypeError):
        return {}  # an unreadable cursor is a cleared one: the run keys still stop duplicates


def pipeline_runs_in_flight(instance: dg.DagsterInstance) -> list[str]:
    """Runs queued or in progress that write reconciled_trades (the main and reprocess jobs, and
    asset backfills launched from the UI)."""
    reconciled = dg.AssetKey(names.RECONCILED_TRADES)
    return [
        run.run_id
        for run in instance.get_runs(filters=dg.RunsFilter(statuses=ACTIVE_STATUSES), limit=200)
        if run.job_name in (names.MAIN_JOB, names.REPROCESS_JOB)
        or (run.asset_selection is not None and reconciled in run.asset_selection)
    ]


@dg.sensor(
    job=main_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Heals pending rows: a reconciled day whose rows waited for bars (days run one at a time, "
        "before the bars of the days after them were fetched) is run again once a later run has "
        f"stored those bars — one range run of the main job per group of days, at most once per "
        f"state of the event log. Looks at the {HEAL_LOOKBACK_DAYS} days before the ones the "
        "30-minute schedule refreshes (it never runs the schedule's days), and waits while a run "
        "of the pipeline is queued or in progress. On by default: it only re-runs days already run "
        "on this instance, with bars those runs stored."
    ),
)
def heal_pending_rows(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    requested = _requested(context.cursor)
    busy = pipeline_runs_in_flight(context.instance)
    if busy:
        return dg.SensorResult(
            skip_reason=f"waiting: {len(busy)} pipeline run(s) queued or in progress ({', '.join(busy[:3])})",
            cursor=context.cursor,
        )
    days = healable_days(utc_today())
    states = day_states(context.instance, days)
    requests, cursor = plan_healing(states, requested)
    new_cursor = json.dumps(cursor, sort_keys=True)
    if not requests:
        window = f"{days[0]} … {days[-1]}" if days else "none yet"
        return dg.SensorResult(
            skip_reason=(
                f"no reconciled day before the schedule's window ({window}) has pending rows and bars "
                "stored after it" + (", other than those already requested" if cursor else "")
            ),
            cursor=new_cursor,
        )
    for request in requests:
        context.log.info(
            f"healing {request.tags[names.RANGE_START_TAG]} … {request.tags[names.RANGE_END_TAG]}: "
            f"{request.tags[names.HEALING_TAG]} day(s) with pending rows whose bars are now stored"
        )
    return dg.SensorResult(run_requests=requests, cursor=new_cursor)
