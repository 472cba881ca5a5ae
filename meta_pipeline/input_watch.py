"""What was appended to an input file since the last look — the pure part of the ``new_input_lines``
sensor (no Dagster).

A *position* remembers, per input file, which file it was (device, inode and a fingerprint of its
first bytes) and how far it was read (byte offset, always just after a newline). On the next look:

* same file, grown → the new complete lines are read (a last line without its newline waits);
* a different file at the path (rotated and recreated, or replaced — even by one of the same size)
  → the rest of the old file is read if it is found under a rotated name
  (:data:`ROTATED_PATTERNS`, e.g. ``events.jsonl.1`` or ``events-20240305.jsonl``) and the new file
  is read from its start;
* the file shrank without changing identity (truncated in place) → read again from its start;
* no position yet (first look, or a cleared cursor) → start from the end: existing lines are the
  ingestion's business, never parsed here.

Lines are never validated here; :func:`meta_pipeline.ingest.line_day` gives the UTC day of a line
or ``None`` and never raises, so no input content can make a look fail.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

from meta_pipeline import ingest

HEAD_BYTES = 4096
MAX_CHUNK_BYTES = 64 * 1024 * 1024  # per file and look: a huge append is read over several ticks
ROTATED_PATTERNS = ("{name}.*", "{stem}-*{suffix}", "{stem}.*{suffix}")


@dataclass(frozen=True)
class Position:
    """Where reading of one input file stopped (JSON-able via :func:`dataclasses.asdict`)."""

    device: int
    inode: int
    head: str  # sha1 of the first min(size, HEAD_BYTES) bytes when last read
    head_len: int
    offset: int


@dataclass
class Look:
    """The outcome of one look at one file."""

    position: Position | None
    days: set[date] = field(default_factory=set)
    lines: int = 0
    unreadable_lines: int = 0  # lines whose day could not be read (the ingestion will quarantine them)
    notes: list[str] = field(default_factory=list)
    chunks: list[tuple[int, int, int, int]] = field(default_factory=list)  # (device, inode, start, end) read

    def as_cursor(self) -> dict | None:
        return asdict(self.position) if self.position else None


def _head(handle, length: int) -> str:
    handle.seek(0)
    return hashlib.sha1(handle.read(length)).hexdigest()


def rotated_files(path: Path) -> list[Path]:
    """Files beside ``path`` under one of the :data:`ROTATED_PATTERNS` names."""
    found: dict[Path, None] = {}
    for pattern in ROTATED_PATTERNS:
        glob = pattern.format(name=path.name, stem=path.stem, suffix=path.suffix)
        for candidate in sorted(path.parent.glob(glob)):
            if candidate != path and candidate.is_file() and not candidate.name.startswith("."):
                found[candidate] = None
    return list(found)


def find_rotated(path: Path, position: Position) -> Path | None:
    """The file that used to be at ``path``, now under a rotated name (same device and inode)."""
    for candidate in rotated_files(path):
        with contextlib.suppress(OSError):
            st = candidate.stat()
            if (st.st_dev, st.st_ino) == (position.device, position.inode):
                return candidate
    return None


@dataclass
class FileCheck:
    """What is at an input path now, compared with a stored :class:`Position`."""

    device: int
    inode: int
    head: str
    head_len: int
    size: int
    same_file: bool  # the file read before, not shrunk below the position: read on from the offset
    rotated: Path | None = None  # where the file read before went, if it was rotated
    notes: list[str] = field(default_factory=list)

    def at(self, offset: int) -> Position:
        return Position(self.device, self.inode, self.head, self.head_len, offset)


def identify(path: Path, position: Position | None) -> FileCheck:
    """Compare the file at ``path`` with ``position`` (see the module docstring). Raises ``OSError``
    if it cannot be read."""
    with path.open("rb") as handle:
        st = os.fstat(handle.fileno())
        head_len = min(st.st_size, HEAD_BYTES)
        head = _head(handle, head_len)
        same_head = (
            position is not None
            and st.st_size >= position.head_len
            and (_head(handle, position.head_len) if position.head_len != head_len else head) == position.head
        )
    check = FileCheck(st.st_dev, st.st_ino, head, head_len, st.st_size, same_file=False)
    if position is None:
        return check
    same_inode = (st.st_dev, st.st_ino) == (position.device, position.inode)
    if same_inode and same_head and st.st_size >= position.offset:
        check.same_file = True
    elif same_inode and same_head:
        check.notes.append(
            f"{path} shrank from {position.offset:,} to {st.st_size:,} bytes: reading it from the start"
        )
    elif not same_inode and (rotated := find_rotated(path, position)) is not None:
        check.rotated = rotated
        check.notes.append(f"{path} was rotated to {rotated.name}: reading its last lines, then the new file")
    else:
        check.notes.append(f"{path} was replaced (not the file read before): reading it from the start")
    return check


def _read_lines(path: Path, start: int, end: int, look: Look) -> int:
    """Read complete lines in [start, end) of ``path``; return the offset after the last one."""
    end = min(end, start + MAX_CHUNK_BYTES)
    with path.open("rb") as handle:
        handle.seek(start)
        data = handle.read(end - start)
        st = os.fstat(handle.fileno())
    complete = data[: data.rfind(b"\n") + 1]
    if not complete and len(data) == MAX_CHUNK_BYTES:
        # one line longer than a whole chunk: no day can be read from it (ingestion quarantines
        # it); step over it rather than stop here for ever
        look.unreadable_lines += 1
        look.notes.append(
            f"{path}: a line of more than {MAX_CHUNK_BYTES:,} bytes at offset {start:,} skipped"
        )
        complete = data
    for raw in complete.split(b"\n")[:-1]:
        if not raw.strip():
            continue
        look.lines += 1
        day = ingest.line_day(raw)
        if day is None:
            look.unreadable_lines += 1
        else:
            look.days.add(day)
    if complete:
        look.chunks.append((st.st_dev, st.st_ino, start, start + len(complete)))
    return start + len(complete)


def look_at(path: Path, position: Position | None) -> Look:
    """Read what was appended to ``path`` since ``position`` (see the module docstring).

    Raises ``OSError`` only for I/O failures (permissions, a vanished disk); never for content.
    """
    if not path.exists():
        return Look(position, notes=[f"{path} does not exist (yet)"])
    check = identify(path, position)
    look = Look(None, notes=list(check.notes))
    if position is None:
        look.notes.append(
            f"{path}: no position yet — starting from its end ({check.size:,} bytes not re-read)"
        )
        look.position = check.at(_last_newline(path, check.size))
        return look
    if check.rotated is not None:
        _read_lines(check.rotated, position.offset, check.rotated.stat().st_size, look)
    start = position.offset if check.same_file else 0
    look.position = check.at(_read_lines(path, start, check.size, look))
    return look


def _last_newline(path: Path, size: int) -> int:
    """The offset just after the last newline before ``size`` (a half-written last line is read later)."""
    if size == 0:
        return 0
    block = 65536
    with path.open("rb") as handle:
        end = size
        while end > 0:
            start = max(0, end - block)
            handle.seek(start)
            data = handle.read(end - start)
            index = data.rfind(b"\n")
            if index >= 0:
                return start + index + 1
            end = start
    return 0
