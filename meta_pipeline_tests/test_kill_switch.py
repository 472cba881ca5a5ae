"""The kill switch (``meta_pipeline.kill_switch``): the list the runtime reads before every agent run,
the append-only log of every change, the lock that keeps concurrent writers from losing an update,
and the UI job that operates it."""

from __future__ import annotations

import json
import logging
import multiprocessing
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from meta_pipeline import kill_switch as ks
from meta_pipeline.atomic_files import _umask

HOSTILE = "a|b`\n<script>"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("META_PIPELINE_ROOT", raising=False)
    return tmp_path


def state(root: Path) -> Path:
    return root / "meta_supervisor" / "state"


def log_lines(root: Path) -> list[dict]:
    return [json.loads(line) for line in (state(root) / "kill_log.jsonl").read_text().splitlines()]


# --- the rules, one by one


def test_kill_puts_the_agent_on_the_list_and_logs_who_when_and_why(root):
    entry = ks.kill_agent("delta_contrarian", "pnl < -150 bps", by="pipeline", root=root, now=T0)

    assert ks.is_agent_killed("delta_contrarian", root=root)
    assert not ks.is_agent_killed("alpha_trend", root=root)
    assert ks.killed_agents(root=root) == ["delta_contrarian"]
    assert (state(root) / "killed_agents.json").read_bytes() == b'[\n  "delta_contrarian"\n]\n'
    assert log_lines(root) == [
        {
            "time": "2025-03-01T12:00:00.000000Z",
            "name": "delta_contrarian",
            "kind": "agent",
            "action": "kill",
            "reason": "pnl < -150 bps",
            "by": "pipeline",
            "noop": False,
        }
    ]
    assert entry["time"] == T0 and entry["noop"] is False
    mode = (state(root) / "killed_agents.json").stat().st_mode & 0o777
    assert mode == 0o666 & ~_umask()  # normal permissions: the runtime may run as another user


def test_revive_takes_it_off_the_list_and_keeps_the_kill_in_the_log(root):
    ks.kill_agent("x", "bad", root=root, now=T0)
    entry = ks.revive_agent("x", "fixed", root=root, now=T0 + timedelta(hours=1))

    assert entry["noop"] is False and entry["action"] == "revive"
    assert not ks.is_agent_killed("x", root=root)
    assert ks.killed_agents(root=root) == []
    assert (state(root) / "killed_agents.json").read_bytes() == b"[]\n"
    assert [(e["action"], e["reason"], e["by"]) for e in log_lines(root)] == [
        ("kill", "bad", "operator"),
        ("revive", "fixed", "operator"),
    ]


def test_a_repeated_kill_or_revive_is_logged_as_a_noop_not_raised(root):
    ks.kill_agent("x", "first", root=root)
    list_before = (state(root) / "killed_agents.json").stat()
    again = ks.kill_agent("x", "second", root=root)
    live = ks.revive_agent("never_killed", "?", root=root)

    assert again["noop"] is True and live["noop"] is True
    assert [(e["name"], e["action"], e["noop"]) for e in log_lines(root)] == [
        ("x", "kill", False),
        ("x", "kill", True),
        ("never_killed", "revive", True),
    ]
    # a no-op does not rewrite the list
    assert (state(root) / "killed_agents.json").stat().st_ino == list_before.st_ino
    assert ks.killed_agents(root=root) == ["x"]


def test_the_list_is_sorted_json_with_indent_2_byte_for_byte(root):
    for name in ["zeta", "alpha", "Beta", "é_agent", "alpha_2"]:
        ks.kill_agent(name, root=root)
    expected = json.dumps(sorted(["zeta", "alpha", "Beta", "é_agent", "alpha_2"]), indent=2) + "\n"
    assert expected == '[\n  "Beta",\n  "alpha",\n  "alpha_2",\n  "zeta",\n  "\\u00e9_agent"\n]\n'
    assert (state(root) / "killed_agents.json").read_text() == expected
    ks.revive_agent("alpha", root=root)
    assert (state(root) / "killed_agents.json").read_text() == (
        '[\n  "Beta",\n  "alpha_2",\n  "zeta",\n  "\\u00e9_agent"\n]\n'
    )


def test_the_log_is_append_only_never_rewritten(root):
    path = state(root) / "kill_log.jsonl"
    before = b""
    for i, change in enumerate([ks.kill_agent, ks.kill_agent, ks.revive_agent, ks.kill_strategy] * 3):
        change(f"n{i % 2}", f"step {i}", root=root)
        after = path.read_bytes()
        assert after.startswith(before) and after.count(b"\n") == i + 1 and after.endswith(b"\n")
        before = after
    assert len(ks.kill_log(root)) == 12


def test_strategies_have_their_own_list(root):
    ks.kill_strategy("momentum", "crowded", root=root)
    assert ks.is_strategy_killed("momentum", root=root)
    assert not ks.is_agent_killed("momentum", root=root)
    assert ks.killed_strategies(root=root) == ["momentum"] and ks.killed_agents(root=root) == []
    assert (state(root) / "killed_strategies.json").read_bytes() == b'[\n  "momentum"\n]\n'
    assert not (state(root) / "killed_agents.json").exists()
    ks.revive_strategy("momentum", "uncrowded", root=root)
    assert ks.killed_strategies(root=root) == []
    assert [(e["kind"], e["action"]) for e in ks.kill_log(root)] == [
        ("strategy", "kill"),
        ("strategy", "revive"),
    ]


def test_root_comes_from_the_environment_else_the_current_directory(tmp_path, monkeypatch):
    env_root, cwd = tmp_path / "env_root", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("META_PIPELINE_ROOT", str(env_root))
    ks.kill_agent("x", "r")
    assert (state(env_root) / "killed_agents.json").exists()
    assert ks.is_agent_killed("x") and ks.is_agent_killed("x", root=env_root)
    assert not (cwd / "meta_supervisor").exists()

    monkeypatch.delenv("META_PIPELINE_ROOT")
    assert not ks.is_agent_killed("x")
    ks.kill_agent("y", "r")
    assert ks.killed_agents(root=cwd) == ["y"] and ks.killed_agents(root=str(env_root)) == ["x"]


def test_nothing_killed_on_a_fresh_root(root):
    assert not ks.is_agent_killed("x", root=root)
    assert ks.killed_agents(root=root) == [] and ks.killed_strategies(root=root) == []
    assert ks.kill_log(root) == [] and ks.killed_since(root=root) == {} and ks.revived_at(root=root) == {}
    assert not (root / "meta_supervisor").exists()  # reading creates nothing


@pytest.mark.parametrize(
    "call",
    [
        lambda root: ks.kill_agent("x", "r", by="someone", root=root),
        lambda root: ks.revive_agent("x", "r", by="", root=root),
        lambda root: ks.kill_agent("", "r", root=root),
        lambda root: ks.kill_strategy(None, "r", root=root),  # type: ignore[arg-type]
        lambda root: ks.kill("x", "portfolio", root=root),  # type: ignore[arg-type]
        lambda root: ks.kill_agent("x", 42, root=root),  # type: ignore[arg-type]
        lambda root: ks.kill_agent("x", "r", root=root, now=datetime(2025, 1, 1)),  # naive clock
        lambda root: ks.is_agent_killed("", root=root),
        lambda root: ks.killed_since("portfolio", root=root),  # type: ignore[arg-type]
    ],
)
def test_invalid_arguments_raise_value_error_and_write_nothing(root, call):
    with pytest.raises(ValueError):
        call(root)
    assert not (state(root) / "kill_log.jsonl").exists()
    assert not (state(root) / "killed_agents.json").exists()


def test_a_hostile_name_is_data(root):
    ks.kill_agent(HOSTILE, "it|is`odd\n", root=root, now=T0)
    assert ks.is_agent_killed(HOSTILE, root=root)
    assert not ks.is_agent_killed("a|b`", root=root)
    assert ks.killed_agents(root=root) == [HOSTILE]
    assert json.loads((state(root) / "killed_agents.json").read_text()) == [HOSTILE]
    assert len((state(root) / "kill_log.jsonl").read_text().splitlines()) == 1  # the newline is escaped
    assert ks.killed_since(root=root)[HOSTILE]["reason"] == "it|is`odd\n"
    ks.revive_agent(HOSTILE, "ok", root=root, now=T0 + timedelta(minutes=1))
    assert ks.revived_at(root=root) == {HOSTILE: T0 + timedelta(minutes=1)}


# --- what the supervisor reads


def test_killed_since_is_the_kill_in_force(root):
    ks.kill_agent("x", "first", by="pipeline", root=root, now=T0)
    ks.kill_agent("x", "again", root=root, now=T0 + timedelta(hours=1))  # no-op: the first kill holds
    ks.kill_agent("y", "other", root=root, now=T0 + timedelta(hours=2))
    since = ks.killed_since(root=root)
    assert list(since) == ["x", "y"]
    assert (since["x"]["time"], since["x"]["reason"], since["x"]["by"]) == (T0, "first", "pipeline")

    ks.revive_agent("x", "back", root=root, now=T0 + timedelta(hours=3))
    ks.kill_agent("x", "second", root=root, now=T0 + timedelta(hours=4))
    assert ks.killed_since(root=root)["x"]["reason"] == "second"
    assert ks.killed_since("strategy", root=root) == {}


def test_revived_at_kill_revive(root):
    ks.kill_agent("x", "bad", root=root, now=T0)
    ks.revive_agent("x", "good", root=root, now=T0 + timedelta(days=1))
    ks.revive_agent("x", "again", root=root, now=T0 + timedelta(days=2))  # no-op: does not move it
    assert ks.revived_at(root=root) == {"x": T0 + timedelta(days=1)}
    assert ks.revived_at(root=root)["x"].tzinfo is not None


def test_revived_at_kill_revive_kill_is_not_revived(root):
    ks.kill_agent("x", "bad", root=root, now=T0)
    ks.revive_agent("x", "good", root=root, now=T0 + timedelta(days=1))
    ks.kill_agent("x", "bad again", root=root, now=T0 + timedelta(days=2))
    assert ks.revived_at(root=root) == {}
    assert ks.killed_since(root=root)["x"]["time"] == T0 + timedelta(days=2)
    # revived once more: the latest revive counts
    ks.revive_agent("x", "third time", root=root, now=T0 + timedelta(days=3))
    assert ks.revived_at(root=root) == {"x": T0 + timedelta(days=3)}
    assert ks.revived_at("strategy", root=root) == {}


def test_a_list_edited_by_hand_is_honoured(root):
    state(root).mkdir(parents=True)
    (state(root) / "killed_agents.json").write_text('["manual", "manual", "old_format"]')
    assert ks.is_agent_killed("manual", root=root)
    assert ks.killed_agents(root=root) == ["manual", "old_format"]
    since = ks.killed_since(root=root)
    assert since["manual"]["time"] is None and since["manual"]["by"] is None

    assert ks.kill_agent("manual", "confirm", root=root, now=T0)["noop"] is True
    assert ks.killed_since(root=root)["manual"]["reason"] == "confirm"  # the no-op stands in
    ks.revive_agent("old_format", "back", root=root, now=T0)
    assert ks.killed_agents(root=root) == ["manual"]
    assert (state(root) / "killed_agents.json").read_bytes() == b'[\n  "manual"\n]\n'
    assert ks.revived_at(root=root) == {"old_format": T0}


@pytest.mark.parametrize("content", [b'["x", ', b'{"x": 1}', b'["x", 3]', b"", b"\xff\xfe"])
def test_a_corrupt_list_fails_closed(root, content):
    path = state(root) / "killed_agents.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    for read in (ks.is_agent_killed, lambda name, root: ks.kill_agent(name, "r", root=root)):
        with pytest.raises(ks.KillSwitchError, match="killed_agents.json"):
            read("x", root=root)
    with pytest.raises(ks.KillSwitchError, match="killed_agents.json"):
        ks.killed_agents(root=root)
    assert path.read_bytes() == content  # never overwritten
    assert not (state(root) / "kill_log.jsonl").exists()
    assert ks.killed_strategies(root=root) == []  # the other list is unaffected


def test_a_torn_log_line_is_skipped_and_the_next_line_stays_whole(root, caplog):
    ks.kill_agent("x", "r", root=root, now=T0)
    with open(state(root) / "kill_log.jsonl", "ab") as handle:
        handle.write(b'{"time": "2025-03-01T12:0')  # a writer died mid-line
    assert len(ks.kill_log(root)) == 1  # the fragment is ignored
    ks.revive_agent("x", "r", root=root, now=T0 + timedelta(hours=1))
    with caplog.at_level(logging.WARNING, logger="meta_pipeline.kill_switch"):
        entries = ks.kill_log(root)
    assert [e["action"] for e in entries] == ["kill", "revive"]
    assert "line 2 is not a kill-log entry" in caplog.text
    assert ks.revived_at(root=root) == {"x": T0 + timedelta(hours=1)}


def test_a_failed_log_append_puts_the_previous_list_back(root, monkeypatch):
    ks.kill_agent("x", "r", root=root)
    before = (state(root) / "killed_agents.json").read_bytes()

    def disk_full(path, line):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ks, "_append_line", disk_full)
    with pytest.raises(OSError, match="No space"):
        ks.kill_agent("y", "r", root=root)
    assert (state(root) / "killed_agents.json").read_bytes() == before
    with pytest.raises(OSError):
        ks.kill_strategy("s", "r", root=root)
    assert not (state(root) / "killed_strategies.json").exists()


# --- concurrency: 8 processes x 25 calls, and readers meanwhile


def plan(worker: int) -> tuple[list[tuple[str, str, bool]], set[str]]:
    """25 (name, action, noop) calls of one worker over its 5 own names, interleaved, and the names
    it leaves killed. Even names: kill, revive, kill, revive, kill (killed at the end); odd names:
    kill, kill (no-op), revive, kill, revive (live at the end)."""
    sequences = {
        0: [("kill", False), ("revive", False), ("kill", False), ("revive", False), ("kill", False)],
        1: [("kill", False), ("kill", True), ("revive", False), ("kill", False), ("revive", False)],
    }
    names = [f"w{worker}|n{j}\n" for j in range(5)]  # hostile characters on purpose
    calls = [(names[j], *sequences[j % 2][step]) for step in range(5) for j in range(5)]
    return calls, {names[j] for j in range(5) if j % 2 == 0}


def run_worker(root: str, worker: int, start) -> None:
    start.wait()
    for name, action, _ in plan(worker)[0]:
        change = ks.kill_agent if action == "kill" else ks.revive_agent
        change(name, f"worker {worker}", by="pipeline" if worker % 2 else "operator", root=root)


def start_workers(root: Path, workers: int):
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    processes = [context.Process(target=run_worker, args=(str(root), w, start)) for w in range(workers)]
    for process in processes:
        process.start()
    start.set()
    # the event must outlive the children's start-up: they unpickle it after start() returns
    return processes, start


def test_eight_processes_times_25_calls_lose_no_update(root):
    processes, _start = start_workers(root, 8)
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0

    expected = set().union(*(plan(w)[1] for w in range(8)))
    assert ks.killed_agents(root=root) == sorted(expected)
    assert (state(root) / "killed_agents.json").read_text() == json.dumps(sorted(expected), indent=2) + "\n"
    lines = (state(root) / "kill_log.jsonl").read_text().splitlines()
    assert len(lines) == 200
    entries = [json.loads(line) for line in lines]  # every line parses
    for worker in range(8):
        mine = [(e["name"], e["action"], e["noop"]) for e in entries if e["reason"] == f"worker {worker}"]
        assert mine == plan(worker)[0]  # each worker's changes, in its order, with the right no-ops
    assert sum(e["noop"] for e in entries) == 16


def test_readers_never_see_a_half_written_list_during_concurrent_writes(root):
    universe = {name for w in range(4) for name, _, _ in plan(w)[0]}
    processes, _start = start_workers(root, 4)
    reads, mid_write = 0, 0
    while any(p.is_alive() for p in processes) or reads == 0:
        names = ks.killed_agents(root=root)  # raises on a parse error
        assert names == sorted(names) and set(names) <= universe
        ks.is_agent_killed("w0|n0\n", root=root)
        entries = ks.kill_log(root)
        assert all(isinstance(e["time"], datetime) for e in entries)
        reads += 1
        mid_write += 0 < len(entries) < 100
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    assert mid_write > 0  # the reads did overlap the writes
    assert len(ks.kill_log(root)) == 100


# --- the runtime's import


def test_importing_the_kill_switch_loads_no_dagster_pandas_or_numpy():
    code = (
        "import sys, time\n"
        "start = time.perf_counter()\n"
        "import meta_pipeline.kill_switch\n"
        "heavy = sorted(m for m in ('dagster', 'pandas', 'numpy', 'pyarrow') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_the_check_is_fast(root):
    for i in range(200):
        ks.kill_agent(f"agent_{i}", root=root)
    start = time.perf_counter()
    for _ in range(200):
        assert ks.is_agent_killed("agent_7", root=root)
    assert (time.perf_counter() - start) / 200 < 0.01  # well under 10 ms per check


# --- the UI job


def run_job(root: Path, **order):
    import dagster as dg

    from meta_pipeline.defs.kill_switch import operate_kill_switch
    from meta_pipeline.defs.resources import DataRoot

    result = operate_kill_switch.execute_in_process(
        run_config={"ops": {"apply_kill_switch": {"config": order}}},
        resources={"data_root": DataRoot(root=str(root))},
        raise_on_error=False,
    )
    metadata = {}
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_OUTPUT:
            metadata = event.event_specific_data.metadata
    return result, metadata


def test_the_ui_job_kills_and_revives_as_an_operator(root):
    result, metadata = run_job(root, name=HOSTILE, action="kill", reason="from the UI")
    assert result.success
    assert ks.killed_agents(root=root) == [HOSTILE]
    assert [(e["by"], e["action"], e["reason"]) for e in ks.kill_log(root)] == [
        ("operator", "kill", "from the UI")
    ]
    table = metadata["kill_list"].value
    assert "a\\|b`" in table and "&lt;script&gt;" in table and "<script>" not in table
    assert metadata["noop"].value is False

    result, metadata = run_job(root, name=HOSTILE, action="kill", reason="twice")
    assert result.success and metadata["noop"].value is True
    assert "already killed" in metadata["change"].value

    result, _ = run_job(root, name="momentum", action="kill", kind="strategy", reason="crowded")
    assert result.success and ks.killed_strategies(root=root) == ["momentum"]
    result, metadata = run_job(root, name=HOSTILE, action="revive", reason="back")
    assert result.success and ks.killed_agents(root=root) == []
    assert "no agent is killed" in metadata["kill_list"].value


def test_the_ui_job_refuses_an_empty_name_or_reason(root):
    for order in (
        {"name": "", "action": "kill", "reason": "r"},
        {"name": "x", "action": "kill", "reason": " "},
    ):
        result, _ = run_job(root, **order)
        assert not result.success
    assert ks.kill_log(root) == []


def test_the_job_is_in_the_code_location():
    from meta_pipeline.definitions import defs
    from meta_pipeline.defs.kill_switch import OPERATE_KILL_SWITCH_JOB

    job = defs.resolve_job_def(OPERATE_KILL_SWITCH_JOB)  # resolving binds the data_root resource
    assert "data_root" in job.resource_defs
    assert job.description and "revive" in job.description
