"""The 30-minute schedule and the new-lines sensor ask for the right day ranges."""

import json
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from meta_pipeline.defs.automation import (
    RANGE_END,
    RANGE_START,
    new_input_lines,
    new_line_days,
    refresh_every_30_minutes,
)
from meta_pipeline.defs.partitions import REACH_DAYS
from meta_pipeline.defs.resources import DataRoot


def _signal(ts: str, run_id: str) -> str:
    return json.dumps({"ts": ts, "agent": "a", "run_id": run_id, "symbol": "BTC", "direction": "LONG"}) + "\n"


def test_schedule_covers_today_and_the_days_whose_horizons_reach_it():
    when = datetime(2025, 9, 10, 12, 30, tzinfo=UTC)
    request = refresh_every_30_minutes(dg.build_schedule_context(scheduled_execution_time=when))
    assert request.tags[RANGE_START] == (date(2025, 9, 10) - timedelta(days=REACH_DAYS)).isoformat()
    assert request.tags[RANGE_END] == "2025-09-10"


def test_new_line_days_reads_complete_lines_only():
    chunk = (
        _signal("2025-09-01T23:00:00-02:00", "r1") + "not json\n" + _signal("2025-09-03T01:00:00Z", "r2")
    ).encode()
    days, consumed = new_line_days(chunk + b'{"ts": "2025-09-09T00:00:00Z"')
    assert days == {date(2025, 9, 2), date(2025, 9, 3)}
    assert consumed == len(chunk)


def test_sensor_requests_new_days_once_and_resumes_from_its_cursor(tmp_path):
    (tmp_path / "alpha").mkdir()
    events = tmp_path / "alpha" / "events.jsonl"
    events.write_text(_signal("2025-09-01T10:00:00Z", "r1"))
    root = DataRoot(root=str(tmp_path))
    with dg.build_sensor_context(resources={"data_root": root}) as context:
        first = new_input_lines(context)
    [request] = first.run_requests
    assert request.tags[RANGE_START] == "2025-09-01"
    assert request.tags[RANGE_END] == (date(2025, 9, 1) + timedelta(days=REACH_DAYS)).isoformat()

    with dg.build_sensor_context(cursor=first.cursor, resources={"data_root": root}) as context:
        nothing_new = new_input_lines(context)
    assert not nothing_new.run_requests

    with events.open("a") as handle:
        handle.write(_signal("2025-09-05T10:00:00Z", "r2"))
    with dg.build_sensor_context(cursor=first.cursor, resources={"data_root": root}) as context:
        appended = new_input_lines(context)
    [request] = appended.run_requests
    assert request.tags[RANGE_START] == "2025-09-05"  # only the appended line's day, not day 1 again
    assert json.loads(appended.cursor)["signals"] == events.stat().st_size
