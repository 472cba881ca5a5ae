"""Field validators: one decoded JSON object → a row (or :class:`Rejected`), the ``ts`` reader and
the column lists. The rules are in the package docstring (:mod:`meta_pipeline.ingest`)."""

from __future__ import annotations

import math
import re
import sys
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from meta_pipeline.ingest.lines import (
    Rejected,
    _decode,
    _dumps,
    _finite_only,
    _json_type,
    _JsonConstant,
    _LongInteger,
    _short,
)
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

_SIGNAL_FIELDS = {"ts", "agent", "run_id", "symbol", "direction", "regime", "confidence", "score_final"}
_TELEMETRY_NUMBERS = ("latency_ms", "tokens_in", "tokens_out", "errors", "cost_usd")
_TELEMETRY_FIELDS = {"ts", "agent", "run_id", *_TELEMETRY_NUMBERS}
_FLOAT_COLUMNS = {"confidence", "score_final", *_TELEMETRY_NUMBERS}
_FLOAT_MAX = sys.float_info.max

_EPOCH = datetime(1970, 1, 1)
_EPOCH_DATE = date(1970, 1, 1)
_ONE_US = timedelta(microseconds=1)
_NS_PER_DAY = 86_400 * 10**9
_TS_MIN_NS = (TS_MIN - _EPOCH) // _ONE_US * 1000
_TS_MAX_NS = (TS_MAX - _EPOCH) // _ONE_US * 1000
# digits beyond the microsecond: the fraction right after the seconds of the time part
_SUB_MICRO = re.compile(r"[^+\-\d]\d\d(?::?\d\d){2}[.,]\d{6}(\d+)")
_NUMERIC_TEXT = re.compile(r"[ \t]*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?[ \t]*")


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
