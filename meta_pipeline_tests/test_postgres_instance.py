"""The Dagster instance on a real PostgreSQL server, with the shipped ``deploy/postgres/dagster.yaml``.

What it proves (README, "Scaling past one machine"): the instance file loads as written; the main
job's run and its materializations land in Postgres; and two range runs submitted to the run queue
are launched by ``dagster-daemon`` at the same time (``max_concurrent_runs: 2``), both succeed, and
nothing fails on a lock — the reason to leave SQLite. Every check reads Postgres with SQL, not
Dagster's API, so it is the database that says what happened.

Each test gets its own database (``mp_test_<random>``), dropped at the end even on failure, and its
own data root: signals on a single symbol (BTC) priced from the real Binance dumps in
``meta_pipeline_tests/klines/`` through the ``files`` price source, so no network is touched.

Without a reachable server the tests skip; with ``META_PIPELINE_REQUIRE_SERVICES=1`` (CI) they fail.
Connection settings come from ``DAGSTER_PG_HOST``/``_PORT``/``_USER``/``_PASSWORD`` (default
127.0.0.1:5432, user postgres, empty password: trust auth).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
import yaml

from meta_pipeline import names
from meta_pipeline_tests.services import require_service, service_unavailable

REPO_ROOT = Path(__file__).resolve().parents[1]
PG_INSTANCE_YAML = REPO_ROOT / "deploy" / "postgres" / "dagster.yaml"
KLINES = Path(__file__).resolve().parent / "klines" / "BTCUSDT"
START_DATE = "2024-03-01"
SIGNAL_DAYS = [f"2024-03-{day:02d}" for day in range(2, 12)]
SIGNAL_HOURS = {1: "LONG", 9: "SHORT", 17: "LONG"}  # three signals a day
HORIZONS = 3  # the default horizons, 1, 4 and 24 hours: one reconciled row per signal and horizon
DAILY_ASSETS = {names.SIGNALS, names.TELEMETRY, names.PRICE_BARS, names.RECONCILED_TRADES}
UNPARTITIONED_ASSETS = {names.SIGNAL_QUARANTINE, names.TELEMETRY_QUARANTINE}
# what the event log stores for a failed step or run (a run's failure keeps its pre-1.0 name)
FAILURE_EVENT_TYPES = (dg.DagsterEventType.STEP_FAILURE.value, dg.DagsterEventType.RUN_FAILURE.value)
RUN_WAIT_SECONDS = 180
DAEMON_STOP_SECONDS = 30
GROUP_STOP_SECONDS = 10


# ------------------------------------------------------------------------------------------ helpers
def _days(first: str, last: str) -> list[str]:
    a, b = date.fromisoformat(first), date.fromisoformat(last)
    return [(a + timedelta(days=i)).isoformat() for i in range((b - a).days + 1)]


def _write_data_root(root: Path) -> None:
    """Input files with three signals a day and their telemetry, and the bar files they need."""
    (root / "alpha").mkdir(parents=True)
    (root / "telemetry").mkdir()
    signals, telemetry = [], []
    for day in SIGNAL_DAYS:
        for hour, side in SIGNAL_HOURS.items():
            ts, run = f"{day}T{hour:02d}:30:00Z", f"r{day}-{hour:02d}"
            signals.append({"ts": ts, "agent": "a", "run_id": run, "symbol": "BTC", "direction": side})
            telemetry.append({"ts": ts, "agent": "a", "run_id": run, "errors": 0, "latency_ms": 100})
    (root / "alpha" / "events.jsonl").write_text("".join(json.dumps(s) + "\n" for s in signals))
    (root / "telemetry" / "events.jsonl").write_text("".join(json.dumps(t) + "\n" for t in telemetry))
    # a copy, so nothing a run does can touch the repository's reference files
    bars = root / "bars" / "BTCUSDT"
    bars.mkdir(parents=True)
    for day in _days(START_DATE, "2024-03-14"):
        shutil.copy(KLINES / f"BTCUSDT-1m-{day}.csv", bars)


def _pg_settings() -> dict[str, str]:
    return {
        "DAGSTER_PG_HOST": os.environ.get("DAGSTER_PG_HOST") or "127.0.0.1",
        "DAGSTER_PG_PORT": os.environ.get("DAGSTER_PG_PORT") or "5432",
        "DAGSTER_PG_USER": os.environ.get("DAGSTER_PG_USER") or "postgres",
        # set even when empty: the instance file reads it with `env:`, which fails on an unset variable
        "DAGSTER_PG_PASSWORD": os.environ.get("DAGSTER_PG_PASSWORD", ""),
    }


def _connect(settings: dict[str, str], dbname: str):
    import psycopg2  # installed by dagster-postgres

    return psycopg2.connect(
        host=settings["DAGSTER_PG_HOST"],
        port=int(settings["DAGSTER_PG_PORT"]),
        user=settings["DAGSTER_PG_USER"],
        password=settings["DAGSTER_PG_PASSWORD"],
        dbname=dbname,
        connect_timeout=5,
    )


class Postgres:
    """SQL on the test's database: the assertions read what Dagster wrote, in Dagster's own tables."""

    def __init__(self, settings: dict[str, str]) -> None:
        self.settings = settings

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        conn = _connect(self.settings, self.settings["DAGSTER_PG_DB"])
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        finally:
            conn.close()

    def runs(self) -> dict[str, tuple[str, str]]:
        """run id -> (job name, status)."""
        return {
            r: (job, status)
            for r, job, status in self.query("SELECT run_id, pipeline_name, status FROM runs")
        }

    def materialized(self, run_id: str) -> set[tuple[str, str | None]]:
        """The (asset, partition) pairs a run recorded ASSET_MATERIALIZATION events for."""
        rows = self.query(
            "SELECT asset_key, partition FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
            (run_id, dg.DagsterEventType.ASSET_MATERIALIZATION.value),
        )
        return {(json.loads(key)[0], partition) for key, partition in rows}

    def failures(self) -> list[tuple]:
        """Every failed step or run, and every event whose text mentions a lock problem."""
        return self.query(
            "SELECT run_id, dagster_event_type, step_key, left(event, 300) FROM event_logs "
            "WHERE dagster_event_type IN %s OR event ILIKE %s OR event ILIKE %s",
            (FAILURE_EVENT_TYPES, "%database is locked%", "%deadlock%"),
        )

    def event_time(self, run_id: str, event_type: dg.DagsterEventType, step_key: str | None = None) -> float:
        sql = "SELECT extract(epoch FROM timestamp) FROM event_logs WHERE run_id = %s AND dagster_event_type = %s"
        params: tuple = (run_id, event_type.value)
        if step_key is not None:
            sql, params = sql + " AND step_key = %s", (*params, step_key)
        [(seconds,)] = self.query(sql, params)
        return float(seconds)


def _expected_materializations(first: str, last: str) -> set[tuple[str, str | None]]:
    days = _days(first, last)
    return {(asset, day) for asset in DAILY_ASSETS for day in days} | {
        (a, None) for a in UNPARTITIONED_ASSETS
    }


def _assert_rows_on_disk(root: Path, first: str, last: str) -> None:
    """The run did the work, not only the bookkeeping: every day of the range has its signals and
    one reconciled row per signal and horizon."""
    warehouse = root / names.WAREHOUSE_DIR
    for day in _days(first, last):
        signals = pq.read_metadata(warehouse / names.SIGNALS / f"{day}.parquet").num_rows
        reconciled = pq.read_metadata(warehouse / names.RECONCILED_TRADES / f"{day}.parquet").num_rows
        assert (signals, reconciled) == (len(SIGNAL_HOURS), len(SIGNAL_HOURS) * HORIZONS), day


# ----------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def pg_database() -> Iterator[dict[str, str]]:
    """A fresh database for this test, dropped afterwards (even after a failure)."""
    settings = _pg_settings()
    require_service(settings["DAGSTER_PG_HOST"], int(settings["DAGSTER_PG_PORT"]), "PostgreSQL")
    try:
        admin = _connect(settings, "postgres")
    except Exception as exc:  # reachable but refusing us (auth, no such role): same rule as unreachable
        service_unavailable(f"PostgreSQL at {settings['DAGSTER_PG_HOST']} refused a connection: {exc}")
    admin.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    name = f"mp_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield {**settings, "DAGSTER_PG_DB": name}
    finally:
        with admin.cursor() as cur:
            # FORCE ends connections a killed run or daemon may have left behind (PostgreSQL 13+)
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def pg_instance_env(tmp_path, pg_database) -> dict[str, str]:
    """The environment of a process on the Postgres instance with the test's data root: the
    variables ``meta_pipeline.definitions`` reads, DAGSTER_HOME holding the shipped instance file,
    and nothing inherited from the caller's own META_PIPELINE_*/DAGSTER_* settings."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PG_INSTANCE_YAML, home / "dagster.yaml")
    root = tmp_path / "root"
    _write_data_root(root)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("META_PIPELINE_", "DAGSTER_"))}
    return {
        **env,
        **pg_database,
        "DAGSTER_HOME": str(home),
        "META_PIPELINE_ROOT": str(root),
        "META_PIPELINE_PRICE_SOURCES": "files",
        "META_PIPELINE_BARS_DIR": str(root / "bars"),
        "META_PIPELINE_START_DATE": START_DATE,
    }


# ------------------------------------------------------------------------------------------- tests
def test_the_postgres_instance_keeps_the_project_s_queue_pool_and_retry_settings():
    """The Postgres variant differs from dagster.yaml in where it stores, not in how runs are limited."""
    project = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    postgres = yaml.safe_load(PG_INSTANCE_YAML.read_text())
    for section in ("concurrency", "run_monitoring", "run_retries", "telemetry"):
        assert postgres[section] == project[section], section
    assert postgres["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert set(postgres["storage"]["postgres"]["postgres_db"]) >= {"hostname", "port", "username", "password"}


# The main job the way `meta-pipeline run` runs it (without the supervisor and export that follow):
# the code location's own definitions, loaded from the environment, on the instance in DAGSTER_HOME.
MAIN_JOB_SCRIPT = """
import sys
import dagster as dg
from meta_pipeline import names
from meta_pipeline.definitions import defs

first, last = sys.argv[1:3]
with dg.DagsterInstance.get() as instance:
    result = defs.resolve_job_def(names.MAIN_JOB).execute_in_process(
        instance=instance,
        tags={names.RANGE_START_TAG: first, names.RANGE_END_TAG: last},
        raise_on_error=False,
    )
print("RUN", result.run_id, result.success)
"""


def test_the_main_job_records_its_run_and_materializations_in_postgres(pg_instance_env):
    first, last = "2024-03-02", "2024-03-04"
    proc = subprocess.run(
        [sys.executable, "-c", MAIN_JOB_SCRIPT, first, last],
        cwd=REPO_ROOT,
        env=pg_instance_env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [(run_id, success)] = [line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("RUN ")]
    assert success == "True", proc.stderr[-3000:]

    db = Postgres(pg_instance_env)
    assert db.runs() == {run_id: (names.MAIN_JOB, "SUCCESS")}
    assert db.materialized(run_id) == _expected_materializations(first, last)
    assert db.failures() == []
    # nothing was written to SQLite beside the instance file: the storage really is Postgres
    assert not list(Path(pg_instance_env["DAGSTER_HOME"]).rglob("*.db"))
    _assert_rows_on_disk(Path(pg_instance_env["META_PIPELINE_ROOT"]), first, last)


def _submit_range_runs(
    ranges: list[tuple[str, str]], workspace: Path = REPO_ROOT / "workspace.yaml"
) -> list[str]:
    """Queue one main-job run per range through the instance's run coordinator, as the UI or
    `dagster job launch` does: the job comes from the code location that workspace.yaml names
    (loaded in a code server subprocess with this process's environment)."""
    from dagster._cli.job import _create_run
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    run_ids = []
    with (
        dg.DagsterInstance.get() as instance,
        WorkspaceProcessContext(instance, WorkspaceFileTarget([str(workspace)])) as process,
    ):
        workspace = process.create_request_context()
        location = workspace.get_code_location("meta_pipeline")
        [repo] = location.get_repositories().values()
        remote_job = repo.get_full_job(names.MAIN_JOB)
        for first, last in ranges:
            run = _create_run(
                instance=instance,
                code_location=location,
                remote_repo=repo,
                remote_job=remote_job,
                run_config={},
                tags={names.RANGE_START_TAG: first, names.RANGE_END_TAG: last},
                op_selection=None,
                run_id=None,
            )
            submitted = instance.submit_run(run.run_id, workspace)
            # queued, not run: the QueuedRunCoordinator leaves launching to the daemon
            assert submitted.status == dg.DagsterRunStatus.QUEUED
            run_ids.append(run.run_id)
    return run_ids


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _end_group(proc: subprocess.Popen) -> None:
    """End what is left of the process group of the daemon ``proc`` (started by this test in a
    session of its own): SIGTERM, then SIGKILL after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc.poll()  # reap the daemon itself if it exited, so only live members count
        if not _group_alive(proc.pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        deadline = time.monotonic() + GROUP_STOP_SECONDS
        while time.monotonic() < deadline:
            proc.poll()
            if not _group_alive(proc.pid):
                return
            time.sleep(0.2)


@pytest.fixture
def start_daemon(tmp_path, pg_instance_env) -> Iterator:
    """``start_daemon()`` starts ``dagster-daemon run -w workspace.yaml`` on the test's instance, in
    its own process group, and returns (process, log path). Afterwards, even after a failure, the
    daemon and everything it started (its code server, run workers) are ended by that group's id."""
    started: list[subprocess.Popen] = []
    log = tmp_path / "daemon.log"

    def start(
        workspace: Path = REPO_ROOT / "workspace.yaml", env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen, Path]:
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        executable = shutil.which("dagster-daemon", path=path)
        assert executable, "dagster-daemon is not installed beside this Python"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [executable, "run", "-w", str(workspace)],
                cwd=REPO_ROOT,
                env=env or pg_instance_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so its children can be found and ended
            )
        started.append(proc)
        return proc, log

    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=DAEMON_STOP_SECONDS)
            _end_group(proc)


def _wait_for_runs(instance: dg.DagsterInstance, run_ids: list[str], daemon, log: Path) -> None:
    deadline = time.monotonic() + RUN_WAIT_SECONDS
    while True:
        runs = [instance.get_run_by_id(run_id) for run_id in run_ids]
        if all(run.is_finished for run in runs):
            return
        assert daemon.poll() is None, f"the daemon exited ({daemon.returncode}):\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, (
            f"runs not finished after {RUN_WAIT_SECONDS} s: {[(r.run_id, r.status.value) for r in runs]}\n"
            f"{log.read_text()[-3000:]}"
        )
        time.sleep(1)


def test_two_range_runs_run_concurrently_through_the_queue_and_the_daemon(
    pg_instance_env, start_daemon, monkeypatch
):
    ranges = [("2024-03-02", "2024-03-04"), ("2024-03-07", "2024-03-09")]
    # this process opens the instance and the code server that plans the runs: same environment
    for key in [k for k in os.environ if k.startswith(("META_PIPELINE_", "DAGSTER_"))]:
        monkeypatch.delenv(key)
    for key, value in pg_instance_env.items():
        monkeypatch.setenv(key, value)

    run_ids = _submit_range_runs(ranges)
    daemon, log = start_daemon()
    with dg.DagsterInstance.get() as instance:
        _wait_for_runs(instance, run_ids, daemon, log)
    # a clean stop: SIGTERM, and the daemon exits by itself within the grace period
    # a clean stop: SIGINT (Ctrl-C), and the daemon exits by itself. Not SIGTERM: in our runs the
    # daemon then exited but left its code server running (the fixture's group kill covers both)
    daemon.send_signal(signal.SIGINT)
    assert daemon.wait(timeout=DAEMON_STOP_SECONDS) == 0, log.read_text()[-3000:]

    db = Postgres(pg_instance_env)
    assert db.runs() == {run_id: (names.MAIN_JOB, "SUCCESS") for run_id in run_ids}, log.read_text()[-3000:]
    for run_id, (first, last) in zip(run_ids, ranges, strict=True):
        assert db.materialized(run_id) == _expected_materializations(first, last)
        _assert_rows_on_disk(Path(pg_instance_env["META_PIPELINE_ROOT"]), first, last)
    assert db.failures() == []

    # both runs were in flight at once: the queue launched the second before the first ended
    starting = [db.event_time(r, dg.DagsterEventType.RUN_STARTING) for r in run_ids]
    ended = [db.event_time(r, dg.DagsterEventType.RUN_SUCCESS) for r in run_ids]
    assert max(starting) < min(ended), (starting, ended)
    # ... yet the `exchange_api` pool (one slot, held in Postgres) kept their price_bars steps apart
    bars = sorted(
        (
            db.event_time(r, dg.DagsterEventType.STEP_START, names.PRICE_BARS),
            db.event_time(r, dg.DagsterEventType.STEP_SUCCESS, names.PRICE_BARS),
        )
        for r in run_ids
    )
    assert bars[0][1] <= bars[1][0], bars
