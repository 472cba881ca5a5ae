"""``meta-pipeline kill / revive / killed``, run as an operator would: a subprocess, the data root from
``META_PIPELINE_ROOT`` or ``--root``, and no Dagster loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meta_pipeline import kill_switch as ks

HOSTILE = "a|b`\n<script>"


def cli(*args: str, cwd: Path, root: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("META_PIPELINE_", "DAGSTER_"))}
    if root is not None:
        env["META_PIPELINE_ROOT"] = str(root)
    return subprocess.run(
        [sys.executable, "-m", "meta_pipeline", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def dirs(tmp_path) -> tuple[Path, Path]:
    """(a working directory, a data root elsewhere)."""
    cwd, root = tmp_path / "cwd", tmp_path / "root"
    cwd.mkdir()
    return cwd, root


def test_kill_revive_and_list_with_the_root_from_the_environment(dirs):
    cwd, root = dirs
    proc = cli("kill", "delta_contrarian", "--reason", "pnl -200 bps", cwd=cwd, root=root)
    assert proc.returncode == 0, proc.stderr
    assert "killed agent 'delta_contrarian'" in proc.stdout
    assert ks.killed_agents(root=root) == ["delta_contrarian"]
    assert not (cwd / "meta_supervisor").exists()
    (entry,) = ks.kill_log(root)
    assert (entry["by"], entry["reason"], entry["noop"]) == ("operator", "pnl -200 bps", False)

    proc = cli("kill", "delta_contrarian", "--reason", "again", cwd=cwd, root=root)
    assert proc.returncode == 0 and "already killed" in proc.stdout and "no-op" in proc.stdout

    cli("kill", "eta_burner", "--reason", "errors 30%", cwd=cwd, root=root)
    proc = cli("killed", cwd=cwd, root=root)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("2 killed agents")
    header, first, second = lines[1:]
    assert header.split() == ["NAME", "SINCE", "(UTC)", "BY", "REASON"]
    assert first.split()[0] == "delta_contrarian" and first.endswith("operator  pnl -200 bps")
    assert second.split()[0] == "eta_burner" and second.endswith("errors 30%")
    # aligned: every column starts at the same offset on every line
    assert {line.index("operator") for line in (first, second)} == {header.index("BY")}

    proc = cli("revive", "delta_contrarian", "--reason", "bug fixed", cwd=cwd, root=root)
    assert proc.returncode == 0 and "revived agent 'delta_contrarian'" in proc.stdout
    proc = cli("revive", "delta_contrarian", "--reason", "twice", cwd=cwd, root=root)
    assert proc.returncode == 0 and "already live" in proc.stdout
    assert ks.killed_agents(root=root) == ["eta_burner"]
    assert [(e["action"], e["noop"]) for e in ks.kill_log(root)] == [
        ("kill", False),
        ("kill", True),
        ("kill", False),
        ("revive", False),
        ("revive", True),
    ]


def test_root_option_wins_over_the_environment_and_strategies_are_separate(dirs, tmp_path):
    cwd, root = dirs
    other = tmp_path / "other"
    proc = cli(
        "kill", "momentum", "--strategy", "--reason", "crowded", "--root", str(other), cwd=cwd, root=root
    )
    assert proc.returncode == 0, proc.stderr
    assert ks.killed_strategies(root=other) == ["momentum"] and ks.killed_agents(root=other) == []
    assert not root.exists()

    assert "no agent is killed" in cli("killed", "--root", str(other), cwd=cwd).stdout
    listed = cli("killed", "--strategy", "--root", str(other), cwd=cwd).stdout
    assert "1 killed strategy" in listed and "momentum" in listed and "crowded" in listed
    assert "no strategy is killed" in cli("killed", "--strategy", cwd=cwd, root=root).stdout


def test_the_current_directory_is_the_default_root(dirs):
    cwd, _ = dirs
    assert cli("kill", "x", "--reason", "r", cwd=cwd).returncode == 0
    assert ks.killed_agents(root=cwd) == ["x"]


def test_a_hostile_name_is_printed_safely(dirs):
    cwd, root = dirs
    proc = cli("kill", HOSTILE, "--reason", "line1\nline2", cwd=cwd, root=root)
    assert proc.returncode == 0, proc.stderr
    assert ks.killed_agents(root=root) == [HOSTILE]
    assert repr(HOSTILE) in proc.stdout and "<script>" in proc.stdout
    assert len(proc.stdout.splitlines()) == 1  # the name's newline does not break the line

    listed = cli("killed", cwd=cwd, root=root).stdout.splitlines()
    assert len(listed) == 3 and repr(HOSTILE) in listed[2] and repr("line1\nline2") in listed[2]

    escape = "evil\x1b[2J"  # a terminal escape sequence stays text
    cli("kill", escape, "--reason", "r", cwd=cwd, root=root)
    assert "\x1b" not in cli("killed", cwd=cwd, root=root).stdout


def test_a_name_starting_with_a_dash_goes_after_double_dash(dirs):
    cwd, root = dirs
    assert cli("kill", "--reason", "r", "--", "-odd", cwd=cwd, root=root).returncode == 0
    assert ks.killed_agents(root=root) == ["-odd"]


@pytest.mark.parametrize(
    "args",
    [
        ("kill", "x"),  # no reason
        ("kill", "x", "--reason", "  "),  # an empty reason
        ("kill", "", "--reason", "r"),  # an empty name
        ("revive", "", "--reason", "r"),
    ],
)
def test_usage_errors_exit_2_and_change_nothing(dirs, args):
    cwd, root = dirs
    proc = cli(*args, cwd=cwd, root=root)
    assert proc.returncode == 2 and proc.stderr
    assert not (root / "meta_supervisor" / "state" / "kill_log.jsonl").exists()


def test_a_corrupt_list_is_reported_with_its_path(dirs):
    cwd, root = dirs
    path = root / "meta_supervisor" / "state" / "killed_agents.json"
    path.parent.mkdir(parents=True)
    path.write_text('["x",')
    for args in (("kill", "y", "--reason", "r"), ("killed",)):
        proc = cli(*args, cwd=cwd, root=root)
        assert proc.returncode == 1 and str(path) in proc.stderr
    assert path.read_text() == '["x",'


def test_the_kill_commands_do_not_load_dagster(dirs):
    cwd, root = dirs
    code = (
        "import sys\n"
        "from meta_pipeline.cli import main\n"
        f"assert main(['kill', 'x', '--reason', 'r', '--root', {str(root)!r}]) == 0\n"
        f"assert main(['killed', '--root', {str(root)!r}]) == 0\n"
        f"assert main(['revive', 'x', '--reason', 'r', '--root', {str(root)!r}]) == 0\n"
        "heavy = sorted(m for m in ('dagster', 'pandas', 'numpy') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [
        json.loads(line)["action"] for line in (root / "meta_supervisor/state/kill_log.jsonl").open()
    ] == [
        "kill",
        "revive",
    ]
