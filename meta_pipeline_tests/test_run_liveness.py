"""A killed run must not hold its pool slot for ever: ``meta_pipeline.run_liveness``.

The regression tests run the real scenario on a real SQLite DagsterInstance (a tmp DAGSTER_HOME
with ``concurrency: pools: default_limit: 1``): a run of an asset in pool ``exchange_api`` is
started in a subprocess, killed with SIGKILL while it holds the slot, and reaped. The reaper is
called directly (as the CLI does before a run, and the sensor does in the daemon), so no daemon
and no monitoring poll interval are involved.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest

from meta_pipeline import names, run_liveness
from meta_pipeline.defs.run_liveness import reap_dead_runs_sensor
from meta_pipeline.run_liveness import (
    RUN_BOOT_TAG,
    RUN_PID_START_TAG,
    RUN_PID_TAG,
    RUN_PROCESS_OF_RUN_TAG,
    RUN_STEP_PID_TAG,
    current_boot_id,
    process_alive,
    reap_dead_runs,
    record_run_process,
    run_process_tags,
)

POOL = names.EXCHANGE_POOL
TIMEOUT = 90  # generous: a loaded 2-core machine takes a few seconds to import dagster

DEFS_FILE = """
import os
import time

import dagster as dg

from meta_pipeline import names
from meta_pipeline.defs.run_liveness import record_this_process


@dg.asset(pool=names.EXCHANGE_POOL)
def slow_bars(context: dg.AssetExecutionContext) -> None:
    record_this_process(context)
    time.sleep(float(os.environ.get("SLOW_BARS_SECONDS", "0")))


defs = dg.Definitions(assets=[slow_bars])
"""

# the CLI/demo path: execute_in_process on the persistent instance in $DAGSTER_HOME
IN_PROCESS_RUN = """
import os, sys
import dagster as dg
import slow_bars_defs
from meta_pipeline.run_liveness import run_process_tags

run_id = os.environ.get("RUN_ID")
tags = run_process_tags(run_id) if run_id else None
with dg.DagsterInstance.get() as instance:
    job = slow_bars_defs.defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, run_id=run_id, tags=tags)
sys.exit(0 if result.success else 1)
"""

DAGSTER_YAML = """
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(DAGSTER_YAML)
    (tmp_path / "slow_bars_defs.py").write_text(DEFS_FILE)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.setenv("SLOW_BARS_SECONDS", "0")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.fixture
def instance(home: Path) -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.get() as instance:
        yield instance


@pytest.fixture
def spawn(home: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start a subprocess in its own session; kill its whole process group at teardown."""
    started: list[subprocess.Popen] = []

    def _spawn(args: list[str], **env: str) -> subprocess.Popen:
        full_env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(home), os.environ.get("PYTHONPATH", "")]),
            "SLOW_BARS_SECONDS": "600",
            **env,
        }
        log = open(home / f"subprocess-{len(started)}.log", "w")  # noqa: SIM115 - closed with the test
        proc = subprocess.Popen(
            args, cwd=home, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        proc.log = log  # type: ignore[attr-defined]
        started.append(proc)
        return proc

    yield _spawn
    for proc in started:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
        proc.log.close()  # type: ignore[attr-defined]


def wait_for(condition: Callable[[], object], what: str, *procs: subprocess.Popen):
    """Poll ``condition`` until truthy; fail early if one of ``procs`` exits, or after TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        for proc in procs:
            if proc.poll() is None:
                continue
            log = Path(proc.log.name).read_text()  # type: ignore[attr-defined]
            pytest.fail(f"subprocess exited ({proc.returncode}) before {what}:\n{log[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {TIMEOUT}s waiting for {what}")


def pool_info(instance: dg.DagsterInstance):
    return instance.event_log_storage.get_concurrency_info(POOL)


def claimed_by(instance: dg.DagsterInstance) -> list[str]:
    return [slot.run_id for slot in pool_info(instance).claimed_slots]


def run_holding_slot(instance: dg.DagsterInstance, pid_tag_value: str | None = None) -> dg.DagsterRun | None:
    """The STARTED run that claimed the pool slot and recorded its process (optionally: this pid)."""
    for run_id in claimed_by(instance):
        run = instance.get_run_by_id(run_id)
        if (
            run is not None
            and run.status == dg.DagsterRunStatus.STARTED
            and run.tags.get(RUN_PROCESS_OF_RUN_TAG) == run.run_id
            and (pid_tag_value is None or run.tags.get(RUN_PID_TAG) == pid_tag_value)
        ):
            return run
    return None


def kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=TIMEOUT)


def would_be_blocked(instance: dg.DagsterInstance) -> bool:
    """Ask the storage for the slot exactly as a step of another run would, then withdraw."""
    probe_run = f"probe-{uuid.uuid4()}"
    storage = instance.event_log_storage
    try:
        return not storage.claim_concurrency_slot(POOL, probe_run, "slow_bars").is_claimed
    finally:
        storage.free_concurrency_slots_for_run(probe_run)


def failure_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [
        entry.dagster_event.message or ""
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        if entry.dagster_event is not None
    ]


def materialize_in_thread(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """A second in-process run of the asset (no sleep); fails the test if it is not done in time."""
    import slow_bars_defs  # written into tmp_path by the ``home`` fixture

    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["result"] = dg.materialize([slow_bars_defs.slow_bars], instance=instance)
        except BaseException as exc:  # reported below
            box["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(TIMEOUT)
    assert not worker.is_alive(), f"second run still not done after {TIMEOUT}s: blocked by the pool?"
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=TIMEOUT)
    return proc.pid


def started_run(instance: dg.DagsterInstance, status=dg.DagsterRunStatus.STARTED, **tags: str) -> str:
    """A run in ``status`` holding the pool slot, tagged with ``tags`` (bound to its run id)."""
    import slow_bars_defs

    job = slow_bars_defs.defs.resolve_implicit_global_asset_job_def()
    run = instance.create_run_for_job(job_def=job, status=status)
    if tags:
        instance.add_run_tags(run.run_id, {RUN_PROCESS_OF_RUN_TAG: run.run_id, **tags})
    storage = instance.event_log_storage
    if not pool_info(instance).slot_count:
        storage.set_concurrency_slots(POOL, 10)  # room for several fake runs
    assert storage.claim_concurrency_slot(POOL, run.run_id, "slow_bars").is_claimed
    return run.run_id


def status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run.status


# --- the real scenario -----------------------------------------------------------------------


def test_killed_in_process_run_is_reaped_and_the_pool_is_usable_again(instance, spawn):
    proc = spawn([sys.executable, "-c", IN_PROCESS_RUN])
    first = wait_for(lambda: run_holding_slot(instance, str(proc.pid)), "the run to claim the slot", proc)
    assert first.tags[RUN_BOOT_TAG] == current_boot_id()
    assert not first.tags.get(RUN_STEP_PID_TAG)  # in process: the run worker runs the step

    kill9(proc)

    # the bug: the killed run stays STARTED and keeps the slot, so the next run would wait for ever
    assert status(instance, first.run_id) == dg.DagsterRunStatus.STARTED
    assert claimed_by(instance) == [first.run_id]
    assert would_be_blocked(instance)

    assert reap_dead_runs(instance) == [first.run_id]

    assert status(instance, first.run_id) == dg.DagsterRunStatus.FAILURE
    [message] = failure_messages(instance, first.run_id)
    assert f"run process {proc.pid} no longer exists" in message
    assert "pool slots were freed" in message
    info = pool_info(instance)
    assert info.claimed_slots == [] and info.pending_steps == []
    assert not would_be_blocked(instance)

    second = materialize_in_thread(instance)
    assert second.success
    assert claimed_by(instance) == []
    assert reap_dead_runs(instance) == []  # the finished second run is not touched


def test_killed_waiting_run_tagged_at_creation_is_reaped_too(instance, spawn):
    """A run killed while it waits for the slot: covered when its launcher tags it up front."""
    run_ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    procs = [spawn([sys.executable, "-c", IN_PROCESS_RUN], RUN_ID=run_id) for run_id in run_ids]

    def one_holds_one_waits() -> bool:
        info = pool_info(instance)
        claimed = {slot.run_id for slot in info.claimed_slots}
        # a waiting step has a pending row (assigned or not) but no slot
        waiting = {step.run_id for step in info.pending_steps} - claimed
        return len(claimed) == 1 and claimed | waiting == set(run_ids)

    wait_for(one_holds_one_waits, "one run to hold the slot and the other to wait for it", *procs)

    for proc in procs:
        kill9(proc)
    assert sorted(reap_dead_runs(instance)) == sorted(run_ids)
    info = pool_info(instance)
    assert info.claimed_slots == [] and info.pending_steps == []
    assert materialize_in_thread(instance).success


def test_multiprocess_run_is_reaped_only_when_run_and_step_processes_are_gone(instance, spawn, home):
    """``dagster asset materialize``: the step runs in a child that outlives a killed CLI."""
    cli = spawn(
        [sys.executable, "-m", "dagster", "asset", "materialize"]
        + ["-f", str(home / "slow_bars_defs.py"), "--select", "slow_bars"]
    )
    run = wait_for(lambda: run_holding_slot(instance, str(cli.pid)), "the CLI run to claim the slot", cli)
    step_pid = int(run.tags[RUN_STEP_PID_TAG])
    assert step_pid != cli.pid and process_alive(step_pid)

    kill9(cli)
    # the orphaned step child still works in the pool: its run is alive and keeps the slot
    assert reap_dead_runs(instance) == []
    assert claimed_by(instance) == [run.run_id]

    os.kill(step_pid, signal.SIGKILL)
    wait_for(lambda: not process_alive(step_pid), "the step process to die")
    assert reap_dead_runs(instance) == [run.run_id]
    assert status(instance, run.run_id) == dg.DagsterRunStatus.FAILURE
    assert claimed_by(instance) == []


# --- unit tests ------------------------------------------------------------------------------


def test_process_alive():
    assert process_alive(os.getpid())
    assert not process_alive(dead_pid())
    assert not process_alive(0) and not process_alive(-1)
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        if Path("/proc").is_dir():
            # exited but not waited for: a zombie counts as dead
            wait_for(lambda: not process_alive(zombie.pid), "the child to become a zombie")
    finally:
        zombie.wait(timeout=TIMEOUT)


def test_process_alive_treats_permission_error_as_alive(monkeypatch):
    def no_permission(pid, sig):
        raise PermissionError

    monkeypatch.setattr(os, "kill", no_permission)
    # whatever process holds this pid on the machine (even a zombie) must not decide the answer
    monkeypatch.setattr(run_liveness, "_proc_stat_fields", lambda pid: ["S"])
    assert process_alive(12345)


def test_live_process_is_never_reaped(instance):
    alive = started_run(instance, **{RUN_PID_TAG: str(os.getpid()), RUN_BOOT_TAG: current_boot_id()})
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        step_alive = started_run(
            instance,
            **{
                RUN_PID_TAG: str(dead_pid()),
                RUN_STEP_PID_TAG: str(sleeper.pid),
                RUN_BOOT_TAG: current_boot_id(),
            },
        )
        assert reap_dead_runs(instance) == []
        assert status(instance, alive) == status(instance, step_alive) == dg.DagsterRunStatus.STARTED
        assert sorted(claimed_by(instance)) == sorted([alive, step_alive])
    finally:
        sleeper.kill()
        sleeper.wait(timeout=TIMEOUT)


def test_run_from_another_boot_is_reaped_even_if_its_pid_is_taken(instance):
    run_id = started_run(instance, **{RUN_PID_TAG: str(os.getpid()), RUN_BOOT_TAG: "another-boot"})
    assert reap_dead_runs(instance) == [run_id]
    assert status(instance, run_id) == dg.DagsterRunStatus.FAILURE
    assert "rebooted" in failure_messages(instance, run_id)[0]
    assert claimed_by(instance) == []


def test_reused_pid_counts_as_gone(instance):
    if run_liveness.process_start_ticks(os.getpid()) is None:
        pytest.skip("no /proc start times here")
    run_id = started_run(
        instance,
        **{RUN_PID_TAG: str(os.getpid()), RUN_PID_START_TAG: "1", RUN_BOOT_TAG: current_boot_id()},
    )
    assert reap_dead_runs(instance) == [run_id]


def test_runs_without_our_tags_are_never_touched(instance):
    gone = str(dead_pid())
    untagged = started_run(instance)
    copied = started_run(instance, **{RUN_PID_TAG: gone, RUN_BOOT_TAG: current_boot_id()})
    # tags copied by a retry or re-execution name another run
    instance.add_run_tags(copied, {RUN_PROCESS_OF_RUN_TAG: str(uuid.uuid4())})
    garbage = started_run(instance, **{RUN_PID_TAG: "not-a-pid", RUN_BOOT_TAG: current_boot_id()})
    unknown_boot = started_run(instance, **{RUN_PID_TAG: gone, RUN_BOOT_TAG: "unknown"})

    assert reap_dead_runs(instance) == []
    for run_id in (untagged, copied, garbage, unknown_boot):
        assert status(instance, run_id) == dg.DagsterRunStatus.STARTED
        assert failure_messages(instance, run_id) == []


def test_reaping_twice_is_harmless(instance):
    run_id = started_run(instance, **{RUN_PID_TAG: str(dead_pid()), RUN_BOOT_TAG: current_boot_id()})
    assert reap_dead_runs(instance) == [run_id]
    assert reap_dead_runs(instance) == []
    assert len(failure_messages(instance, run_id)) == 1
    assert claimed_by(instance) == []


def test_concurrent_reapers_in_two_processes(instance, home):
    run_id = started_run(instance, **{RUN_PID_TAG: str(dead_pid()), RUN_BOOT_TAG: current_boot_id()})
    script = textwrap.dedent("""
        import dagster as dg
        from meta_pipeline.run_liveness import reap_dead_runs
        with dg.DagsterInstance.get() as instance:
            print(",".join(reap_dead_runs(instance)))
    """)
    reapers = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=os.environ)
        for _ in range(2)
    ]
    outputs = [reaper.communicate(timeout=TIMEOUT)[0].strip() for reaper in reapers]
    assert all(reaper.returncode == 0 for reaper in reapers)
    assert run_id in outputs  # at least one of them reaped it, neither crashed
    assert status(instance, run_id) == dg.DagsterRunStatus.FAILURE
    assert claimed_by(instance) == []
    assert reap_dead_runs(instance) == []


def test_canceling_run_is_marked_canceled(instance):
    run_id = started_run(
        instance,
        status=dg.DagsterRunStatus.CANCELING,
        **{RUN_PID_TAG: str(dead_pid()), RUN_BOOT_TAG: current_boot_id()},
    )
    assert reap_dead_runs(instance) == [run_id]
    assert status(instance, run_id) == dg.DagsterRunStatus.CANCELED
    assert claimed_by(instance) == []


def test_finished_run_still_holding_a_slot_gets_it_freed(instance):
    run_id = started_run(
        instance,
        status=dg.DagsterRunStatus.FAILURE,
        **{RUN_PID_TAG: str(dead_pid()), RUN_BOOT_TAG: current_boot_id()},
    )
    assert reap_dead_runs(instance) == [run_id]
    assert claimed_by(instance) == []
    assert failure_messages(instance, run_id) == []  # its status is not touched again


def test_record_run_process_in_process(instance):
    run_id = started_run(instance)
    tags = record_run_process(instance, run_id)
    assert tags[RUN_PID_TAG] == str(os.getpid())
    assert tags[RUN_BOOT_TAG] == current_boot_id()
    assert tags[RUN_PROCESS_OF_RUN_TAG] == run_id
    run = instance.get_run_by_id(run_id)
    assert run is not None and {k: run.tags[k] for k in tags} == tags
    assert reap_dead_runs(instance) == []  # that's us, alive
    assert run_process_tags(run_id) == {k: v for k, v in tags.items() if not k.startswith(RUN_STEP_PID_TAG)}


def test_boot_id_is_stable():
    assert current_boot_id() == current_boot_id()
    assert current_boot_id()


# --- the sensor ------------------------------------------------------------------------------


def test_sensor_reports_what_it_reaped(instance):
    assert reap_dead_runs_sensor.name == "reap_dead_runs"
    assert reap_dead_runs_sensor.minimum_interval_seconds == 30
    assert reap_dead_runs_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert not reap_dead_runs_sensor.targets
    dg.Definitions(sensors=[reap_dead_runs_sensor]).get_repository_def()  # loads without a job

    skip = reap_dead_runs_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(skip, dg.SkipReason) and skip.skip_message == "no dead runs"

    run_id = started_run(instance, **{RUN_PID_TAG: str(dead_pid()), RUN_BOOT_TAG: current_boot_id()})
    skip = reap_dead_runs_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(skip, dg.SkipReason) and run_id in skip.skip_message
    assert status(instance, run_id) == dg.DagsterRunStatus.FAILURE
