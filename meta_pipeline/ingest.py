"""Validation of the app's JSON Lines inputs (signals ``alpha/events.jsonl`` and telemetry
``telemetry/events.jsonl``), as the file contract in docs/rules.md (*File contract*) describes them.

Pure functions, no Dagster. Each input line either becomes a typed row or a quarantine row that
keeps its line number, its raw text and a reason code: nothing is silently dropped and **no line can
stop ingestion** — a line that breaks a validator in a way nobody foresaw becomes a quarantine row
with reason ``unexpected_error`` and the exception text. Input files are only ever read, in binary,
so one invalid byte sequence spoils one line, not the file.

Counting. Every line read is exactly one of: a valid row, a duplicate, a rejected line (one
quarantine row) or a blank line, so ``len(valid) + duplicates + rejected + blank_lines ==
lines_read``. A line that held a crashed writer's fragment glued to a complete record adds one more
quarantine row (reason ``fragment_recovered``), counted in ``recovered_fragments``, not in
``rejected``.

Decisions where the file contract is silent, and why:

* Blank lines carry no data; they are counted, not quarantined.
* A last line without a trailing newline that does not parse (including one cut inside a multi-byte
  UTF-8 character) is most likely being appended right now; it is quarantined as
  ``incomplete_last_line`` and, because every run re-reads the whole file, picked up by the next run
  once complete.
* Lines end with LF; CRLF is accepted. A line that does not parse and contains a bare CR comes from
  a writer using CR-only line endings: it is quarantined as ``cr_line_endings`` (the records in it
  are *not* split on CR and guessed at), so the writer gets fixed instead of the data being silently
  re-cut with line numbers no other tool agrees with.
* A line that does not parse but ends with a complete JSON object carrying ``ts`` or ``run_id``
  (a crashed writer's fragment followed by the next record: ``{"ts": "2024-03-0{"ts": …}``) yields
  that object as the line's record (same line number); the text before it is reported as a
  ``fragment_recovered`` quarantine row.
* ``run_id``/``agent`` must be non-empty strings; numbers are not silently converted.
* ``ts`` must be ISO-8601 text with an offset, between 2000-01-01T00:00Z (inclusive) and
  2100-01-01T00:00Z (exclusive), else ``ts_out_of_range``: no crypto price exists before 2009, a
  year like 1970 or 9999 is a writer bug, and the window is well inside what pandas
  ``datetime64[ns]`` can hold (1677-09-22 … 2262-04-11). ``ts`` is kept to the nanosecond; digits
  beyond the ninth round *up*, so a signal is never priced from a bar that opened before it.
* A signal's identity is (``run_id``, instrument, direction, exact instant of ``ts``): ``BTC`` and
  ``BTC/USDT`` at ``12:00Z`` and ``14:00+02:00`` are the same signal. The first occurrence wins.
* Telemetry is one record per run: a repeated ``run_id`` counts once (first wins) and is reported
  as a duplicate. Only a telemetry line without a readable ``ts``, ``agent`` or ``run_id`` is
  quarantined; an unreadable metric leaves that metric NaN and names it in ``unreadable_metrics``
  (see :func:`validate_telemetry`).
* Hostile text: a line nested deeper than :data:`MAX_DEPTH` is ``too_deep``; a lone UTF-16
  surrogate escape (``"\\ud800"``) anywhere is ``invalid_unicode`` (it cannot be written as UTF-8 or
  Parquet); a number too large for a float (``1e400``, a 400-digit integer) where a number is
  needed is ``number_out_of_range`` (the literals ``NaN``/``Infinity`` are ``not_finite``).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
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
    "unreadable_metrics",
    "metrics_raw",
    "extra",
    "line_no",
]
QUARANTINE_COLUMNS = ["line_no", "reason", "detail", "raw"]

TS_MIN = datetime(2000, 1, 1)
"""Earliest accepted ``ts`` (UTC, inclusive); see the module docstring."""
TS_MAX = datetime(2100, 1, 1)
"""First ``ts`` (UTC) no longer accepted."""
MAX_DEPTH = 64
"""Deepest JSON nesting accepted on a line (a record is 1; its ``extra`` fields may nest). Deeper
lines are ``too_deep``: far beyond any real record, and it keeps the JSON parser and encoder well
away from Python's recursion limit."""

_SIGNAL_FIELDS = {"ts", "agent", "run_id", "symbol", "direction", "regime", "confidence", "score_final"}
_TELEMETRY_NUMBERS = ("latency_ms", "tokens_in", "tokens_out", "errors", "cost_usd")
_TELEMETRY_FIELDS = {"ts", "agent", "run_id", *_TELEMETRY_NUMBERS}
_FLOAT_COLUMNS = {"confidence", "score_final", *_TELEMETRY_NUMBERS}
_FLOAT_MAX = sys.float_info.max
_MAX_RAW_CHARS = 2000  # keep quarantine rows readable even if someone writes a megabyte line
_MAX_DETAIL_CHARS = 1000
_MAX_RECOVERY_TRIES = 100  # candidate "{" positions tried when looking for a glued record

_EPOCH = datetime(1970, 1, 1)
_EPOCH_DATE = date(1970, 1, 1)
_ONE_US = timedelta(microseconds=1)
_NS_PER_DAY = 86_400 * 10**9
_TS_MIN_NS = (TS_MIN - _EPOCH) // _ONE_US * 1000
_TS_MAX_NS = (TS_MAX - _EPOCH) // _ONE_US * 1000
# digits beyond the microsecond: the fraction right after the seconds of the time part
_SUB_MICRO = re.compile(r"[^+\-\d]\d\d(?::?\d\d){2}[.,]\d{6}(\d+)")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_DEPTH_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_OBJECT_START = re.compile(r'\{[ \t]*["}]')
_NUMERIC_TEXT = re.compile(r"[ \t]*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?[ \t]*")


class Rejected(ValueError):
    """A line is invalid; ``reason`` is a short stable code used for counts, ``detail`` says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


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


# --------------------------------------------------------------------------- JSON decoding


class _JsonConstant(float):
    """``NaN``/``Infinity``/``-Infinity`` written as such (``not_finite``), as opposed to a finite
    literal too large for a float such as ``1e400`` (``number_out_of_range``)."""


class _LongInteger:
    """An integer literal with more digits than Python converts (``sys.get_int_max_str_digits``)."""

    __slots__ = ("digits",)

    def __init__(self, digits: str):
        self.digits = digits

    def __repr__(self) -> str:
        return f"<integer with {len(self.digits.lstrip('-'))} digits>"


def _parse_long_int(text: str) -> int | _LongInteger:
    try:
        return int(text)
    except ValueError:
        return _LongInteger(text)


_DECODER = json.JSONDecoder(parse_constant=_JsonConstant)
_LONG_INT_DECODER = json.JSONDecoder(parse_constant=_JsonConstant, parse_int=_parse_long_int)


def _json_default(value: object) -> object:
    if isinstance(value, _LongInteger):
        return value.digits  # kept as text: no JSON reader would take it as a number anyway
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, allow_nan=False, default=_json_default)


def _dumps(value: object) -> str:
    """Strict JSON text (non-finite floats written as the strings "NaN"/"Infinity"/"-Infinity")."""
    try:
        return _ENCODER.encode(value)
    except ValueError:
        return _ENCODER.encode(_finite_only(value))


def _finite_only(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite_only(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_only(v) for v in value]
    return value


def _loads(text: str, start: int | None = None) -> Any:
    """``json.loads`` (or ``raw_decode`` from ``start``) that turns integers too long for Python into
    :class:`_LongInteger` and deep nesting into ``too_deep``; raises ``json.JSONDecodeError``."""
    try:
        try:
            return _DECODER.decode(text) if start is None else _DECODER.raw_decode(text, start)
        except json.JSONDecodeError:
            raise
        except ValueError:  # "Exceeds the limit (4300 digits) for integer string conversion"
            return (
                _LONG_INT_DECODER.decode(text) if start is None else _LONG_INT_DECODER.raw_decode(text, start)
            )
    except RecursionError:
        raise Rejected(
            "too_deep", f"JSON nesting deeper than the parser allows (limit {MAX_DEPTH})"
        ) from None


def _depth(text: str) -> int:
    """Deepest bracket nesting outside strings; stops counting once beyond MAX_DEPTH."""
    depth = deepest = 0
    for match in _DEPTH_TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    break
        elif token in "]}":
            depth -= 1
    return deepest


def _check_unicode(text: str, obj: Any) -> None:
    """Reject lone surrogates (``"\\ud800"``): valid JSON escapes, but not text UTF-8 or Parquet can
    hold. Pairs (``"\\ud83d\\ude00"``) are decoded into one character and are fine."""
    if not _SURROGATE_ESCAPE.search(text):
        return
    try:
        json.dumps(obj, ensure_ascii=False, default=_json_default).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Rejected(
            "invalid_unicode",
            f"a key or value holds a lone UTF-16 surrogate escape ({exc.object[exc.start : exc.end]!a}), "
            "which is not a character and cannot be stored as UTF-8",
        ) from None


@dataclass
class _Decoded:
    obj: dict
    fragment: str | None = None  # text before a recovered record
    fragment_detail: str = ""


def _decode(raw: bytes, terminated: bool) -> _Decoded:
    """One non-blank line → its JSON object, or :class:`Rejected`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if not terminated and exc.reason == "unexpected end of data":
            raise Rejected(
                "incomplete_last_line",
                f"last line has no newline and ends inside a multi-byte UTF-8 character (byte {exc.start}); "
                "it is probably still being written and will be read again next run",
            ) from None
        raise Rejected("invalid_utf8", f"invalid UTF-8 at byte {exc.start}") from None
    if text.count("[") + text.count("{") > MAX_DEPTH and (depth := _depth(text)) > MAX_DEPTH:
        raise Rejected("too_deep", f"JSON nested more than {MAX_DEPTH} levels deep (at least {depth})")
    try:
        obj = _loads(text)
    except json.JSONDecodeError as exc:
        return _undecodable(text, terminated, exc)
    _check_unicode(text, obj)
    if not isinstance(obj, dict):
        raise Rejected("not_an_object", f"expected a JSON object, got {_json_type(obj)}")
    return _Decoded(obj)


def _undecodable(text: str, terminated: bool, exc: json.JSONDecodeError) -> _Decoded:
    stripped = text.rstrip("\r")
    if "\r" in stripped:
        crs = stripped.count("\r")
        raise Rejected(
            "cr_line_endings",
            f"the line holds {crs} carriage return(s) (\\r) without a line feed and is not valid JSON: "
            f"the writer uses CR-only line endings, which JSON Lines does not allow, so about {crs + 1} "
            "records in it were not read; convert the file's line endings to LF",
        )
    recovered = _recover(text)
    if recovered is not None:
        return recovered
    if not terminated:
        raise Rejected(
            "incomplete_last_line",
            f"last line has no newline and is not valid JSON ({exc.msg}); "
            "it is probably still being written and will be read again next run",
        )
    raise Rejected("invalid_json", f"{exc.msg} at column {exc.colno}")


def _recover(text: str) -> _Decoded | None:
    """A complete record (JSON object with ``ts`` or ``run_id``) that ends the line after some text
    that does not parse: a crashed writer's fragment glued to the next record."""
    for tries, match in enumerate(_OBJECT_START.finditer(text, 1)):
        if tries >= _MAX_RECOVERY_TRIES:
            break
        start = match.start()
        try:
            obj, end = _loads(text, start)
        except (ValueError, Rejected):  # JSONDecodeError is a ValueError
            continue
        if not isinstance(obj, dict) or text[end:].strip(" \t\r\n") or not ("ts" in obj or "run_id" in obj):
            continue
        _check_unicode(text[start:end], obj)
        fragment = text[:start]
        try:
            whole = isinstance(_loads(fragment.strip(" \t\r\n")), dict)
        except (ValueError, Rejected):
            whole = False
        what = (
            "are themselves a complete JSON object (two records written without a newline between "
            "them); that first record was not read"
            if whole
            else "are an unfinished record (a writer stopped mid-line)"
        )
        return _Decoded(
            obj,
            fragment,
            f"{_short(fragment)} (the line's first {start} characters) {what}; the complete record "
            f"from column {start + 1} was read as this line's record",
        )
    return None


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    if isinstance(value, int | float | _LongInteger):
        return "a number"
    return {str: "a string", list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------- field validators


def _parse_instant(value: Any) -> tuple[int, str]:
    """``ts`` text → (nanoseconds since 1970-01-01T00:00Z, UTC date ``YYYY-MM-DD``) or Rejected."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise Rejected(
            "ts_not_iso_string",
            f"ts must be an ISO-8601 string, got {_json_type(value)} {_short(value)}",
        )
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except (ValueError, TypeError, OverflowError, IndexError):
        raise Rejected("ts_unparseable", f"ts {_short(value)} is not ISO-8601") from None
    offset = parsed.utcoffset()
    if offset is None:
        raise Rejected("ts_without_offset", f"ts {_short(value)} has no UTC offset; write Z or +HH:MM")
    try:
        naive_utc = parsed.replace(tzinfo=None) - offset
    except OverflowError:
        naive_utc = None
    ns = None
    if naive_utc is not None:
        ns = (naive_utc - _EPOCH) // _ONE_US * 1000
        if (extra := _SUB_MICRO.search(text)) is not None:
            digits = extra.group(1)  # the 7th, 8th, … fractional digit: below a microsecond
            ns += int(digits[:3].ljust(3, "0")) + (1 if digits[3:].strip("0") else 0)
    if ns is None or not _TS_MIN_NS <= ns < _TS_MAX_NS:
        raise Rejected(
            "ts_out_of_range",
            f"ts {_short(value)} is outside {TS_MIN:%Y-%m-%d}T00:00Z … {TS_MAX:%Y-%m-%d}T00:00Z (exclusive)",
        )
    return ns, _day_text(ns // _NS_PER_DAY)


_DAY_TEXT: dict[int, str] = {}


def _day_text(day: int) -> str:
    text = _DAY_TEXT.get(day)
    if text is None:
        text = _DAY_TEXT.setdefault(day, (_EPOCH_DATE + timedelta(days=day)).isoformat())
    return text


def parse_ts(value: Any) -> pd.Timestamp:
    """ISO-8601 text with an explicit offset (or ``Z``) → UTC :class:`pandas.Timestamp`, exact to the
    nanosecond (a ``datetime`` subclass: ``.date()``, ``.isoformat()`` work).

    Fractional seconds beyond nine digits round up to the next nanosecond, so the instant is never
    earlier than the one written. Raises :class:`Rejected` with reason ``ts_not_iso_string``,
    ``ts_unparseable``, ``ts_without_offset`` or ``ts_out_of_range`` (outside
    :data:`TS_MIN` … :data:`TS_MAX`); never anything else.
    """
    ns, _ = _parse_instant(value)
    return pd.Timestamp(ns, tz=UTC)


def line_day(raw: bytes) -> date | None:
    """The UTC date of the record on one input line (``raw`` without or with its line ending), or
    None when the line has no readable record or ``ts``. Never raises, for any bytes: meant for
    watchers (sensors) that only need to know which days a chunk of lines touches."""
    try:
        decoded = _decode(bytes(raw).rstrip(b"\r\n"), terminated=True)
        ns, _ = _parse_instant(decoded.obj.get("ts"))
        return _EPOCH_DATE + timedelta(days=ns // _NS_PER_DAY)
    except Exception:
        return None


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _required_text(obj: dict, name: str) -> str:
    if name not in obj or obj[name] is None:
        raise Rejected("missing_field", f"required field {name!r} is missing")
    value = obj[name]
    if not isinstance(value, str):
        raise Rejected("wrong_type", f"{name} must be a string, got {_json_type(value)} {_short(value)}")
    if not value.strip():
        raise Rejected("missing_field", f"required field {name!r} is empty")
    return value


def _required_ts(obj: dict) -> tuple[int, str]:
    if obj.get("ts") is None:
        raise Rejected("missing_field", "required field 'ts' is missing")
    return _parse_instant(obj["ts"])


def _to_float(name: str, value: Any) -> float:
    """A JSON number → float, or Rejected (``wrong_type``/``not_finite``/``number_out_of_range``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        if isinstance(value, _LongInteger):
            raise Rejected("number_out_of_range", f"{name} is {value!r}, beyond any float")
        raise Rejected("wrong_type", f"{name} must be a number, got {_json_type(value)} {_short(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise Rejected(
            "number_out_of_range", f"{name} is an integer of {len(str(value))} digits, beyond any float"
        ) from None
    if not math.isfinite(number):
        if isinstance(value, _JsonConstant):
            raise Rejected("not_finite", f"{name} must be a finite number, got {_finite_only(value)}")
        raise Rejected("number_out_of_range", f"{name} is a number beyond the float range (about 1.8e308)")
    return number


def _optional_number(
    obj: dict, name: str, *, low: float | None = None, high: float | None = None, reason: str = "wrong_type"
) -> float:
    value = obj.get(name)
    if value is None:
        return math.nan
    number = _to_float(name, value)
    if (low is not None and number < low) or (high is not None and number > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise Rejected(reason, f"{name}={value!r} is outside {bounds}")
    return number


def _extra(obj: dict, known: set[str]) -> str:
    """Fields the contract does not name are kept verbatim, as a JSON object string ("" if none).
    Strict JSON: a non-finite number is kept as the string "NaN"/"Infinity", an integer too long
    for Python as its digits in a string."""
    rest = {k: v for k, v in obj.items() if k not in known}
    return _dumps(rest) if rest else ""


def validate_signal(obj: dict) -> dict:
    """One signal record → a row dict with SIGNAL_COLUMNS except ``line_no``, or :class:`Rejected`.

    ``ts`` is a UTC :class:`pandas.Timestamp` (ns), ``date`` its UTC date as ``YYYY-MM-DD``,
    ``instrument`` the Binance key from :func:`meta_pipeline.symbols.normalize_symbol` (``bad_symbol``
    if it cannot be read: other quote, perpetual, unknown exchange prefix …), ``direction``
    ``LONG``/``SHORT``, ``confidence`` in [0, 1] or NaN, ``score_final`` finite or NaN.
    """
    row = _signal_row(obj)
    row["ts"] = pd.Timestamp(row["ts"], tz=UTC)
    return row


def _signal_row(obj: dict) -> dict:
    """validate_signal with ``ts`` as int nanoseconds since 1970-01-01T00:00Z (what the loop uses:
    a pandas Timestamp per row costs about a third of the ingestion time)."""
    ns, day = _required_ts(obj)
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
        raise Rejected(
            "bad_direction", f"direction must be LONG or SHORT (any case), got {_short(direction)}"
        )
    regime = obj.get("regime")
    if regime is not None and not isinstance(regime, str):
        raise Rejected("wrong_type", f"regime must be a string, got {_json_type(regime)} {_short(regime)}")
    return {
        "date": day,
        "ts": ns,
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
    """One telemetry record → a row dict with TELEMETRY_COLUMNS except ``line_no``, or
    :class:`Rejected` — only when ``ts``, ``agent`` or ``run_id`` cannot be read.

    Each metric (``latency_ms``, ``tokens_in``, ``tokens_out``, ``errors``, ``cost_usd``) becomes a
    float64 value or NaN. Accepted shapes, for what writers actually send:

    * a non-negative finite number: itself; absent or null: NaN (not reported);
    * a numeric string (``"412"``, ``" 1e3 "``), for every metric: its number;
    * for ``errors`` only, a count in another shape: a list → its length (``["timeout"]`` → 1),
      ``true``/``false`` → 1/0, a non-numeric message string → 1 (an empty or blank string → 0),
      an object → 1 if it has any key (one error described), else 0.

    Anything else (``"fast"``, a negative number, ``NaN``, a number beyond the float range, a list
    for ``latency_ms`` …) keeps the run: that metric is NaN and named in ``unreadable_metrics``
    (comma-separated, "" when none). An unreadable ``errors`` therefore leaves the run out of the
    error rate instead of counting it as an error or as clean. ``metrics_raw`` keeps, as a JSON
    object string, the original value of every metric that was not a plain non-negative number
    (converted or unreadable), "" when none.
    """
    row = _telemetry_row(obj)
    row["ts"] = pd.Timestamp(row["ts"], tz=UTC)
    return row


def _telemetry_row(obj: dict) -> dict:
    """validate_telemetry with ``ts`` as int nanoseconds (see :func:`_signal_row`)."""
    ns, day = _required_ts(obj)
    row: dict[str, Any] = {
        "date": day,
        "ts": ns,
        "agent": _required_text(obj, "agent"),
        "run_id": _required_text(obj, "run_id"),
    }
    unreadable: list[str] = []
    originals: dict[str, Any] = {}
    for name in _TELEMETRY_NUMBERS:
        value = obj.get(name)
        kind = type(value)
        if (kind is float or kind is int) and 0 <= value <= _FLOAT_MAX:  # the usual case, fast
            row[name] = float(value)
            continue
        if value is None:
            row[name] = math.nan
            continue
        number = _metric(name, value)
        originals[name] = value
        row[name] = number
        if number != number:  # NaN: could not be read
            unreadable.append(name)
    row["unreadable_metrics"] = ",".join(unreadable)
    row["metrics_raw"] = _dumps(originals) if originals else ""
    row["extra"] = _extra(obj, _TELEMETRY_FIELDS)
    return row


def _metric(name: str, value: Any) -> float:
    """A metric value that is not a plain non-negative number → its float, or NaN if unreadable."""
    if isinstance(value, str):
        if _NUMERIC_TEXT.fullmatch(value):
            number = float(value)
            return number if 0 <= number < math.inf else math.nan
        if name == "errors":
            return 1.0 if value.strip() else 0.0
        return math.nan
    if name == "errors":
        if isinstance(value, bool):
            return float(value)
        if isinstance(value, list | dict):
            return float(len(value)) if isinstance(value, list) else float(bool(value))
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    try:
        number = float(value)
    except OverflowError:
        return math.nan
    return number if 0 <= number < math.inf else math.nan


def _missing(name: str):
    raise Rejected("missing_field", f"required field {name!r} is missing")


def signal_key(row: dict) -> tuple:
    """A signal's identity: (run_id, instrument, direction, exact instant of ts)."""
    return (row["run_id"], row["instrument"], row["direction"], row["ts"])


def telemetry_key(row: dict) -> tuple:
    return (row["run_id"],)


# --------------------------------------------------------------------------- file reading


def iter_lines(data: bytes, first_line_no: int = 1) -> Iterator[tuple[int, bytes, bool]]:
    """(1-based line number, bytes without the newline, whether a newline terminated it).

    ``data`` starts at line ``first_line_no`` of its file (a chunk read from a stored offset).
    Lines are split on LF only; a CR right before the LF (CRLF) is dropped. A UTF-8 byte-order mark
    at the start of the file is not data.
    """
    if first_line_no == 1:
        data = data.removeprefix(b"\xef\xbb\xbf")
    lines = data.split(b"\n")
    last = len(lines) - 1
    for index, line in enumerate(lines):
        if index == last and not line:
            return  # the file ended with a newline
        yield first_line_no + index, line.rstrip(b"\r"), index != last


def ingest_bytes(
    data: bytes,
    validate: Callable[[dict], dict],
    key: Callable[[dict], tuple],
    columns: list[str],
    *,
    source: str | None = None,
    first_line_no: int = 1,
) -> IngestResult:
    """Validate a JSON Lines file's bytes; never raises for any content of ``data``.

    ``data`` is the whole file, or a chunk of it that starts at line ``first_line_no`` (line numbers
    in rows and quarantine are the file's).

    ``validate`` turns one JSON object into a row dict or raises :class:`Rejected`; ``key`` gives a
    row's identity (later rows with a seen identity are duplicates); ``columns`` are the columns of
    ``valid``. ``source`` (e.g. the file path) is named, with the line number, in every quarantine
    ``detail``. An exception other than Rejected from validating or keying one line becomes a
    quarantine row with reason ``unexpected_error`` and the exception text.
    """
    with contextlib.suppress(TypeError):  # an unhashable callable is used as given
        validate = _ROWS_WITH_NS.get(validate, validate)
    rows: list[dict] = []
    rejected: list[dict] = []
    first_seen: dict[tuple, int] = {}
    duplicate_lines: list[tuple[int, int]] = []
    lines_read = blank = fragments = 0

    def quarantine(line_no: int, raw: bytes, reason: str, detail: str) -> None:
        where = f"{source} line {line_no}: " if source else ""
        rejected.append(
            {
                "line_no": line_no,
                "reason": reason,
                "detail": _clean(where + detail)[:_MAX_DETAIL_CHARS],
                "raw": raw.decode("utf-8", errors="replace")[:_MAX_RAW_CHARS],
            }
        )

    for line_no, raw, terminated in iter_lines(data, first_line_no):
        lines_read += 1
        if not raw.strip():
            blank += 1
            continue
        try:
            decoded = _decode(raw, terminated)
            if decoded.fragment is not None:
                fragments += 1
                quarantine(line_no, raw, "fragment_recovered", decoded.fragment_detail)
            row = validate(decoded.obj)
            identity = key(row)
            seen_at = first_seen.get(identity)
        except Rejected as exc:
            quarantine(line_no, raw, exc.reason, exc.detail)
            continue
        except Exception as exc:  # last resort: one line must never stop ingestion
            quarantine(line_no, raw, "unexpected_error", f"{type(exc).__name__}: {_safe_str(exc)}")
            continue
        if seen_at is not None:
            duplicate_lines.append((line_no, seen_at))
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
        recovered_fragments=fragments,
        source=source,
    )


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
