"""The kill switch: which agents and strategies must not run, who said so, when and why.

The agent runtime asks before every agent run::

    from meta_pipeline.kill_switch import is_agent_killed

    if is_agent_killed("alpha_trend"):  # raises KillSwitchError when the kill list is unreadable
        return  # skip this run

This module imports only the standard library, ``filelock`` and :mod:`meta_pipeline.atomic_files`
(no Dagster, pandas or numpy), so the check costs one small file read. The data root is the ``root``
argument, else ``$META_PIPELINE_ROOT``, else the current directory, as for the rest of the app.

Files, under ``<root>/meta_supervisor/state/``:

``killed_agents.json``, ``killed_strategies.json``
    What is in force: a sorted JSON list of names, ``indent=2``, ASCII (other characters as ``\\u``
    escapes), one trailing newline — the format the runtime has always read. A name that is in the
    list is killed, whether or not the log knows why (a list edited by hand is honoured).
``kill_log.jsonl``
    Every kill and revive, appended and never rewritten, one JSON object per line: ``time``
    (ISO-8601 UTC, ``Z``), ``name``, ``kind`` (``agent``/``strategy``), ``action``
    (``kill``/``revive``), ``reason``, ``by`` (``operator``/``pipeline``) and ``noop`` (true when the
    name already was in that state: recorded, not an error).
``.kill_switch.lock``
    The lock every writer holds (:class:`filelock.FileLock`) while it re-reads the list, replaces it
    atomically (temp file, fsync, rename) and appends and fsyncs its log line, so concurrent writers
    lose no update and the log is in the order the changes were made.

The runtime's readers (:func:`is_agent_killed`, :func:`killed_agents`, :func:`kill_log`, …) take no
lock: the list file is replaced atomically, so they see the old list or the new one, never half of
one. The supervisor's :func:`killed_since` and :func:`revived_at` read the list and the log under the
lock, so the two agree (a user who may not write the state folder reads them without it).

A missing list file means nothing is killed. A list file that is not a JSON list of strings raises
:class:`KillSwitchError` naming the file, for writers *and* for :func:`is_agent_killed`: treating an
unreadable kill list as "nobody killed" would silently restart every killed agent, so the runtime
must treat the error as "do not run" (fail closed) until the file is fixed; the log holds every
change to rebuild it from.

Revive semantics: a revive takes the name off the list; the log keeps the kill and the revive.
:func:`revived_at` gives, for each name not killed now, the time of the revive that ended its latest
kill; the supervisor counts an agent's trades and telemetry for KILL and RETIRE only from that time
on, so a revive holds instead of being undone by the old losses at the next evaluation. A later kill
ends that: a name killed again is not in :func:`revived_at`.

A writer that dies between replacing the list and appending its log line leaves a change in force
but not logged: a kill shows in :func:`killed_since` with an unknown time, a revive is missing from
:func:`revived_at`. An append that fails with an error puts the previous list back before the error
propagates. A log line torn by a crash is skipped by the readers (with a warning once the next
append has terminated it).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock, Timeout

from meta_pipeline.atomic_files import atomic_write_bytes, atomic_write_text

__all__ = [
    "KINDS",
    "KillSwitchError",
    "is_agent_killed",
    "is_killed",
    "is_strategy_killed",
    "kill",
    "kill_agent",
    "kill_log",
    "kill_strategy",
    "killed",
    "killed_agents",
    "killed_since",
    "killed_strategies",
    "list_path",
    "log_path",
    "resolve_root",
    "revive",
    "revive_agent",
    "revive_strategy",
    "revived_at",
]

log = logging.getLogger(__name__)

Kind = Literal["agent", "strategy"]
Action = Literal["kill", "revive"]
By = Literal["operator", "pipeline"]
KINDS: tuple[str, ...] = ("agent", "strategy")
ACTIONS: tuple[str, ...] = ("kill", "revive")
BY: tuple[str, ...] = ("operator", "pipeline")

STATE_DIR = Path("meta_supervisor", "state")
LIST_FILES = {"agent": "killed_agents.json", "strategy": "killed_strategies.json"}
LOG_FILE = "kill_log.jsonl"
LOCK_FILE = ".kill_switch.lock"
# a write holds the lock for milliseconds; a minute means a writer is stuck, and an operator's
# command should say so rather than hang
LOCK_TIMEOUT_SECONDS = 60.0
ROOT_ENV = "META_PIPELINE_ROOT"


class KillSwitchError(RuntimeError):
    """The kill list cannot be read (not a JSON list of names) or its lock cannot be taken; the
    message names the file."""


# --- paths


def resolve_root(root: str | Path | None = None) -> Path:
    """``root``, else ``$META_PIPELINE_ROOT``, else the current directory (absolute)."""
    if root is None:
        root = (os.environ.get(ROOT_ENV) or "").strip() or os.getcwd()
    return Path(root).expanduser().resolve()


def _state_dir(root: str | Path | None) -> Path:
    return resolve_root(root) / STATE_DIR


def list_path(kind: Kind = "agent", *, root: str | Path | None = None) -> Path:
    """The list file of ``kind`` (``killed_agents.json`` or ``killed_strategies.json``)."""
    return _state_dir(root) / LIST_FILES[_check_kind(kind)]


def log_path(*, root: str | Path | None = None) -> Path:
    return _state_dir(root) / LOG_FILE


# --- validation and formats


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a name must be a non-empty string, got {name!r}")
    return name


def _check_kind(kind: object) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind  # type: ignore[return-value]


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be a timezone-aware datetime, got {now!r}")
    return now.astimezone(UTC)


def _format_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dump_list(names: set[str] | frozenset[str]) -> str:
    """The list file's bytes: sorted (by code point), indent 2, ASCII, trailing newline."""
    return json.dumps(sorted(names), indent=2) + "\n"


def _parse_list(path: Path, raw: bytes) -> frozenset[str]:
    try:
        names = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KillSwitchError(
            f"{path} is not valid JSON ({exc}); the kill switch will not guess who is killed: fix or "
            f"restore the file (every change is in {LOG_FILE} beside it)"
        ) from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise KillSwitchError(
            f"{path} must hold a JSON list of names (strings), found {type(names).__name__}"
            f"{'' if not isinstance(names, list) else ' with non-string items'}; fix or restore the file "
            f"(every change is in {LOG_FILE} beside it)"
        )
    return frozenset(names)


def _read_list(path: Path) -> tuple[frozenset[str], bytes | None]:
    """The names in a list file and its raw bytes (``None`` when it does not exist)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return frozenset(), None
    return _parse_list(path, raw), raw


# --- readers (no lock)


def killed(kind: Kind = "agent", *, root: str | Path | None = None) -> list[str]:
    """The killed names of ``kind``, sorted. Raises :class:`KillSwitchError` if the list is corrupt."""
    return sorted(_read_list(list_path(kind, root=root))[0])


def is_killed(name: str, kind: Kind = "agent", *, root: str | Path | None = None) -> bool:
    """Whether ``name`` is on the kill list of ``kind``.

    Raises
    ------
    ValueError
        ``name`` is not a non-empty string, or ``kind`` is unknown.
    KillSwitchError
        The list file exists but is not a JSON list of names. Fail closed: the caller must not run
        the agent (an unreadable list is never read as "nobody killed").
    OSError
        The file cannot be read (permissions): fail closed too.
    """
    return _check_name(name) in _read_list(list_path(kind, root=root))[0]


def is_agent_killed(name: str, *, root: str | Path | None = None) -> bool:
    """Whether the agent ``name`` is killed: the runtime's check before every run. A missing list
    means no agent is killed; a corrupt one raises :class:`KillSwitchError` (do not run)."""
    return is_killed(name, "agent", root=root)


def is_strategy_killed(name: str, *, root: str | Path | None = None) -> bool:
    """Whether the strategy ``name`` is killed (same rules as :func:`is_agent_killed`)."""
    return is_killed(name, "strategy", root=root)


def killed_agents(*, root: str | Path | None = None) -> list[str]:
    return killed("agent", root=root)


def killed_strategies(*, root: str | Path | None = None) -> list[str]:
    return killed("strategy", root=root)


def _parse_entry(line: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(line.decode("utf-8"))
        if not isinstance(entry, dict):
            return None
        if entry.get("kind") not in KINDS or entry.get("action") not in ACTIONS:
            return None
        if not isinstance(entry.get("name"), str) or not isinstance(entry.get("time"), str):
            return None
        moment = datetime.fromisoformat(entry["time"])
        if moment.tzinfo is None:
            return None
        entry["time"] = moment.astimezone(UTC)
        entry["noop"] = bool(entry.get("noop", False))
        return entry
    except (UnicodeDecodeError, ValueError):
        return None


def kill_log(root: str | Path | None = None) -> list[dict[str, Any]]:
    """Every entry of ``kill_log.jsonl``, in the order written (``[]`` when there is none).

    Each entry is the stored object with ``time`` as a tz-aware UTC ``datetime``. Only complete
    (newline-terminated) lines count: a trailing fragment is a line being written or torn by a crash.
    A complete line that is not a valid entry is skipped with a warning.
    """
    path = log_path(root=root)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    *lines, _fragment = raw.split(b"\n")
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        entry = _parse_entry(line)
        if entry is None:
            log.warning("%s line %d is not a kill-log entry; skipped: %r", path, number, line[:200])
        else:
            entries.append(entry)
    return entries


@contextmanager
def _locked(state: Path) -> Iterator[None]:
    state.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(state / LOCK_FILE), timeout=LOCK_TIMEOUT_SECONDS)
    try:
        lock.acquire()
    except Timeout:
        raise KillSwitchError(
            f"could not take the kill-switch lock {state / LOCK_FILE} within {LOCK_TIMEOUT_SECONDS:g} s: "
            "another writer holds it"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _fold(kind: str, root: str | Path | None) -> tuple[frozenset[str], dict[str, dict], dict[str, datetime]]:
    """(names on the list, the kill in force per name from the log, latest effective revive time
    per name), read together under the lock so the list and the log agree."""
    state = _state_dir(root)
    if not state.is_dir():
        return frozenset(), {}, {}
    try:
        with _locked(state):
            names = _read_list(state / LIST_FILES[kind])[0]
            entries = kill_log(root)
    except PermissionError:
        # a reader that may not write the state folder cannot take the lock: read without it (a
        # write landing between the two reads can then show one side of it)
        names = _read_list(state / LIST_FILES[kind])[0]
        entries = kill_log(root)
    in_force: dict[str, dict] = {}
    revived: dict[str, datetime] = {}
    for entry in entries:
        if entry["kind"] != kind:
            continue
        name, noop = entry["name"], entry["noop"]
        if entry["action"] == "kill":
            # an effective kill starts a new kill (and ends the revive before it); a no-op kill
            # stands in only when the log holds no effective one (the name was put on the list by hand)
            if not noop:
                in_force[name] = entry
                revived.pop(name, None)
            else:
                in_force.setdefault(name, entry)
        else:
            # a revive, even a no-op one (the name was live then), ends any kill before it
            in_force.pop(name, None)
            if not noop:
                revived[name] = entry["time"]
    return names, in_force, revived


def killed_since(kind: Kind = "agent", *, root: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """For each name killed now: the log entry of the kill in force (``time`` as a UTC datetime,
    ``reason``, ``by``, …).

    A name on the list that the log cannot explain (the list was edited by hand, or written by an
    older version) is still killed; its entry has ``time``, ``reason`` and ``by`` set to ``None``.
    Reads the list and the log under the writers' lock, so the two agree.
    """
    names, in_force, _ = _fold(_check_kind(kind), root)
    unknown = {"time": None, "kind": kind, "action": "kill", "reason": None, "by": None, "noop": False}
    return {name: in_force.get(name) or {**unknown, "name": name} for name in sorted(names)}


def revived_at(kind: Kind = "agent", *, root: str | Path | None = None) -> dict[str, datetime]:
    """For each name that is not killed now and whose latest kill was ended by a revive: the time
    (UTC) of that revive. No-op revives do not count (they changed nothing).

    The supervisor counts an agent's trades and telemetry only from this time on. A name killed
    again after its revive is not here; a name taken off the list by hand without a logged revive is
    not here either (there is no time to count from).
    """
    names, _, revived = _fold(_check_kind(kind), root)
    return {name: moment for name, moment in sorted(revived.items()) if name not in names}


# --- writers (one lock)


def _append_line(path: Path, line: bytes) -> None:
    with open(path, "a+b") as handle:
        # a line torn by a crash is terminated first, so this line stays whole and parseable
        handle.seek(0, os.SEEK_END)
        if handle.tell():
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                line = b"\n" + line
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def _change(
    name: str,
    kind: str,
    action: str,
    reason: str,
    by: str,
    root: str | Path | None,
    now: datetime | None,
) -> dict[str, Any]:
    _check_name(name)
    _check_kind(kind)
    if by not in BY:
        raise ValueError(f"by must be one of {BY}, got {by!r}")
    if not isinstance(reason, str):
        raise ValueError(f"reason must be a string, got {reason!r}")
    moment = _utc(now)
    state = _state_dir(root)
    path = state / LIST_FILES[kind]
    with _locked(state):
        # re-read under the lock: the list another writer just replaced is the one we change
        names, previous = _read_list(path)
        noop = (name in names) == (action == "kill")
        if not noop:
            atomic_write_text(path, _dump_list(names | {name} if action == "kill" else names - {name}))
        entry = {
            "time": _format_time(moment),
            "name": name,
            "kind": kind,
            "action": action,
            "reason": reason,
            "by": by,
            "noop": noop,
        }
        try:
            _append_line(state / LOG_FILE, (json.dumps(entry) + "\n").encode("ascii"))
        except BaseException:
            # no change without its log line: put the previous list back, then report the failure
            if not noop:
                try:
                    if previous is None:
                        path.unlink(missing_ok=True)
                    else:
                        atomic_write_bytes(path, previous)
                except OSError:
                    log.exception("%s: could not restore the list after the log append failed", path)
            raise
    return {**entry, "time": moment}


def kill(
    name: str,
    kind: Kind = "agent",
    *,
    reason: str = "",
    by: By = "operator",
    root: str | Path | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Put ``name`` on the kill list of ``kind`` and log it. Returns the log entry (``time`` as a
    datetime; ``noop`` true when it was already killed, which is logged, not an error).

    Raises ``ValueError`` for an empty name, an unknown ``kind`` or ``by`` or a naive ``now``, and
    :class:`KillSwitchError` when the list is corrupt (nothing is written then) or the lock cannot be
    taken within ``LOCK_TIMEOUT_SECONDS``.
    """
    return _change(name, kind, "kill", reason, by, root, now)


def revive(
    name: str,
    kind: Kind = "agent",
    *,
    reason: str = "",
    by: By = "operator",
    root: str | Path | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Take ``name`` off the kill list of ``kind`` and log it (see :func:`kill`; a revive of a live
    name is a logged no-op)."""
    return _change(name, kind, "revive", reason, by, root, now)


def kill_agent(
    name: str,
    reason: str = "",
    by: By = "operator",
    *,
    root: str | Path | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    return kill(name, "agent", reason=reason, by=by, root=root, now=now)


def revive_agent(
    name: str,
    reason: str = "",
    by: By = "operator",
    *,
    root: str | Path | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    return revive(name, "agent", reason=reason, by=by, root=root, now=now)


def kill_strategy(
    name: str,
    reason: str = "",
    by: By = "operator",
    *,
    root: str | Path | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    return kill(name, "strategy", reason=reason, by=by, root=root, now=now)


def revive_strategy(
    name: str,
    reason: str = "",
    by: By = "operator",
    *,
    root: str | Path | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    return revive(name, "strategy", reason=reason, by=by, root=root, now=now)
