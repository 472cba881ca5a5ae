"""Reading a whole input: the loop over lines, the result, and the two file readers. The rules are in
the package docstring (:mod:`meta_pipeline.ingest`)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from meta_pipeline.ingest import fast as _fast
from meta_pipeline.ingest.fields import (
    _FLOAT_COLUMNS,
    QUARANTINE_COLUMNS,
    SIGNAL_COLUMNS,
    TELEMETRY_COLUMNS,
    _signal_row,
    _telemetry_row,
    signal_key,
    telemetry_key,
    validate_signal,
    validate_telemetry,
)
from meta_pipeline.ingest.lines import Rejected, _decode, iter_lines

_MAX_RAW_CHARS = 2000  # keep quarantine rows readable even if someone writes a megabyte line
_MAX_DETAIL_CHARS = 1000


class InputFileMissing(FileNotFoundError):
    """An input file does not exist. Raised by :func:`read_signals`/:func:`read_telemetry`; the
    caller decides whether that is an error (the app stopped writing) or a fresh start. An empty
    file that exists is valid and gives 0 rows. ``filename`` is the path."""

    def __init__(self, path: Path | str):
        super().__init__(2, f"input file {str(path)!r} does not exist", str(path))
        self.path = Path(path)

    def __str__(self) -> str:
        return f"input file {str(self.path)!r} does not exist"


@dataclass
class IngestResult:
    """What one pass over an input file produced.

    ``valid`` has the columns SIGNAL_COLUMNS or TELEMETRY_COLUMNS (``ts`` datetime64[ns, UTC],
    numbers float64, text plain ``str``/None, ``line_no`` int64); ``quarantine`` has
    QUARANTINE_COLUMNS, one row per rejected line plus one per recovered fragment, in file order.
    ``source`` names the file in quarantine details when known.
    """

    valid: pd.DataFrame
    quarantine: pd.DataFrame
    lines_read: int = 0
    blank_lines: int = 0
    duplicates: int = 0
    duplicate_lines: list[tuple[int, int]] = field(default_factory=list)  # (line, first seen at)
    recovered_fragments: int = 0  # quarantine rows with reason fragment_recovered
    source: str | None = None

    @property
    def rejected(self) -> int:
        """Lines rejected (a recovered fragment's row is not a rejected line)."""
        return len(self.quarantine) - self.recovered_fragments

    @property
    def rejected_share(self) -> float:
        """Rejected lines / non-blank lines (0.0 for a file without data lines)."""
        data_lines = self.lines_read - self.blank_lines
        return self.rejected / data_lines if data_lines else 0.0

    def rejected_by_reason(self) -> dict[str, int]:
        """Quarantine rows per reason code, most frequent first (includes ``fragment_recovered``)."""
        return dict(Counter(self.quarantine["reason"]).most_common())


def ingest_bytes(
    data: bytes,
    validate: Callable[[dict], dict],
    key: Callable[[dict], tuple],
    columns: list[str],
    *,
    source: str | None = None,
    first_line_no: int = 1,
    fast: bool = True,
) -> IngestResult:
    """Validate a JSON Lines file's bytes; never raises for any content of ``data``.

    ``data`` is the whole file, or a chunk of it that starts at line ``first_line_no`` (line numbers
    in rows and quarantine are the file's).

    ``validate`` turns one JSON object into a row dict or raises :class:`Rejected`; ``key`` gives a
    row's identity (later rows with a seen identity are duplicates); ``columns`` are the columns of
    ``valid``. ``source`` (e.g. the file path) is named, with the line number, in every quarantine
    ``detail``. An exception other than Rejected from validating or keying one line becomes a
    quarantine row with reason ``unexpected_error`` and the exception text.

    For the signal and telemetry validators, ordinary lines take a fast lane
    (:mod:`meta_pipeline.ingest.fast`) that gives the same result; ``fast=False`` reads every line
    the careful way (what the fast lane is tested against).
    """
    with contextlib.suppress(TypeError):  # an unhashable callable is used as given
        validate = _ROWS_WITH_NS.get(validate, validate)
    lines = _Lines(validate, key, source)
    spec = _fast.spec_for(validate, key, columns) if fast else None
    if spec is not None:
        valid, lines_read = _fast.ingest(data, first_line_no, spec, lines)
    else:
        rows: list[dict] = []
        lines_read = 0
        for line_no, raw, terminated in iter_lines(data, first_line_no):
            lines_read += 1
            row = lines.careful(line_no, raw, terminated)
            if row is not None:
                rows.append(row)
        valid = _frame(rows, columns)
    return IngestResult(
        valid=valid,
        quarantine=pd.DataFrame(lines.rejected, columns=QUARANTINE_COLUMNS).astype({"line_no": "int64"}),
        lines_read=lines_read,
        blank_lines=lines.blank,
        duplicates=len(lines.duplicate_lines),
        duplicate_lines=lines.duplicate_lines,
        recovered_fragments=lines.fragments,
        source=source,
    )


class _Lines:
    """The careful reading of one line at a time, and what it records: quarantine rows, identities
    seen, duplicates, blank lines, recovered fragments. Used for every line by the careful lane and
    for the lines the fast lane does not take."""

    def __init__(self, validate: Callable[[dict], dict], key: Callable[[dict], tuple], source: str | None):
        self.validate = validate
        self.key = key
        self.source = source
        self.rejected: list[dict] = []
        self.first_seen: dict[tuple, int] = {}
        self.duplicate_lines: list[tuple[int, int]] = []
        self.blank = 0
        self.fragments = 0

    def quarantine(self, line_no: int, raw: bytes, reason: str, detail: str) -> None:
        where = f"{self.source} line {line_no}: " if self.source else ""
        self.rejected.append(
            {
                "line_no": line_no,
                "reason": reason,
                "detail": _clean(where + detail)[:_MAX_DETAIL_CHARS],
                "raw": raw.decode("utf-8", errors="replace")[:_MAX_RAW_CHARS],
            }
        )

    def careful(self, line_no: int, raw: bytes, terminated: bool) -> dict | None:
        """One line → its row (with ``line_no``) if it is a new valid record, else None (blank,
        duplicate or quarantined: recorded here)."""
        if not raw.strip():
            self.blank += 1
            return None
        try:
            decoded = _decode(raw, terminated)
            if decoded.fragment is not None:
                self.fragments += 1
                self.quarantine(line_no, raw, "fragment_recovered", decoded.fragment_detail)
            row = self.validate(decoded.obj)
            identity = self.key(row)
            seen_at = self.first_seen.get(identity)
        except Rejected as exc:
            self.quarantine(line_no, raw, exc.reason, exc.detail)
            return None
        except Exception as exc:  # last resort: one line must never stop ingestion
            self.quarantine(line_no, raw, "unexpected_error", f"{type(exc).__name__}: {_safe_str(exc)}")
            return None
        if seen_at is not None:
            self.duplicate_lines.append((line_no, seen_at))
            return None
        self.first_seen[identity] = line_no
        row["line_no"] = line_no
        return row


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return "(the exception's text could not be produced)"


def _clean(text: str) -> str:
    """Text that can be encoded as UTF-8 (lone surrogates escaped)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _frame(rows: Iterable[dict], columns: list[str]) -> pd.DataFrame:
    rows = list(rows)
    frame = pd.DataFrame(rows, columns=[c for c in columns if c != "ts"])
    instants = np.fromiter((_ns(row["ts"]) for row in rows), dtype="int64", count=len(rows))
    frame.insert(columns.index("ts"), "ts", pd.to_datetime(instants, unit="ns", utc=True))
    frame["line_no"] = frame["line_no"].astype("int64")
    for column in frame.columns:
        if column in _FLOAT_COLUMNS:
            frame[column] = frame[column].astype("float64")
    return frame


def _ns(ts: Any) -> int:
    if type(ts) is int:
        return ts
    return ts.value if isinstance(ts, pd.Timestamp) else pd.Timestamp(ts).as_unit("ns").value


# the public validators, as used by the loop: same checks, ts kept as int nanoseconds
_ROWS_WITH_NS: dict[Callable[[dict], dict], Callable[[dict], dict]] = {
    validate_signal: _signal_row,
    validate_telemetry: _telemetry_row,
}


def read_signals(path: Path) -> IngestResult:
    """Read and validate a signals file (``alpha/events.jsonl``). Raises :class:`InputFileMissing`
    if ``path`` does not exist (OSError for other read failures); never for its content."""
    return ingest_bytes(_read(path), validate_signal, signal_key, SIGNAL_COLUMNS, source=str(path))


def read_telemetry(path: Path) -> IngestResult:
    """Read and validate a telemetry file (``telemetry/events.jsonl``); as :func:`read_signals`."""
    return ingest_bytes(_read(path), validate_telemetry, telemetry_key, TELEMETRY_COLUMNS, source=str(path))


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InputFileMissing(path) from None
