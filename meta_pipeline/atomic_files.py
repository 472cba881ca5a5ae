"""Atomic file writes, standard library only: every output of the project goes through them.

A write goes to a temp file beside the target, is fsynced, given normal permissions and renamed over
the target, so a reader sees the old file or the new one, never half of one. This module imports
nothing but the standard library, so light readers and writers (the kill switch the agent runtime
calls before every run) use it without loading pandas or Dagster; :mod:`meta_pipeline.storage`
re-exports every name here for the rest of the project.

Every write creates its file with the permissions a plain ``open()`` would give (``0666`` minus the
umask), not ``mkstemp``'s ``0600``, so the app reading our outputs as another user can read them. A
writer killed mid-write leaves ``.<name>.<pid>.<random>.tmp`` behind; the next write to the same
folder removes the temp files of writers whose process is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "dumps_strict",
    "remove_stale_temp_files",
]

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.tmp$")


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` is not thread-safe)."""
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temp files in ``folder`` left by writers whose process no longer exists."""
    removed = []
    if not folder.is_dir():
        return removed
    for candidate in folder.glob(".*.tmp"):
        match = _TEMP.match(candidate.name)
        if match and int(match["pid"]) != os.getpid() and not _process_alive(int(match["pid"])):
            with contextlib.suppress(FileNotFoundError):
                candidate.unlink()
                removed.append(candidate)
    return removed


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; when the block ends without error, the temp file is
    fsynced, given normal permissions and renamed over ``path`` — readers see the old file or the
    new one, never half of one. On error the temp file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that refuses NaN and ±Infinity (they are not JSON; a reader would choke)."""
    return json.dumps(obj, allow_nan=False, **kwargs)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, dumps_strict(obj, indent=2, sort_keys=True, default=str) + "\n")
