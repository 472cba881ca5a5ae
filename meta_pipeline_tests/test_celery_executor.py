"""The main job on the Celery executor (``deploy/celery/``) with two local workers, a real broker
(RabbitMQ on loopback) and the Postgres instance: every step of the run is a Celery task run by a
worker process, not by the run worker, and the results are the same rows as in-process.

Without a reachable broker or Postgres the test skips; with ``META_PIPELINE_REQUIRE_SERVICES=1``
(CI) it fails. Reuses the Postgres test's database, data root, daemon and queue helpers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from meta_pipeline import names
from meta_pipeline_tests.services import require_service
from meta_pipeline_tests.test_postgres_instance import (  # noqa: F401  (fixtures used by name)
    REPO_ROOT,
    Postgres,
    _assert_rows_on_disk,
    _end_group,
    _expected_materializations,
    _submit_range_runs,
    _wait_for_runs,
    pg_database,
    pg_instance_env,
    start_daemon,
)

pytest.importorskip("dagster_celery", reason="dagster-celery runs the steps as Celery tasks")

CELERY = REPO_ROOT / "deploy" / "celery"
BROKER = ("127.0.0.1", 5672)


@pytest.fixture
def celery_env(pg_instance_env) -> dict[str, str]:  # noqa: F811 (the imported fixture)
    require_service(*BROKER, "RabbitMQ")
    return {**pg_instance_env, "DAGSTER_CELERY_BROKER_URL": f"pyamqp://guest@{BROKER[0]}:{BROKER[1]}//"}


@pytest.fixture
def workers(tmp_path, celery_env) -> Iterator[list[Path]]:
    """Two ``dagster-celery`` workers on the broker, each in its own process group, ended afterwards
    (their queue is purged first, so no task of an earlier, failed test run is picked up)."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    executable = shutil.which("dagster-celery", path=path)
    assert executable, "dagster-celery is not installed beside this Python"
    procs, logs = [], []
    try:
        for name in ("w1", "w2"):
            log = tmp_path / f"worker-{name}.log"
            command = [executable, "worker", "start", "-A", "dagster_celery.app"]
            command += ["-y", str(CELERY / "worker.yaml"), "--name", f"{name}-{os.getpid()}"]
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        command,
                        cwd=REPO_ROOT,
                        env=celery_env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )  # fmt: skip
                )
            logs.append(log)
        yield logs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)
            _end_group(proc)


def test_the_main_job_runs_its_steps_on_two_celery_workers(celery_env, workers, start_daemon, monkeypatch):  # noqa: F811
    for key in [k for k in os.environ if k.startswith(("META_PIPELINE_", "DAGSTER_"))]:
        monkeypatch.delenv(key)
    for key, value in celery_env.items():
        monkeypatch.setenv(key, value)
    first, last = "2024-03-02", "2024-03-04"
    [run_id] = _submit_range_runs([(first, last)], workspace=CELERY / "workspace.yaml")
    daemon, log = start_daemon(CELERY / "workspace.yaml", env=celery_env)
    with dg.DagsterInstance.get() as instance:
        _wait_for_runs(instance, [run_id], daemon, log)

    db = Postgres(celery_env)
    worker_logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in workers)
    assert db.runs() == {run_id: (names.MAIN_JOB, "SUCCESS")}, (
        [
            e[0][:1500]
            for e in db.query(
                "SELECT event FROM event_logs WHERE run_id = %s AND dagster_event_type IN "
                "('PIPELINE_FAILURE', 'STEP_FAILURE', 'ENGINE_EVENT')",
                (run_id,),
            )
        ],
        worker_logs,
    )
    assert db.materialized(run_id) == _expected_materializations(first, last)
    assert db.failures() == []
    _assert_rows_on_disk(Path(celery_env["META_PIPELINE_ROOT"]), first, last)
    # every step went through Celery: the executor records a task per step, and the workers ran them
    steps = {s for (s,) in db.query("SELECT DISTINCT step_key FROM event_logs WHERE run_id = %s AND "
                                    "dagster_event_type = 'STEP_SUCCESS'", (run_id,))}  # fmt: skip
    submitted = db.query(
        "SELECT step_key FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ENGINE_EVENT' "
        "AND event ILIKE %s",
        (run_id, "%celery%"),
    )
    assert steps and {s for (s,) in submitted if s} >= steps, submitted
    worker_pids = {
        pid
        for (pid,) in db.query(
            "SELECT DISTINCT (event::json->'dagster_event'->>'pid') FROM event_logs WHERE run_id = %s AND "
            "dagster_event_type = 'STEP_START'",
            (run_id,),
        )
    }
    run_worker_pid = db.query(
        "SELECT event::json->'dagster_event'->>'pid' FROM event_logs WHERE run_id = %s AND dagster_event_type = 'PIPELINE_START'",
        (run_id,),
    )[0][0]
    assert worker_pids and None not in worker_pids and run_worker_pid not in worker_pids  # ran in the workers
