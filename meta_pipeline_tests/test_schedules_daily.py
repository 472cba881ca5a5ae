"""The daily schedules: the LP email at 07:10 UTC and failure forensics at 08:30 UTC, stopped until an
operator turns them on; and no other job — in particular not the 30-minute tick — sends the email or
runs the forensics."""

from datetime import UTC, datetime

import dagster as dg
import pytest

from meta_pipeline import names
from meta_pipeline.definitions import defs
from meta_pipeline.defs.automation import failure_forensics_daily, lp_email_daily, refresh_every_30_minutes
from meta_pipeline.defs.healing import heal_pending_rows

DAILY = [
    (lp_email_daily, names.LP_EMAIL_JOB, "10 7 * * *", {names.LP_EMAIL}),
    (failure_forensics_daily, names.FORENSICS_JOB, "30 8 * * *", {names.FAILURE_FORENSICS}),
]
PEOPLE_FACING = {dg.AssetKey(names.LP_EMAIL), dg.AssetKey(names.FAILURE_FORENSICS)}


def _assets_of(job_name: str) -> set[dg.AssetKey]:
    return set(defs.resolve_job_def(job_name).asset_layer.executable_asset_keys)


@pytest.mark.parametrize(("schedule", "job_name", "cron", "assets"), DAILY)
def test_daily_schedule_runs_its_job_once_a_day_in_utc_and_starts_stopped(schedule, job_name, cron, assets):
    resolved = defs.resolve_schedule_def(schedule.name)
    assert resolved.job_name == job_name
    assert resolved.cron_schedule == cron and resolved.execution_timezone == "UTC"
    assert resolved.default_status == dg.DefaultScheduleStatus.STOPPED
    assert len(resolved.description or "") > 60  # an operator reads it under Automation
    assert {k.to_user_string() for k in _assets_of(job_name)} == assets  # the job does only that


@pytest.mark.parametrize(("schedule", "job_name", "cron", "assets"), DAILY)
def test_daily_schedule_requests_one_run_per_utc_day(schedule, job_name, cron, assets):
    def request(when: datetime) -> dg.RunRequest:
        return schedule(dg.build_schedule_context(scheduled_execution_time=when))

    first = request(datetime(2025, 9, 10, 7, 10, tzinfo=UTC))
    assert isinstance(first, dg.RunRequest)
    assert first.run_key == request(datetime(2025, 9, 10, 7, 10, tzinfo=UTC)).run_key  # same day: one run
    assert first.run_key != request(datetime(2025, 9, 11, 7, 10, tzinfo=UTC)).run_key


def test_the_30_minute_job_and_the_supervisor_never_send_the_email_or_run_forensics():
    for job_name in (names.MAIN_JOB, names.SUPERVISOR_JOB, names.EXPORT_JOB, names.REPROCESS_JOB):
        assert not _assets_of(job_name) & PEOPLE_FACING, job_name
    assert defs.resolve_schedule_def(refresh_every_30_minutes.name).job_name == names.MAIN_JOB
    assert defs.resolve_sensor_def(heal_pending_rows.name).job_name == names.MAIN_JOB
    # and the supervisor's automation condition sensor does not pick them up either
    supervised = dg.AssetSelection.groups(names.SUPERVISOR_GROUP).resolve(defs.resolve_asset_graph())
    assert not supervised & PEOPLE_FACING


def test_which_automation_is_on_by_default():
    """Only what cannot do harm starts on: reaping provably dead runs, and healing days already run."""
    running = {
        s.name
        for s in [*defs.sensors, *defs.schedules]
        if s.default_status in (dg.DefaultSensorStatus.RUNNING, dg.DefaultScheduleStatus.RUNNING)
    }
    assert running == {"reap_dead_runs", heal_pending_rows.name}
