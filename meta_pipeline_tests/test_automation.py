"""The 30-minute schedule and the new-lines sensor ask for the right day ranges, follow rotated and
replaced files, and never raise on what the input files contain."""

import json
import os
from datetime import UTC, date, datetime, timedelta

import dagster as dg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meta_pipeline import input_watch
from meta_pipeline.defs.automation import day_clusters, new_input_lines, plan_runs, refresh_every_30_minutes
from meta_pipeline.defs.partitions import REACH_DAYS
from meta_pipeline.defs.resources import DataRoot
from meta_pipeline.names import RANGE_END_TAG, RANGE_START_TAG


def _signal(ts: str, run_id: str) -> str:
    return json.dumps({"ts": ts, "agent": "a", "run_id": run_id, "symbol": "BTC", "direction": "LONG"}) + "\n"


def _tick(root, cursor=None) -> dg.SensorResult:
    with dg.build_sensor_context(cursor=cursor, resources={"data_root": DataRoot(root=str(root))}) as context:
        return new_input_lines(context)


def _events(tmp_path, text=""):
    (tmp_path / "alpha").mkdir(exist_ok=True)
    events = tmp_path / "alpha" / "events.jsonl"
    events.write_text(text)
    return events


def _append(path, text):
    with path.open("a") as handle:
        handle.write(text)


def test_schedule_covers_today_and_the_days_whose_horizons_reach_it():
    when = datetime(2025, 9, 10, 12, 30, tzinfo=UTC)
    request = refresh_every_30_minutes(dg.build_schedule_context(scheduled_execution_time=when))
    assert request.tags[RANGE_START_TAG] == (date(2025, 9, 10) - timedelta(days=REACH_DAYS)).isoformat()
    assert request.tags[RANGE_END_TAG] == "2025-09-10"


def test_first_tick_starts_from_the_end_and_appended_days_are_requested_once(tmp_path):
    events = _events(tmp_path, _signal("2025-09-01T10:00:00Z", "r1"))
    first = _tick(tmp_path)
    assert not first.run_requests  # existing lines are the ingestion's business, never re-parsed here
    assert "starting from its end" in first.skip_reason.skip_message

    _append(
        events, _signal("2025-09-05T10:00:00Z", "r2") + '{"ts": "2025-09-09T00:00:00Z"'
    )  # last line half-written
    second = _tick(tmp_path, first.cursor)
    [request] = second.run_requests
    assert request.tags[RANGE_START_TAG] == "2025-09-05"
    assert request.tags[RANGE_END_TAG] == (date(2025, 9, 5) + timedelta(days=REACH_DAYS)).isoformat()
    assert not _tick(tmp_path, second.cursor).run_requests  # nothing new: no second run

    _append(events, ', "agent": "a", "run_id": "r3", "symbol": "BTC", "direction": "LONG"}\n')  # completed
    [request] = _tick(tmp_path, second.cursor).run_requests
    assert request.tags[RANGE_START_TAG] == "2025-09-09"


def test_a_cleared_cursor_skips_with_a_reason_instead_of_repeating_an_old_run_key(tmp_path):
    events = _events(tmp_path, _signal("2025-09-01T10:00:00Z", "r1"))
    first = _tick(tmp_path)
    _append(events, _signal("2025-09-02T10:00:00Z", "r2"))
    assert _tick(tmp_path, first.cursor).run_requests
    reset = _tick(tmp_path, cursor=None)
    assert not reset.run_requests and "starting from its end" in reset.skip_reason.skip_message


def test_rotation_reads_the_old_files_tail_and_the_new_file_even_when_it_grew_past_the_old_offset(tmp_path):
    events = _events(tmp_path, _signal("2025-09-01T10:00:00Z", "r1"))
    cursor = _tick(tmp_path).cursor
    _append(events, _signal("2025-09-02T10:00:00Z", "r-tail"))  # written just before the rotation
    os.rename(events, events.with_name("events.jsonl.1"))
    events.write_text("".join(_signal(f"2025-09-{d:02d}T10:00:00Z", f"n{d}") for d in (6, 7, 8, 9, 10)))
    result = _tick(tmp_path, cursor)
    starts = sorted(r.tags[RANGE_START_TAG] for r in result.run_requests)
    assert starts == ["2025-09-02", "2025-09-06"]  # the old file's tail, then the new file from its start


def test_a_replacement_of_the_same_size_is_noticed(tmp_path):
    events = _events(tmp_path, _signal("2025-09-01T10:00:00Z", "r1"))
    cursor = _tick(tmp_path).cursor
    replacement = tmp_path / "alpha" / "new.jsonl"
    replacement.write_text(_signal("2025-09-04T10:00:00Z", "r1"))  # same length, other content
    assert replacement.stat().st_size == events.stat().st_size
    os.replace(replacement, events)
    [request] = _tick(tmp_path, cursor).run_requests
    assert request.tags[RANGE_START_TAG] == "2025-09-04"


def test_future_and_pre_start_days_are_clipped_and_reported(tmp_path):
    events = _events(tmp_path)
    cursor = _tick(tmp_path).cursor
    _append(events, _signal("2100-01-01T00:00:00Z", "future") + _signal("2025-09-03T00:00:00Z", "ok"))
    result = _tick(tmp_path, cursor)
    [request] = result.run_requests
    assert request.tags[RANGE_START_TAG] == "2025-09-03"
    assert request.tags[RANGE_END_TAG] <= datetime.now(UTC).date().isoformat()


def test_one_late_line_for_an_old_day_does_not_run_every_day_in_between():
    clusters = day_clusters({date(2025, 1, 5), date(2025, 9, 1), date(2025, 9, 2)}, REACH_DAYS)
    assert clusters == [
        (date(2025, 1, 5), date(2025, 1, 5) + timedelta(days=REACH_DAYS)),
        (date(2025, 9, 1), date(2025, 9, 2) + timedelta(days=REACH_DAYS)),
    ]
    many = {date(2025, 1, 1) + timedelta(days=10 * i) for i in range(20)}
    ranges, outliers = plan_runs(many, date(2025, 12, 31))
    assert len(ranges) <= 4 and not outliers
    covered = {
        d
        for first, last in ranges
        for d in (first + timedelta(days=i) for i in range((last - first).days + 1))
    }
    assert many <= covered  # nothing dropped: the oldest clusters are merged into one run


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunk=st.lists(st.one_of(st.binary(max_size=300), st.text(max_size=200).map(str.encode)), max_size=20))
def test_the_sensor_never_raises_on_input_content(tmp_path_factory, chunk):
    root = tmp_path_factory.mktemp("root")
    events = _events(root)
    cursor = _tick(root).cursor
    hostile = [
        b'{"ts": "9999-12-31T23:59:59+14:00"}',
        b'{"ts": "1600-01-01T00:00:00Z"}',
        b'{"ts": "\\ud800"}',
        b"[" * 100_000,
        b'{"ts": ' + b"9" * 5000 + b"}",
    ]
    with events.open("ab") as handle:
        handle.write(b"\n".join([*hostile, *chunk]) + b"\n")
    result = _tick(root, cursor)  # must not raise
    assert json.loads(result.cursor)["signals"]["offset"] == events.stat().st_size


def test_input_watch_resumes_from_a_position_after_a_truncation(tmp_path):
    events = _events(tmp_path, _signal("2025-09-01T10:00:00Z", "r1") * 3)
    position = input_watch.look_at(events, None).position
    events.write_text("")  # truncated in place: same inode, and the first bytes are gone
    _append(events, _signal("2025-09-07T10:00:00Z", "r9"))
    look = input_watch.look_at(events, position)
    assert look.days == {date(2025, 9, 7)} and look.notes


def test_the_export_is_rebuilt_after_backfills_not_after_ticks():
    from meta_pipeline.defs.automation import covers_more_than_a_tick

    tick = {
        RANGE_START_TAG: "2025-09-08",
        RANGE_END_TAG: (date(2025, 9, 8) + timedelta(days=REACH_DAYS)).isoformat(),
    }
    assert not covers_more_than_a_tick(tick)
    assert covers_more_than_a_tick({RANGE_START_TAG: "2025-09-01", RANGE_END_TAG: "2025-09-30"})
    assert covers_more_than_a_tick({"dagster/backfill": "abc"})
    assert not covers_more_than_a_tick({})


def test_a_line_longer_than_a_read_chunk_does_not_stop_the_sensor(tmp_path, monkeypatch):
    monkeypatch.setattr(input_watch, "MAX_CHUNK_BYTES", 1000)
    events = _events(tmp_path)
    position = input_watch.look_at(events, None).position
    _append(events, '{"pad": "' + "x" * 5000 + '"}\n' + _signal("2025-09-03T10:00:00Z", "r1"))
    days = set()
    for _ in range(10):  # a few looks step over the long line, then read the next one
        look = input_watch.look_at(events, position)
        position, days = look.position, days | look.days
    assert days == {date(2025, 9, 3)} and position.offset == events.stat().st_size


def test_a_burst_over_twenty_days_is_one_run_and_the_same_bytes_never_launch_twice(tmp_path):
    events = _events(tmp_path, _signal("2025-08-01T10:00:00Z", "r0"))
    cursor = _tick(tmp_path).cursor
    days = [date(2025, 8, 10) + timedelta(days=i) for i in range(20)]
    partial = '{"ts": "2025-09-20T00:00:00Z", "agent": "a"'  # the writer is still writing this line
    _append(
        events, "".join(_signal(f"{d}T{h:02d}:00:00Z", f"b{d}{h}") for d in days for h in (1, 13)) + partial
    )
    burst = _tick(tmp_path, cursor)
    [request] = burst.run_requests
    assert request.tags[RANGE_START_TAG] == days[0].isoformat()
    assert request.tags[RANGE_END_TAG] == (days[-1] + timedelta(days=REACH_DAYS)).isoformat()
    # the half-written line is not consumed: the position stops at the last newline
    assert json.loads(burst.cursor)["signals"]["offset"] == events.stat().st_size - len(partial)

    again = _tick(tmp_path, burst.cursor)
    assert not again.run_requests and again.cursor == burst.cursor  # same bytes: no second run

    _append(events, ', "run_id": "late", "symbol": "BTC", "direction": "LONG"}\n')  # completed
    [completed] = _tick(tmp_path, burst.cursor).run_requests
    assert completed.tags[RANGE_START_TAG] == "2025-09-20"
    assert completed.run_key != request.run_key


def test_a_truncated_file_is_read_from_its_start_once(tmp_path):
    events = _events(tmp_path, _signal("2025-09-01T10:00:00Z", "r1") * 5)
    cursor = _tick(tmp_path).cursor
    with events.open("r+") as handle:  # truncated in place (copytruncate): same inode
        handle.truncate(0)
    _append(events, _signal("2025-09-07T10:00:00Z", "r9"))
    result = _tick(tmp_path, cursor)
    [request] = result.run_requests
    assert request.tags[RANGE_START_TAG] == "2025-09-07"
    assert not _tick(tmp_path, result.cursor).run_requests


def test_rotation_to_a_larger_file_reads_the_old_tail_and_the_whole_new_file_once(tmp_path):
    events = _events(tmp_path, _signal("2025-09-01T10:00:00Z", "r1"))
    cursor = _tick(tmp_path).cursor
    _append(events, _signal("2025-09-02T10:00:00Z", "tail"))
    os.rename(events, events.with_name("events.jsonl.1"))
    new_days = [date(2025, 9, 3) + timedelta(days=i) for i in range(10)]
    events.write_text("".join(_signal(f"{d}T10:00:00Z", f"n{d}") for d in new_days))  # larger than the old
    result = _tick(tmp_path, cursor)
    [request] = result.run_requests  # the old tail and the new file's days are consecutive: one run
    assert request.tags[RANGE_START_TAG] == "2025-09-02"
    assert request.tags[RANGE_END_TAG] == (new_days[-1] + timedelta(days=REACH_DAYS)).isoformat()
    assert not _tick(tmp_path, result.cursor).run_requests
