"""Validation of the app's JSON Lines inputs (signals and telemetry).

Pure functions, no Dagster. Each input line either becomes a typed row or a quarantine row that
keeps its line number, its raw text and a reason: nothing is silently dropped, nothing is fatal.
Input files are only ever read (in binary, so one invalid byte sequence spoils one line, not the
file).

Decisions where the file contract is silent:

* Blank lines carry no data; they are counted, not quarantined.
* A last line without a trailing newline that does not parse is most likely being appended right
  now; it is quarantined as ``incomplete_last_line`` and, because every run re-reads the whole file,
  picked up by the next run once complete.
* ``run_id``/``agent`` must be non-empty strings; numbers are not silently converted.
* A signal's identity is (``run_id``, instrument, direction, instant of ``ts``): ``BTC`` and
  ``BTC/USDT`` at ``12:00Z`` and ``14:00+02:00`` are the same signal. The first occurrence wins.
* Telemetry is one record per run: a repeated ``run_id`` counts once (first wins) and is reported
  as a duplicate.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from meta_pipeline.symbols import SymbolError, normalize_symbol

SIGNAL_COLUMNS = [
    "date",
    "ts",
    "agent",
    "run_id",
    "symbol",
    "instrument",
    "direction",
    "regime",
    "confidence",
    "score_final",
    "extra",
    "line_no",
]
TELEMETRY_COLUMNS = [
    "date",
    "ts",
    "agent",
    "run_id",
    "latency_ms",
    "tokens_in",
    "tokens_out",
    "errors",
    "cost_usd",
    "extra",
    "line_no",
]
QUARANTINE_COLUMNS = ["line_no", "reason", "detail", "raw"]

_SIGNAL_FIELDS = {"ts", "agent", "run_id", "symbol", "direction", "regime", "confidence", "score_final"}
_TELEMETRY_NUMBERS = ("latency_ms", "tokens_in", "tokens_out", "errors", "cost_usd")
_TELEMETRY_FIELDS = {"ts", "agent", "run_id", *_TELEMETRY_NUMBERS}
_MAX_RAW_CHARS = 2000  # keep quarantine rows readable even if someone writes a megabyte line


class Rejected(ValueError):
    """A line is invalid; ``reason`` is a short stable code used for counts, ``detail`` says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class IngestResult:
    """What one pass over an input file produced."""

    valid: pd.DataFrame
    quarantine: pd.DataFrame
    lines_read: int = 0
    blank_lines: int = 0
    duplicates: int = 0
    duplicate_lines: list[tuple[int, int]] = field(default_factory=list)  # (line, first seen at)

    @property
    def rejected(self) -> int:
        return len(self.quarantine)

    @property
    def rejected_share(self) -> float:
        data_lines = self.lines_read - self.blank_lines
        return self.rejected / data_lines if data_lines else 0.0

    def rejected_by_reason(self) -> dict[str, int]:
        return dict(Counter(self.quarantine["reason"]).most_common())


# --------------------------------------------------------------------------- field validators


def parse_ts(value: Any) -> datetime:
    """ISO-8601 text with an explicit offset (or ``Z``) → aware UTC datetime."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise Rejected(
            "ts_not_iso_string", f"ts must be an ISO-8601 string, got {type(value).__name__} {value!r}"
        )
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise Rejected("ts_unparseable", f"ts {value!r} is not ISO-8601") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise Rejected("ts_without_offset", f"ts {value!r} has no UTC offset; write Z or +HH:MM")
    return parsed.astimezone(UTC)


def _required_text(obj: dict, name: str) -> str:
    if name not in obj or obj[name] is None:
        raise Rejected("missing_field", f"required field {name!r} is missing")
    value = obj[name]
    if not isinstance(value, str):
        raise Rejected("wrong_type", f"{name} must be a string, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise Rejected("missing_field", f"required field {name!r} is empty")
    return value


def _optional_number(
    obj: dict, name: str, *, low: float | None = None, high: float | None = None, reason: str = "wrong_type"
) -> float:
    value = obj.get(name)
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Rejected("wrong_type", f"{name} must be a number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise Rejected("not_finite", f"{name} must be a finite number, got {value!r}")
    if (low is not None and number < low) or (high is not None and number > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise Rejected(reason, f"{name}={value!r} is outside {bounds}")
    return number


def _extra(obj: dict, known: set[str]) -> str:
    """Fields the contract does not name are kept verbatim, as a JSON object string."""
    rest = {k: v for k, v in obj.items() if k not in known}
    return json.dumps(rest, sort_keys=True, ensure_ascii=False) if rest else ""


def validate_signal(obj: dict) -> dict:
    ts = parse_ts(obj["ts"]) if obj.get("ts") is not None else _missing("ts")
    agent = _required_text(obj, "agent")
    run_id = _required_text(obj, "run_id")
    if obj.get("symbol") is None:
        _missing("symbol")
    try:
        instrument = normalize_symbol(obj["symbol"]).binance
    except SymbolError as exc:
        raise Rejected("bad_symbol", str(exc)) from None
    direction = obj.get("direction")
    if direction is None:
        _missing("direction")
    if not isinstance(direction, str) or direction.strip().upper() not in ("LONG", "SHORT"):
        raise Rejected("bad_direction", f"direction must be LONG or SHORT (any case), got {direction!r}")
    regime = obj.get("regime")
    if regime is not None and not isinstance(regime, str):
        raise Rejected("wrong_type", f"regime must be a string, got {type(regime).__name__} {regime!r}")
    return {
        "date": ts.date().isoformat(),
        "ts": ts,
        "agent": agent,
        "run_id": run_id,
        "symbol": obj["symbol"],
        "instrument": instrument,
        "direction": direction.strip().upper(),
        "regime": regime,
        "confidence": _optional_number(obj, "confidence", low=0.0, high=1.0, reason="bad_confidence"),
        "score_final": _optional_number(obj, "score_final"),
        "extra": _extra(obj, _SIGNAL_FIELDS),
    }


def validate_telemetry(obj: dict) -> dict:
    ts = parse_ts(obj["ts"]) if obj.get("ts") is not None else _missing("ts")
    row = {
        "date": ts.date().isoformat(),
        "ts": ts,
        "agent": _required_text(obj, "agent"),
        "run_id": _required_text(obj, "run_id"),
    }
    for name in _TELEMETRY_NUMBERS:
        row[name] = _optional_number(obj, name, low=0.0, reason="negative_metric")
    row["extra"] = _extra(obj, _TELEMETRY_FIELDS)
    return row


def _missing(name: str):
    raise Rejected("missing_field", f"required field {name!r} is missing")


def signal_key(row: dict) -> tuple:
    return (row["run_id"], row["instrument"], row["direction"], row["ts"])


def telemetry_key(row: dict) -> tuple:
    return (row["run_id"],)


# --------------------------------------------------------------------------- file reading


def iter_lines(data: bytes) -> Iterator[tuple[int, bytes, bool]]:
    """(1-based line number, bytes without the newline, whether a newline terminated it)."""
    lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")  # a UTF-8 byte-order mark is not data
    last = len(lines) - 1
    for index, line in enumerate(lines):
        if index == last and not line:
            return  # the file ended with a newline
        yield index + 1, line.rstrip(b"\r"), index != last


def ingest_bytes(
    data: bytes, validate: Callable[[dict], dict], key: Callable[[dict], tuple], columns: list[str]
) -> IngestResult:
    rows: list[dict] = []
    rejected: list[dict] = []
    first_seen: dict[tuple, int] = {}
    duplicate_lines: list[tuple[int, int]] = []
    lines_read = blank = 0
    for line_no, raw, terminated in iter_lines(data):
        lines_read += 1
        if not raw.strip():
            blank += 1
            continue
        try:
            row = _validate_line(raw, terminated, validate)
        except Rejected as exc:
            rejected.append(
                {
                    "line_no": line_no,
                    "reason": exc.reason,
                    "detail": exc.detail,
                    "raw": raw.decode("utf-8", errors="replace")[:_MAX_RAW_CHARS],
                }
            )
            continue
        identity = key(row)
        if identity in first_seen:
            duplicate_lines.append((line_no, first_seen[identity]))
            continue
        first_seen[identity] = line_no
        row["line_no"] = line_no
        rows.append(row)
    return IngestResult(
        valid=_frame(rows, columns),
        quarantine=pd.DataFrame(rejected, columns=QUARANTINE_COLUMNS).astype({"line_no": "int64"}),
        lines_read=lines_read,
        blank_lines=blank,
        duplicates=len(duplicate_lines),
        duplicate_lines=duplicate_lines,
    )


def _validate_line(raw: bytes, terminated: bool, validate: Callable[[dict], dict]) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected("invalid_utf8", f"invalid UTF-8 at byte {exc.start}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        if not terminated:
            raise Rejected(
                "incomplete_last_line",
                f"last line has no newline and is not valid JSON ({exc.msg}); "
                "it is probably still being written and will be read again next run",
            ) from None
        raise Rejected("invalid_json", f"{exc.msg} at column {exc.colno}") from None
    if not isinstance(obj, dict):
        raise Rejected("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    return validate(obj)


def _frame(rows: Iterable[dict], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=columns)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).dt.as_unit("ns")
    frame["line_no"] = frame["line_no"].astype("int64")
    for column in frame.columns:
        if column in ("confidence", "score_final", *_TELEMETRY_NUMBERS):
            frame[column] = frame[column].astype("float64")
    return frame


def read_signals(path: Path) -> IngestResult:
    return ingest_bytes(_read(path), validate_signal, signal_key, SIGNAL_COLUMNS)


def read_telemetry(path: Path) -> IngestResult:
    return ingest_bytes(_read(path), validate_telemetry, telemetry_key, TELEMETRY_COLUMNS)


def _read(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""
