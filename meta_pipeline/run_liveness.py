"""Find runs whose process is gone, mark them failed and free their pool slots.

Why: a run that holds a slot of a Dagster pool (``price_bars`` holds the single ``exchange_api``
slot) gives it back only when its own process finishes the step. After ``kill -9`` of a CLI
materialization (``dagster asset materialize …`` or ``meta-pipeline demo``) the run stays STARTED
for ever and keeps the slot, so every later run waits at "Step blocked by limit for pool …".
Dagster's run monitoring does not help there: it runs only in the daemon, polls every 120 s by
default, never checks runs started from the CLI, and ``free_slots_after_run_end_seconds`` frees
slots only of runs Dagster already knows have ended.

How: when the step that takes the slot starts, :func:`record_run_process` tags the run with the
process ids that keep it alive and with the machine's boot id. :func:`reap_dead_runs` (called
before a CLI run starts, and periodically by the ``reap_dead_runs`` sensor) marks a tagged,
unfinished run failed and frees its slots once every recorded process is provably gone.

What it never does: it never touches a run without these tags (runs of other tools, runs whose
pool step has not started), a run whose tags were copied from another run (retries and
re-executions copy tags), or a run any of whose recorded processes is still alive. It never kills
a process and never frees a slot held by another run.

Tags (all under ``meta_pipeline/``):

``pid`` / ``pid_start``
    The process running the run (the run worker, which orchestrates the steps and frees their
    slots) and its start time in clock ticks after boot (Linux; guards against pid reuse).
``step_pid`` / ``step_pid_start``
    Only when the step runs in a child process of the run worker (multiprocess executor, e.g.
    ``dagster asset materialize``): that child. The run counts as dead only when both are gone,
    since an orphaned step child may still be talking to the exchange.
``boot_id``
    The machine's boot id: after a reboot no recorded process can be alive.
``process_of_run``
    The run id the tags were recorded for.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

TAG_PREFIX = "meta_pipeline/"
RUN_PID_TAG = f"{TAG_PREFIX}pid"
RUN_PID_START_TAG = f"{TAG_PREFIX}pid_start"
RUN_STEP_PID_TAG = f"{TAG_PREFIX}step_pid"
RUN_STEP_PID_START_TAG = f"{TAG_PREFIX}step_pid_start"
RUN_BOOT_TAG = f"{TAG_PREFIX}boot_id"
RUN_PROCESS_OF_RUN_TAG = f"{TAG_PREFIX}process_of_run"

UNKNOWN_BOOT_ID = "unknown"

# Runs that may hold a slot while nobody will ever end them. QUEUED and NOT_STARTED runs have no
# process yet (the run coordinator or launcher still owns them) and hold no slot.
_UNFINISHED_STATUSES = (
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)
_FINISHED_STATUSES = (
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
)


@functools.cache
def current_boot_id() -> str:
    """An id of the current boot of this machine, stable for the machine's uptime.

    Linux: ``/proc/sys/kernel/random/boot_id``; else the boot time (``btime`` in ``/proc/stat``,
    or ``sysctl kern.boottime`` on macOS/BSD); else ``"unknown"``, which never counts as a
    different boot.
    """
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        if boot_id:
            return boot_id
    except OSError:
        pass
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return f"btime:{line.split()[1]}"
    except (OSError, IndexError):
        pass
    try:
        out = subprocess.run(
            ["sysctl", "-n", "kern.boottime"], capture_output=True, text=True, timeout=5, check=True
        ).stdout
        # "{ sec = 1700000000, usec = 123456 } Tue Nov 14 …"
        sec = out.split("sec =", 1)[1].split(",", 1)[0].strip()
        if sec.isdigit():
            return f"boottime:{sec}"
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    return UNKNOWN_BOOT_ID


def _proc_stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` from the state on (field 3 onwards), or None off Linux/if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may itself contain spaces or ")"
    return text[text.rfind(")") + 2 :].split()


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks after boot (Linux ``/proc``), or None if unknown."""
    fields = _proc_stat_fields(pid)
    try:
        return int(fields[19]) if fields else None  # field 22 of /proc/<pid>/stat
    except (IndexError, ValueError):
        return None


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists and is not a zombie.

    ``os.kill(pid, 0)`` semantics: no such process → dead, no permission to signal it → alive
    (it exists). A zombie (exited, not yet reaped by its parent; ``Z``/``X`` in ``/proc/<pid>/stat``)
    counts as dead. Off POSIX (Windows, where ``os.kill`` would terminate the process) there is
    no cheap check and every process counts as alive, so nothing is ever reaped there.
    """
    if pid <= 0:
        return False
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _proc_stat_fields(pid)
    return not (fields and fields[0] in ("Z", "X", "x"))


def _process_tags(pid_tag: str, start_tag: str, pid: int) -> dict[str, str]:
    ticks = process_start_ticks(pid)
    return {pid_tag: str(pid), start_tag: "" if ticks is None else str(ticks)}


def run_process_tags(run_id: str) -> dict[str, str]:
    """The liveness tags for run ``run_id`` executed in *this* process (in process, all steps here).

    For a launcher that executes the run itself (``execute_in_process``) and wants the run
    covered before its pool step starts, e.g. while it waits for the slot::

        run_id = str(uuid.uuid4())
        job.execute_in_process(instance=instance, run_id=run_id, tags=run_process_tags(run_id))

    Never pass these to a run another process executes (``submit_run``, ``launch_run``): the run
    would be reaped as soon as this process exits.
    """
    return {
        **_process_tags(RUN_PID_TAG, RUN_PID_START_TAG, os.getpid()),
        RUN_BOOT_TAG: current_boot_id(),
        RUN_PROCESS_OF_RUN_TAG: run_id,
    }


def _is_step_worker(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether this process is a step worker the multiprocess executor started for ``run_id``."""
    pid = os.getpid()
    return any(
        entry.dagster_event is not None and entry.dagster_event.pid == pid
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_WORKER_STARTED)
    )


def record_run_process(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """Tag run ``run_id`` with the processes that keep it alive and the boot id; return the tags.

    Call it from inside the run, at the start of the step that holds a pool slot. If this process
    is a step worker of the multiprocess executor, the run worker (its parent) is recorded as
    ``pid`` and this process as ``step_pid``; otherwise this process is the run worker. Only adds
    tags (``instance.add_run_tags``); calling it again (a later step, a retry) overwrites them.
    """
    if _is_step_worker(instance, run_id):
        parent = multiprocessing.parent_process()
        run_worker = parent.pid if parent is not None and parent.pid else os.getppid()
        tags = {
            **_process_tags(RUN_PID_TAG, RUN_PID_START_TAG, run_worker),
            **_process_tags(RUN_STEP_PID_TAG, RUN_STEP_PID_START_TAG, os.getpid()),
            RUN_BOOT_TAG: current_boot_id(),
            RUN_PROCESS_OF_RUN_TAG: run_id,
        }
    else:
        tags = run_process_tags(run_id)
        run = instance.get_run_by_id(run_id)
        if run is not None and run.tags.get(RUN_STEP_PID_TAG):
            # a run worker has no step worker: blank one copied from another run (tags cannot
            # be removed, and an empty value counts as absent)
            tags.update({RUN_STEP_PID_TAG: "", RUN_STEP_PID_START_TAG: ""})
    instance.add_run_tags(run_id, tags)
    return tags


@dataclass(frozen=True)
class _RecordedProcess:
    pid: int
    start_ticks: int | None

    def alive(self) -> bool:
        if not process_alive(self.pid):
            return False
        if self.start_ticks is None:
            return True
        ticks = process_start_ticks(self.pid)
        # a different start time: the pid now belongs to another process
        return ticks is None or ticks == self.start_ticks


def _recorded(tags: Mapping[str, str], pid_tag: str, start_tag: str) -> _RecordedProcess | None:
    try:
        pid = int(tags.get(pid_tag, ""))
    except ValueError:
        return None
    if pid <= 0:
        return None
    start = tags.get(start_tag, "")
    return _RecordedProcess(pid, int(start) if start.isdigit() else None)


def why_dead(run: dg.DagsterRun) -> str | None:
    """Why the recorded processes of ``run`` are provably gone, or None (alive, or not ours).

    None for a run without the liveness tags, with tags recorded for another run (copied by a
    retry or re-execution), or with any recorded process still alive on this boot.
    """
    tags = run.tags
    if tags.get(RUN_PROCESS_OF_RUN_TAG) != run.run_id:
        return None
    run_worker = _recorded(tags, RUN_PID_TAG, RUN_PID_START_TAG)
    if run_worker is None:
        return None
    step_worker = _recorded(tags, RUN_STEP_PID_TAG, RUN_STEP_PID_START_TAG)
    processes = [p for p in (run_worker, step_worker) if p is not None]
    described = " and ".join(f"{'step' if p is step_worker else 'run'} process {p.pid}" for p in processes)
    recorded_boot = tags.get(RUN_BOOT_TAG) or UNKNOWN_BOOT_ID
    boot = current_boot_id()
    if UNKNOWN_BOOT_ID not in (recorded_boot, boot) and recorded_boot != boot:
        return f"the machine rebooted since its {described} recorded itself (boot id {recorded_boot})"
    if recorded_boot != boot:
        return None  # cannot tell whether a pid refers to the same boot
    if any(p.alive() for p in processes):
        return None
    return f"its {described} no longer exist{'s' if len(processes) == 1 else ''}"


def _free_slots(instance: dg.DagsterInstance, run_id: str) -> None:
    # frees the run's claimed slots and drops its pending (waiting) steps, then hands freed
    # slots to the next waiting steps; it only ever touches rows of this run id
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)


def reap_dead_runs(instance: dg.DagsterInstance, *, now: datetime | None = None) -> list[str]:
    """Mark tagged runs whose recorded processes are gone as failed and free their pool slots.

    For every STARTING/STARTED/CANCELING run carrying the liveness tags of
    :func:`record_run_process` whose processes are provably gone (see :func:`why_dead`): free its
    concurrency slots and waiting steps, then report it failed (a CANCELING run: canceled) with
    a message saying why. Also frees the slots still held by an already finished tagged run whose
    processes are gone. Returns the ids of the runs it changed, in no particular order.

    Never touches runs without the tags, with tags copied from another run, or with a recorded
    process still alive. Idempotent and safe to call from several processes at once: freeing is
    a no-op for a run without slots, and each run is re-read just before it is reported.
    """
    now = now or datetime.now(UTC)
    reaped: list[str] = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=list(_UNFINISHED_STATUSES))):
        reason = why_dead(run)
        if reason is None:
            continue
        _free_slots(instance, run.run_id)
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.is_finished:
            continue  # another reaper (or the run itself) got there first
        message = (
            f"Marked {'canceled' if current.status == dg.DagsterRunStatus.CANCELING else 'failed'}"
            f" by meta_pipeline.run_liveness at {now.isoformat(timespec='seconds')}: {reason}"
            " (killed, crashed or the machine restarted), so it will never finish; its pool slots"
            " were freed."
        )
        if current.status == dg.DagsterRunStatus.CANCELING:
            instance.report_run_canceled(current, message)
        else:
            instance.report_run_failed(current, message)
        reaped.append(run.run_id)

    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        holding = storage.get_concurrency_run_ids() - set(reaped)
        if holding:
            finished = instance.get_runs(
                filters=dg.RunsFilter(run_ids=sorted(holding), statuses=list(_FINISHED_STATUSES))
            )
            for run in finished:
                if why_dead(run) is not None:
                    _free_slots(instance, run.run_id)
                    reaped.append(run.run_id)
    return reaped
