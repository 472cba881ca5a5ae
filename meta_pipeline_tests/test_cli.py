"""The commands the README tells a new user to run, run as a new user would (a subprocess in an
empty folder, a fresh Dagster instance)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _cli(cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("META_PIPELINE_", "DAGSTER_"))}
    return subprocess.run(
        [sys.executable, "-m", "meta_pipeline", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    cwd = tmp_path_factory.mktemp("fresh")
    return cwd, _cli(cwd, "demo")


def test_the_demo_runs_end_to_end_and_says_where_to_look(demo_run):
    cwd, proc = demo_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    reconciled = cwd / ".meta_pipeline_demo" / "alpha" / "reconciled.jsonl"
    assert str(reconciled) in proc.stdout and "python -m meta_pipeline ui --demo" in proc.stdout
    lines = reconciled.read_text().splitlines()
    assert len(lines) == 13577
    assert {json.loads(line)["horizon_hours"] for line in lines} == {1, 4, 24}
    # the fleet's numbers, and the supervisor ran after the main job
    assert re.search(r"alpha_trend\s+PROMOTE\s+KEEP\s+438\s+77901\.3\s+0\.74\s+1\.00", proc.stdout)
    assert re.search(r"mu_always_long\s+HOLD\s+KEEP\s+14\s+.*timing PSR$", proc.stdout, re.M)
    assert (cwd / ".meta_pipeline_demo" / "meta_supervisor" / "state" / "killed_agents.json").exists()
    # the instance keeps the project's settings and the demo's partitions start on its first day
    assert (cwd / ".dagster_home" / "dagster.yaml").read_text() == (
        README.parent / "dagster.yaml"
    ).read_text()
    assert "Warning" not in proc.stderr, proc.stderr[-3000:]


def test_the_demo_forensics_name_the_fleet_s_two_built_in_problems(demo_run):
    cwd, proc = demo_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(
        (cwd / ".meta_pipeline_demo" / "meta_supervisor" / "research" / "failure_forensics.json").read_text()
    )
    supported = sorted(
        (h["agent"], h["hypothesis"]) for h in report["hypotheses"] if h["verdict"] == "supported"
    )
    assert supported == [("kappa_regime", "regime_mismatch"), ("zeta_wobbly", "latency")]
    regime = next(
        h
        for h in report["hypotheses"]
        if h["agent"] == "kappa_regime" and h["hypothesis"] == "regime_mismatch"
    )
    assert "in high_vol" in regime["effect"] and regime["p_adjusted"] < 0.05


def test_the_readme_backfill_command_produces_rows_after_the_demo(demo_run):
    cwd, _ = demo_run
    [command] = re.findall(r"^python -m meta_pipeline run --demo [^\n]+$", README.read_text(), flags=re.M)
    proc = _cli(cwd, *command.split()[3:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "succeeded" in proc.stdout
    days = cwd / ".meta_pipeline_demo" / "alpha" / "reconciled"
    for day in ("2025-09-10", "2025-09-11", "2025-09-12"):
        assert len((days / f"{day}.jsonl").read_text().splitlines()) > 50, day


def test_run_refuses_a_range_before_the_first_partition(demo_run):
    cwd, _ = demo_run
    proc = _cli(cwd, "run", "--demo", "--start", "2024-03-01")
    assert proc.returncode == 2 and "before the first partition (2025-09-01" in proc.stderr


def test_ui_without_demo_data_explains_what_to_do(tmp_path):
    proc = _cli(tmp_path, "ui", "--demo")
    assert proc.returncode == 2 and "run `meta-pipeline demo` first" in proc.stderr


def test_help_is_plain_text_for_an_operator(tmp_path):
    proc = _cli(tmp_path, "--help")
    assert proc.returncode == 0
    assert "``" not in proc.stdout and ":mod:" not in proc.stdout
    for command in ("demo", "run", "ui"):
        assert f"meta-pipeline {command}" in proc.stdout


_GRAPH_QUERY = """
{
  assetNodes {
    assetKey { path }
    groupName
    description
    kinds
    owners { ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
    assetChecksOrError {
      ... on AssetChecks { checks { name blocking executionForLatestMaterialization { status } } }
    }
  }
}
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str, deadline: float) -> dict:
    """POST ``query`` to the webserver, retrying until it answers or ``deadline`` (monotonic) passes."""
    import time
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    while True:
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_the_ui_serves_the_whole_graph_with_check_results_and_stops_cleanly(demo_run):
    """`meta-pipeline ui --demo` (dagster dev with the daemon) on loopback, after the demo: the
    GraphQL API lists every asset with its group, description, owner and kinds, and the latest results
    of the supervisor's blocking checks; SIGINT stops the webserver and the daemon."""
    import signal
    import time

    cwd, proc = demo_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("META_PIPELINE_", "DAGSTER_"))}
    ui = subprocess.Popen(
        [sys.executable, "-m", "meta_pipeline", "ui", "--demo", "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: nothing it starts outlives the test
    )
    try:
        answer = _graphql(port, _GRAPH_QUERY, deadline=time.monotonic() + 120)
        assert "errors" not in answer, answer
        nodes = {"/".join(n["assetKey"]["path"]): n for n in answer["data"]["assetNodes"]}
        from meta_pipeline.definitions import defs

        expected = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
        assert set(nodes) == expected
        for key, node in nodes.items():
            assert node["description"] and ":py:" not in node["description"], key
            assert node["groupName"] != "default", key
            assert node["owners"] and node["kinds"], key
        checks = {c["name"]: c for c in nodes["agent_stats"]["assetChecksOrError"]["checks"]}
        assert checks and all(c["blocking"] for c in checks.values())
        assert {c["executionForLatestMaterialization"]["status"] for c in checks.values()} == {"SUCCEEDED"}
    finally:
        os.killpg(ui.pid, signal.SIGINT)
        try:
            output, _ = ui.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
            output, _ = ui.communicate()
            pytest.fail("dagster dev did not stop within 60 s of SIGINT:\n" + output[-3000:])
    assert ui.returncode in (0, -signal.SIGINT), output[-3000:]
    assert "daemon" in output.lower(), output[-3000:]  # dagster dev ran the daemon beside the webserver


_AUTOMATION_QUERY = """
{
  sensorsOrError(repositorySelector: {repositoryName: "__repository__", repositoryLocationName: "meta_pipeline"}) {
    ... on Sensors { results { name sensorState { status } } }
  }
  schedulesOrError(repositorySelector: {repositoryName: "__repository__", repositoryLocationName: "meta_pipeline"}) {
    ... on Schedules { results { name scheduleState { status } } }
  }
}
"""

_RUNS_QUERY = """
{ runsOrError { ... on Runs { results { jobName status tags { key value } } } } }
"""


def test_the_live_demo_runs_by_itself_and_stops_cleanly(tmp_path):
    """`meta-pipeline demo --live`: the feed appends, every schedule and sensor is running, the input
    sensor starts a run for the new lines and the supervisor's automation follows it — with nobody
    clicking anything — and Ctrl-C stops the feed, the webserver and the daemon."""
    import signal
    import time

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("META_PIPELINE_", "DAGSTER_"))}
    live = subprocess.Popen(
        [sys.executable, "-m", "meta_pipeline", "demo", "--live", "--port", str(port), "--interval", "2"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    by_itself: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 420
        answer = _graphql(port, _AUTOMATION_QUERY, deadline=time.monotonic() + 240)
        states = {s["name"]: s["sensorState"]["status"] for s in answer["data"]["sensorsOrError"]["results"]}
        states |= {
            s["name"]: s["scheduleState"]["status"] for s in answer["data"]["schedulesOrError"]["results"]
        }
        assert set(states) >= {
            "new_input_lines",
            "supervisor_follows_reconciliation",
            "refresh_every_30_minutes",
        }
        assert set(states.values()) == {"RUNNING"}, states
        while time.monotonic() < deadline and set(by_itself) < {
            "new_input_lines",
            "supervisor_follows_reconciliation",
        }:
            runs = _graphql(port, _RUNS_QUERY, deadline=deadline)["data"]["runsOrError"]["results"]
            for run in runs:
                tags = {t["key"]: t["value"] for t in run["tags"]}
                if run["status"] == "SUCCESS" and "dagster/sensor_name" in tags:
                    by_itself[tags["dagster/sensor_name"]] = run["jobName"]
            time.sleep(5)
    finally:
        os.killpg(live.pid, signal.SIGINT)
        try:
            output, _ = live.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(live.pid, signal.SIGKILL)
            output, _ = live.communicate()
            pytest.fail("demo --live did not stop within 90 s of SIGINT:\n" + output[-3000:])
    assert by_itself.get("new_input_lines") == "meta_pipeline_job", (by_itself, output[-3000:])
    assert "supervisor_follows_reconciliation" in by_itself, (by_itself, output[-3000:])
    assert re.search(r"feed at .* \+\d+ bar\(s\)", output), output[-3000:]
    assert live.returncode == 0, output[-3000:]
    killed = tmp_path / ".meta_pipeline_demo" / "meta_supervisor" / "state" / "killed_agents.json"
    assert json.loads(
        killed.read_text()
    )  # the supervisor's first run, in the UI, put agents on the kill list


def test_the_live_demo_refuses_a_port_in_use_before_doing_anything(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _cli(tmp_path, "demo", "--live", "--port", str(port), timeout=60)
    assert proc.returncode == 2 and f"port {port} on 127.0.0.1 is in use" in proc.stderr
    assert not (tmp_path / ".meta_pipeline_demo").exists()  # nothing generated, nothing started
