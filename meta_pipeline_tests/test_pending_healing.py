"""Pending rows heal by themselves: days run one at a time leave 24 h rows waiting for the bars of the
next days; once later runs stored those bars, the heal_pending_rows sensor asks for one range run
over them, never twice for the same state, and nothing once they matured.

Real runs of the real assets on a temporary data root with the ``files`` price source over the
committed Binance klines (no network), on one ephemeral instance the sensor then reads."""

import json
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest

from meta_pipeline import names
from meta_pipeline.defs import automation, healing
from meta_pipeline.defs.healing import DayState, heal_pending_rows, heal_ranges, plan_healing
from meta_pipeline.defs.partitions import REACH_DAYS
from meta_pipeline.defs.resources import DataRoot, IngestionPolicy, PriceSources, ReconciliationPolicy
from meta_pipeline.storage import Warehouse
from meta_pipeline_tests.fake_exchange import MARKET_DATA_DIR
from meta_pipeline_tests.pipeline import ALL_ASSETS

PIPELINE = [a for a in ALL_ASSETS if a.key != dg.AssetKey(names.RECONCILED_EXPORT)]  # the main job's assets
D = date(2024, 3, 5)  # BTCUSDT bars exist for 2024-03-01 … 2024-03-22


def _day(offset: int) -> str:
    return (D + timedelta(days=offset)).isoformat()


def _root(path: Path, days: int) -> Path:
    """Signals at 10:00 and 20:00 on each of ``days`` days from D: their 24 h exits fall on the next day."""
    (path / "alpha").mkdir(parents=True)
    (path / "telemetry").mkdir(parents=True)
    lines = [
        json.dumps(
            {
                "ts": f"{_day(i)}T{hour}:00:00Z",
                "agent": "a",
                "run_id": f"r{i}-{hour}",
                "symbol": "BTC",
                "direction": "LONG",
            }
        )
        for i in range(days)
        for hour in ("10", "20")
    ]
    (path / names.SIGNALS_FILE).write_text("\n".join(lines) + "\n")
    (path / names.TELEMETRY_FILE).write_text("")
    return path


def _resources(root: Path) -> dict:
    return {
        "data_root": DataRoot(root=str(root)),
        "ingestion_policy": IngestionPolicy(),
        "price_sources": PriceSources(
            sources=["files"],
            binance_base_url="http://127.0.0.1:9",  # never used: files only
            coinbase_base_url="http://127.0.0.1:9",
            bars_dir=str(MARKET_DATA_DIR),
        ),
        "reconciliation_policy": ReconciliationPolicy(),
    }


def _run(root: Path, instance: dg.DagsterInstance, first: str, last: str, tags: dict | None = None) -> None:
    """One run of the main job's assets over first … last, as the sensor's request would start it."""
    result = dg.materialize(
        PIPELINE,
        resources=_resources(root),
        instance=instance,
        tags={names.RANGE_START_TAG: first, names.RANGE_END_TAG: last, **(tags or {})},
    )
    assert result.success


def _tick(instance: dg.DagsterInstance, cursor: str | None = None) -> dg.SensorResult:
    with dg.build_sensor_context(instance=instance, cursor=cursor) as context:
        return heal_pending_rows(context)


def _pending_24h(root: Path, day: str) -> int:
    rows = Warehouse(root / names.WAREHOUSE_DIR).read_partition(names.RECONCILED_TRADES, day)
    return int(((rows["status"].astype(str) == "pending") & (rows["horizon_hours"] == 24)).sum())


@pytest.fixture
def today(monkeypatch):
    """The sensor's 'today': far enough after D that D is before the 30-minute schedule's window."""
    monkeypatch.setattr(healing, "utc_today", lambda: D + timedelta(days=12))


def test_a_day_run_before_its_next_days_bars_is_healed_once_and_only_once(tmp_path, today):
    root, instance = _root(tmp_path / "root", days=1), dg.DagsterInstance.ephemeral()
    _run(root, instance, _day(0), _day(0))
    assert _pending_24h(root, _day(0)) == 2  # the 24 h exits are on D+1, whose bars are not stored
    first = _tick(instance)
    assert not first.run_requests  # the bars it waits for do not exist yet: a run would not help

    _run(root, instance, _day(1), _day(1))  # a later run stores D+1's bars (for D's instruments too)
    assert _pending_24h(root, _day(0)) == 2  # …but D was not run again
    second = _tick(instance, first.cursor)
    [request] = second.run_requests
    assert request.tags[names.RANGE_START_TAG] == _day(0) and request.tags[names.RANGE_END_TAG] == _day(0)
    assert request.job_name in (None, names.MAIN_JOB)

    again = _tick(instance, second.cursor)
    assert not again.run_requests  # same state: no second request
    assert _tick(instance).run_requests[0].run_key == request.run_key  # a cleared cursor: same run key

    _run(root, instance, _day(0), _day(0), tags=request.tags)  # the healing run
    assert _pending_24h(root, _day(0)) == 0
    assert not _tick(instance, second.cursor).run_requests
    assert not _tick(instance).run_requests  # healed: nothing to do even without a cursor


def test_days_run_one_at_a_time_are_healed_by_one_range_run(tmp_path, today):
    """What a backfill run as separate daily runs leaves: every day but the last waits for bars a
    later run stored. One request covers them; after it ran, every one of them has matured."""
    days = 5
    root, instance = _root(tmp_path / "root", days=days), dg.DagsterInstance.ephemeral()
    for i in range(days):
        _run(root, instance, _day(i), _day(i))
    assert all(_pending_24h(root, _day(i)) == 2 for i in range(days))
    result = _tick(instance)
    [request] = result.run_requests
    # the last day waits for D+5's bars, which no run stored: running it again would not help
    assert (request.tags[names.RANGE_START_TAG], request.tags[names.RANGE_END_TAG]) == (
        _day(0),
        _day(days - 2),
    )
    assert request.tags[names.HEALING_TAG] == str(days - 1)

    _run(root, instance, _day(0), _day(days - 2), tags=request.tags)
    assert [_pending_24h(root, _day(i)) for i in range(days)] == [0] * (days - 1) + [2]
    assert not _tick(instance, result.cursor).run_requests
    assert not _tick(instance).run_requests


def test_days_the_schedule_refreshes_are_left_to_it(tmp_path, monkeypatch):
    root, instance = _root(tmp_path / "root", days=1), dg.DagsterInstance.ephemeral()
    _run(root, instance, _day(0), _day(0))
    _run(root, instance, _day(1), _day(1))
    monkeypatch.setattr(healing, "utc_today", lambda: D + timedelta(days=REACH_DAYS))  # D in its window
    assert not _tick(instance).run_requests
    monkeypatch.setattr(healing, "utc_today", lambda: D + timedelta(days=REACH_DAYS + 1))  # just left it
    assert len(_tick(instance).run_requests) == 1
    monkeypatch.setattr(
        healing, "utc_today", lambda: D + timedelta(days=REACH_DAYS + healing.HEAL_LOOKBACK_DAYS + 1)
    )
    assert not _tick(instance).run_requests  # beyond the lookback: not read at all


def test_nothing_is_requested_while_a_pipeline_run_is_in_flight(tmp_path, today):
    root, instance = _root(tmp_path / "root", days=1), dg.DagsterInstance.ephemeral()
    _run(root, instance, _day(0), _day(0))
    _run(root, instance, _day(1), _day(1))
    run = instance.add_run(
        dg.DagsterRun(job_name=names.MAIN_JOB, run_id="r-busy", status=dg.DagsterRunStatus.STARTED)
    )
    busy = _tick(instance)
    assert not busy.run_requests and "r-busy" in busy.skip_reason.skip_message
    instance.report_run_canceled(run)
    assert len(_tick(instance).run_requests) == 1


# ---- the pure planning, without runs


def _state(offset: int, reconciled: int, bars: int, pending: bool = True) -> DayState:
    return DayState(D + timedelta(days=offset), reconciled, bars, pending)


def test_only_pending_days_with_newer_bars_are_planned_and_neighbours_share_a_run():
    states = [
        _state(0, 10, 20),  # pending, bars newer: heal
        _state(1, 11, 9),  # pending, bars older: waits for bars
        _state(2, 12, 30, pending=False),  # bars newer but nothing pending
        _state(3, 13, 40),  # heal, within REACH_DAYS + 1 of day 0: same run
        _state(20, 14, 50),  # heal, far away: its own run
    ]
    requests, cursor = plan_healing(states, {})
    spans = [(r.tags[names.RANGE_START_TAG], r.tags[names.RANGE_END_TAG]) for r in requests]
    assert spans == [(_day(0), _day(3)), (_day(20), _day(20))]
    assert set(cursor) == {_day(0), _day(3), _day(20)}
    # the same state again: nothing; the bars of day 3 changed again: only what changed
    assert plan_healing(states, cursor)[0] == []
    moved = [*states[:3], _state(3, 13, 41), states[4]]
    [again] = plan_healing(moved, cursor)[0]
    assert again.tags[names.RANGE_START_TAG] == again.tags[names.RANGE_END_TAG] == _day(3)
    assert again.run_key not in {r.run_key for r in requests}


def test_many_scattered_days_are_at_most_a_few_runs_and_none_is_dropped():
    days = [D + timedelta(days=7 * i) for i in range(10)]
    ranges = heal_ranges(days)
    assert len(ranges) <= automation.MAX_RUNS_PER_TICK
    assert all(any(a <= d <= b for a, b in ranges) for d in days)


def test_pending_is_read_per_day_when_the_run_records_it_and_from_the_total_otherwise():
    total = {"pending": dg.MetadataValue.int(3)}
    assert healing.pending_on(total, _day(0))
    assert not healing.pending_on({"pending": dg.MetadataValue.int(0)}, _day(0))
    assert not healing.pending_on({}, _day(0))  # a materialization reported without counts
    per_day = {**total, "pending_days": dg.MetadataValue.json([_day(2)])}
    assert not healing.pending_on(per_day, _day(0)) and healing.pending_on(per_day, _day(2))


def test_the_pending_count_is_recorded_on_each_reconciled_materialization(tmp_path):
    """The sensor reads what reconciliation records: keep the two in step."""
    root, instance = _root(tmp_path / "root", days=1), dg.DagsterInstance.ephemeral()
    _run(root, instance, _day(0), _day(0))
    event = instance.get_latest_materialization_event(dg.AssetKey(names.RECONCILED_TRADES))
    metadata = event.asset_materialization.metadata
    assert metadata[healing.PENDING_KEY].value == 3  # 20:00 + 4 h and both 24 h exits are on D+1
