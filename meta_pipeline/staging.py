"""Incremental ingestion: read only what was appended to an input file, stage the new rows by day,
and let each daily partition take its staged rows when it runs (docs/rules.md, *File contract*).

No Dagster here. Per input (``signals``, ``telemetry``) the state lives under
``<warehouse>/_staging/<input>/``::

    state.json                       which file was read how far (device, inode, a fingerprint of
                                     its first bytes, byte offset after the last complete line,
                                     lines before it) and running totals for the quarantine check
    rows/<YYYY-MM-DD>/<seq>.parquet  valid rows read but not yet taken by their day's partition
    quarantine/<seq>.parquet         rejected lines not yet taken by the quarantine table

:func:`stage_new_lines` reads the bytes appended since the stored offset (a rotated file's last
lines under its rotated name, then the new file from its start; a replaced or truncated file from
its start; see ``meta_pipeline/input_watch.py``), validates them once, and stages the rows by day.
:func:`consolidate_day` merges a day's stored partition with its staged rows — the stored rows first,
then the staged ones in the order they were read, so "the first occurrence wins" as in a full read —
writes it and removes the staged files it took, as one step. All of it runs under one
file lock per input, so a schedule, the sensor and a backfill can run at once; a crash between two
steps leaves rows staged twice at worst, which the merge's de-duplication absorbs.

A half-written last line (no newline yet) is never read: it waits for its newline. Rebuilding days
from scratch (:func:`restage_days`) reads the rotated files still present and the current file from
their starts, for those days only.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import pandas as pd
from filelock import FileLock

from meta_pipeline import ingest, input_watch
from meta_pipeline.storage import Warehouse, atomic_write_json, write_parquet

STAGING_DIR = "_staging"
QUARANTINE_EXTRA_COLUMNS = ["file", "file_id"]
READ_BLOCK = 64 * 1024 * 1024  # bytes validated at a time: memory stays bounded on a huge append


@dataclass(frozen=True)
class InputKind:
    """How to read one input: its validator, identity key and columns."""

    name: str
    validate: Callable[[dict], dict]
    key: Callable[[dict], tuple]
    columns: list[str]
    key_columns: tuple[str, ...]


SIGNALS = InputKind("signals", ingest.validate_signal, ingest.signal_key, ingest.SIGNAL_COLUMNS,
                    ("run_id", "instrument", "direction", "ts"))  # fmt: skip
TELEMETRY = InputKind("telemetry", ingest.validate_telemetry, ingest.telemetry_key, ingest.TELEMETRY_COLUMNS,
                      ("run_id",))  # fmt: skip


@dataclass
class ReadTotals:
    """Running totals over everything ever read from an input (for the rejected-share check)."""

    lines_read: int = 0
    blank_lines: int = 0
    rejected: int = 0
    duplicates: int = 0


@dataclass
class StageResult:
    """What one :func:`stage_new_lines` call read."""

    lines_read: int = 0
    rows: int = 0
    rejected: int = 0
    duplicates: int = 0
    blank_lines: int = 0
    days: set[date] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    pending_bytes: int = 0  # a last line still without its newline
    totals: ReadTotals = field(default_factory=ReadTotals)


class Staging:
    """The staged state of one input kind under a warehouse."""

    def __init__(self, warehouse: Warehouse, kind: InputKind):
        self.kind = kind
        self.directory = warehouse.directory / STAGING_DIR / kind.name
        self.warehouse = warehouse

    # ------------------------------------------------------------------ state
    @property
    def lock(self) -> FileLock:
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.directory.parent / f"{self.kind.name}.lock"))

    def _state_path(self) -> Path:
        return self.directory / "state.json"

    def load_state(self) -> tuple[input_watch.Position | None, int, ReadTotals]:
        """(position, lines before its offset, running totals); (None, 0, zeros) before any read."""
        path = self._state_path()
        if not path.exists():
            return None, 0, ReadTotals()
        raw = json.loads(path.read_text())
        position = input_watch.Position(**raw["position"]) if raw.get("position") else None
        return position, int(raw.get("line_no", 0)), ReadTotals(**raw.get("totals", {}))

    def position(self) -> input_watch.Position | None:
        return self.load_state()[0]

    def _save_state(self, position: input_watch.Position | None, line_no: int, totals: ReadTotals) -> None:
        atomic_write_json(
            self._state_path(),
            {
                "position": asdict(position) if position else None,
                "line_no": line_no,
                "totals": asdict(totals),
            },
        )

    def has_read(self) -> bool:
        """Whether anything was ever read from this input (then a missing file is an error)."""
        position, _, totals = self.load_state()
        return bool(position and position.offset) or totals.lines_read > 0

    # ------------------------------------------------------------------ staged files
    def _next_seq(self) -> str:
        # nanosecond clock + pid: unique across processes, and ordered as they were written
        return f"{pd.Timestamp.now(tz='UTC').value:020d}-{os.getpid()}"

    def _stage(
        self, result: ingest.IngestResult, file: Path, file_id: str, only_days: set[str] | None
    ) -> set[date]:
        seq = self._next_seq()
        valid = result.valid
        if only_days is not None:
            valid = valid[valid["date"].isin(only_days)]
        days = set()
        for day, rows in valid.groupby("date", sort=True):
            write_parquet(self.directory / "rows" / day / f"{seq}.parquet", rows)
            days.add(date.fromisoformat(day))
        if len(result.quarantine) and only_days is None:
            quarantine = result.quarantine.assign(file=str(file), file_id=file_id)
            write_parquet(self.directory / "quarantine" / f"{seq}.parquet", quarantine)
        return days

    def _day_files(self, day: str) -> list[Path]:
        return sorted((self.directory / "rows" / day).glob("*.parquet"))

    def _quarantine_files(self) -> list[Path]:
        return sorted((self.directory / "quarantine").glob("*.parquet"))

    def drop_day(self, day: str) -> None:
        for path in self._day_files(day):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            (self.directory / "rows" / day).rmdir()


def _file_id(position: input_watch.Position) -> str:
    return f"{position.device}:{position.inode}:{position.head[:12]}"


def _read_range(path: Path, start: int, end: int) -> Iterable[tuple[int, bytes]]:
    """Complete lines of ``path`` in [start, end), as (offset, bytes) blocks of at most READ_BLOCK."""
    with path.open("rb") as handle:
        handle.seek(start)
        offset = start
        while offset < end:
            data = handle.read(min(READ_BLOCK, end - offset))
            if not data:
                return
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                if len(data) < READ_BLOCK:
                    return  # only a half-written last line is left
                cut = len(data)  # a single line longer than a block: take it whole
            yield offset, data[:cut]
            offset += cut
            handle.seek(offset)


def _validate(
    staging: Staging, path: Path, start: int, end: int, line_no: int, file_id: str, totals: ReadTotals,
    result: StageResult, only_days: set[str] | None = None,
) -> tuple[int, int]:  # fmt: skip
    """Validate and stage the complete lines of ``path`` in [start, end). Returns (offset, line_no) after them."""
    offset = start
    for block_start, data in _read_range(path, start, end):
        read = ingest.ingest_bytes(
            data, staging.kind.validate, staging.kind.key, staging.kind.columns,
            source=str(path), first_line_no=line_no + 1,
        )  # fmt: skip
        result.days |= staging._stage(read, path, file_id, only_days)
        if only_days is None:
            for total, value in (
                ("lines_read", read.lines_read), ("blank_lines", read.blank_lines),
                ("rejected", read.rejected), ("duplicates", read.duplicates),
            ):  # fmt: skip
                setattr(totals, total, getattr(totals, total) + value)
                setattr(result, total, getattr(result, total) + value)
            result.rows += len(read.valid)
        line_no += data.count(b"\n")
        offset = block_start + len(data)
    return offset, line_no


def stage_new_lines(warehouse: Warehouse, kind: InputKind, path: Path) -> StageResult:
    """Validate the lines appended to ``path`` since the last call and stage their rows by day.

    Raises :class:`meta_pipeline.ingest.InputFileMissing` when ``path`` does not exist (the caller
    decides whether that is a fresh start or an error), ``OSError`` for read failures; never for
    the file's content.
    """
    staging = Staging(warehouse, kind)
    with staging.lock:
        if not path.exists():
            raise ingest.InputFileMissing(path)
        position, line_no, totals = staging.load_state()
        result = StageResult(totals=totals)
        check = input_watch.identify(path, position)
        result.notes += check.notes
        if check.rotated is not None and position is not None:
            rotated_end = check.rotated.stat().st_size
            _validate(
                staging,
                check.rotated,
                position.offset,
                rotated_end,
                line_no,
                _file_id(position),
                totals,
                result,
            )
        start, line_no = (position.offset, line_no) if check.same_file else (0, 0)
        file_id = _file_id(check.at(0))
        offset, line_no = _validate(staging, path, start, check.size, line_no, file_id, totals, result)
        result.pending_bytes = check.size - offset
        staging._save_state(check.at(offset), line_no, totals)
        return result


def restage_days(warehouse: Warehouse, kind: InputKind, path: Path, days: Iterable[str]) -> StageResult:
    """Rebuild ``days`` from scratch: drop their staged rows and re-read, for those days only, the
    rotated files still present (oldest first) and the current file up to the stored offset.

    Call :func:`stage_new_lines` first so nothing appended is read twice. The stored partitions of
    ``days`` are replaced by :func:`consolidate_day` with ``from_scratch=True``.
    """
    staging = Staging(warehouse, kind)
    wanted = set(days)
    result = StageResult()
    with staging.lock:
        for day in wanted:
            staging.drop_day(day)
        position, _, totals = staging.load_state()
        rotated = sorted(input_watch.rotated_files(path), key=lambda p: p.stat().st_mtime)
        if rotated:
            result.notes.append("rebuilt from " + ", ".join(p.name for p in rotated) + f" and {path.name}")
        else:
            result.notes.append(
                f"rebuilt from {path.name}; no rotated file of it is left, so older lines are not re-read"
            )
        for old in rotated:
            _validate(staging, old, 0, old.stat().st_size, 0, "rotated", ReadTotals(), result, wanted)
        end = position.offset if position else 0
        if path.exists() and end:
            _validate(staging, path, 0, end, 0, _file_id(position), ReadTotals(), result, wanted)
    return result


def _no_rows(kind: InputKind) -> pd.DataFrame:
    return ingest.ingest_bytes(b"", kind.validate, kind.key, kind.columns).valid


@dataclass
class DayTake:
    rows: pd.DataFrame
    staged_files: list[Path]
    new_rows: int
    duplicates: int


def consolidate_day(
    warehouse: Warehouse, kind: InputKind, asset: str, day: str, *, from_scratch: bool = False
) -> DayTake:
    """Give partition ``day`` its staged rows: its stored rows (unless ``from_scratch``) then the
    staged ones, de-duplicated on the input's identity key (first wins), sorted by (ts, line_no);
    write the partition and remove the staged files it took.

    Taking, writing and removing happen under the input's lock as one step, so two runs of the
    same day at once can never write a partition without rows that the other one removed. A stored
    partition with nothing staged for it is left as it is (a tick costs what it changed).
    """
    staging = Staging(warehouse, kind)
    with staging.lock:
        files = staging._day_files(day)
        stored = None if from_scratch else warehouse.read_partition(asset, day)
        frames = [f for f in [stored, *(pd.read_parquet(p) for p in files)] if f is not None and len(f)]
        if frames:
            merged = pd.concat(frames, ignore_index=True)
            unique = merged.drop_duplicates(list(kind.key_columns), keep="first")
            rows = unique.sort_values(["ts", "line_no"], kind="stable", ignore_index=True)
            taken = DayTake(
                rows, files, len(unique) - (0 if stored is None else len(stored)), len(merged) - len(unique)
            )
        else:
            taken = DayTake(stored.iloc[0:0] if stored is not None else _no_rows(kind), files, 0, 0)
        if files or from_scratch or stored is None:
            warehouse.write_partition(asset, day, taken.rows)
            for path in files:
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                (staging.directory / "rows" / day).rmdir()
    return taken


def consolidate_quarantine(warehouse: Warehouse, kind: InputKind, asset: str) -> tuple[pd.DataFrame, int]:
    """Append the staged rejected lines to the quarantine table (a line of a file counted once),
    write it and remove the staged files, under the input's lock; returns (table, lines added)."""
    staging = Staging(warehouse, kind)
    columns = ingest.QUARANTINE_COLUMNS + QUARANTINE_EXTRA_COLUMNS
    with staging.lock:
        files = staging._quarantine_files()
        stored = warehouse.read_table(asset)
        frames = [f for f in [stored, *(pd.read_parquet(p) for p in files)] if f is not None and len(f)]
        if frames:
            merged = pd.concat(frames, ignore_index=True).reindex(columns=columns)
            table = merged.drop_duplicates(["file_id", "line_no", "reason"], keep="first").reset_index(
                drop=True
            )
        else:
            table = pd.DataFrame({c: pd.Series(dtype="int64" if c == "line_no" else object) for c in columns})
        warehouse.write_table(asset, table)
        for path in files:
            path.unlink(missing_ok=True)
    return table, len(table) - (0 if stored is None else len(stored))
