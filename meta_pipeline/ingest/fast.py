"""The fast lane of :func:`meta_pipeline.ingest.ingest_bytes` for the two known inputs: signals
(:func:`~meta_pipeline.ingest.validate_signal` / ``signal_key``) and telemetry
(:func:`~meta_pipeline.ingest.validate_telemetry` / ``telemetry_key``).

It gives exactly the result of the careful lane (``ingest_bytes(..., fast=False)``), only sooner:
it takes an *ordinary* line by a short road, and hands every other line to the careful lane
unchanged. A line is ordinary when

* it has at most :data:`~meta_pipeline.ingest.MAX_DEPTH` brackets and no ``\\uD800``–``\\uDFFF``
  escape (so neither ``too_deep`` nor ``invalid_unicode`` can apply);
* msgspec decodes it into a dict. msgspec reads exactly what the standard library reads (the
  same numbers, big integers included, the same strings, the same whitespace) and refuses what the
  careful lane treats specially: invalid UTF-8, ``NaN``/``Infinity``, numbers beyond a float,
  integers beyond Python's 4,300-digit limit, lone surrogates, CR-only lines, glued fragments;
* every field is in its plain shape: ``ts`` ``YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)`` inside
  the accepted window, text fields non-empty strings, a symbol that normalises, a direction that is
  LONG/SHORT in any case, numbers in range, telemetry metrics plain non-negative numbers or null.

Anything else (a rejection, an odd ``ts`` spelling, a metric in another shape …) goes to the
careful lane, which decides exactly as it always did. ``meta_pipeline_tests/test_ingest_fast.py``
checks that both lanes give identical frames on generated ordinary and hostile lines.

Rows are kept as tuples and turned into columns once, at the end.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa

from meta_pipeline.ingest.fields import (
    _FLOAT_COLUMNS,
    _FLOAT_MAX,
    _NS_PER_DAY,
    _SIGNAL_FIELDS,
    _TELEMETRY_FIELDS,
    _TS_MAX_NS,
    _TS_MIN_NS,
    SIGNAL_COLUMNS,
    TELEMETRY_COLUMNS,
    _day_text,
    _signal_row,
    _telemetry_row,
    signal_key,
    telemetry_key,
)
from meta_pipeline.ingest.lines import MAX_DEPTH, _dumps
from meta_pipeline.symbols import SymbolError, normalize_symbol

_decode_json = msgspec.json.Decoder().decode
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_NAN = math.nan
_CACHE_LIMIT = 100_000  # entries per cache below; hostile input cannot grow them beyond that

# --------------------------------------------------------------------------- ts
# A plain ts is YYYY-MM-DD "T" HH:MM:SS, then an optional fraction of 1-9 digits and Z or ±HH:MM.
# It is read from three caches of validated pieces ("YYYY-MM-DDTHH", ":MM:SS", fraction and offset);
# a text with a piece not seen yet is validated by _TS_PLAIN and the calendar, and its pieces cached.
# (Pieces this size keep the caches small and hot: a day's worth of lines fills 24 + 3,600 + 1,000.)

_TS_PLAIN = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})((?:\.[0-9]{1,9})?)(Z|[+-][0-9]{2}:[0-9]{2})"
).fullmatch
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_NS_PER_S = 1_000_000_000
_HOURS: dict[str, tuple[int, str]] = {}  # "YYYY-MM-DDTHH" → (ns since 1970-01-01T00:00, "YYYY-MM-DD")
_MINUTES: dict[str, int] = {}  # ":MM:SS" → ns into the hour
_TAILS: dict[str, tuple[int, bool]] = {}  # ".fffZ", "+HH:MM" … → (ns to add, whether it is UTC)


def _pieces(text: str) -> tuple[tuple[int, str], int, tuple[int, bool]] | None:
    """Validate a ts that missed a cache and cache its pieces; None if it is not plain."""
    match = _TS_PLAIN(text)
    if match is None:
        return None
    day_text, hours, minutes, seconds, fraction, offset = match.groups()
    try:
        day = date(int(day_text[:4]), int(day_text[5:7]), int(day_text[8:10])).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return None
    if int(hours) > 23 or int(minutes) > 59 or int(seconds) > 59:
        return None
    shift = 0
    if offset != "Z":
        shift_hours, shift_minutes = int(offset[1:3]), int(offset[4:6])
        if shift_hours > 23 or shift_minutes > 59:
            return None
        shift = (shift_hours * 3600 + shift_minutes * 60) * (-1 if offset[0] == "-" else 1)
    fraction_ns = int(fraction[1:].ljust(9, "0")) if fraction else 0
    pieces = (
        ((day * 86_400 + int(hours) * 3600) * _NS_PER_S, day_text),
        (int(minutes) * 60 + int(seconds)) * _NS_PER_S,
        (fraction_ns - shift * _NS_PER_S, shift == 0),
    )
    if len(_HOURS) < _CACHE_LIMIT:
        _HOURS[text[:13]] = pieces[0]
    _MINUTES[text[13:19]] = pieces[1]  # at most 3,600 entries
    if len(_TAILS) < _CACHE_LIMIT:
        _TAILS[text[19:]] = pieces[2]
    return pieces


def _instant(text: str) -> tuple[int, str] | None:
    """A plain ``ts`` → (ns since 1970-01-01T00:00Z, UTC day) as ``_parse_instant`` gives it, or None
    when the text is not plain or not inside the window (the careful lane then decides)."""
    hour = _HOURS.get(text[:13])
    minute = _MINUTES.get(text[13:19])
    tail = _TAILS.get(text[19:])
    if hour is None or minute is None or tail is None:
        pieces = _pieces(text)
        if pieces is None:
            return None
        hour, minute, tail = pieces
    ns = hour[0] + minute + tail[0]
    if not _TS_MIN_NS <= ns < _TS_MAX_NS:
        return None
    return ns, (hour[1] if tail[1] else _day_text(ns // _NS_PER_DAY))


# --------------------------------------------------------------------------- fields

_INSTRUMENTS: dict[str, str] = {}  # symbol text → Binance key, for symbols that normalise
_EXTRAS: dict[str, dict[str, str]] = {}  # name → text → "extra" of a record whose one extra it is


def _instrument(symbol: str) -> str | None:
    try:
        instrument = normalize_symbol(symbol).binance
    except SymbolError:
        return None
    if len(_INSTRUMENTS) < _CACHE_LIMIT:
        _INSTRUMENTS[symbol] = instrument
    return instrument


def _extra(obj: dict, known: frozenset[str], fetched: int) -> str:
    """``fields._extra``: the fields the contract does not name, as a JSON object string ("" if
    none). ``fetched`` is how many of the ``known`` fields ``obj`` holds with a non-null value."""
    surplus = len(obj) - fetched  # extra fields + known fields that are null
    if not surplus:
        return ""
    if surplus == 1:
        name = next(reversed(obj))
        if name not in known:  # so it is the one extra field, e.g. {"model": "m"}
            value = obj[name]
            if type(value) is str:
                texts = _EXTRAS.get(name)
                if texts is None:
                    texts = {} if len(_EXTRAS) < 1000 else None
                    if texts is not None:
                        _EXTRAS[name] = texts
                text = texts.get(value) if texts is not None else None
                if text is None:
                    text = _dumps({name: value})
                    if texts is not None and len(texts) < 1000:
                        texts[value] = text
                return text
    rest = {name: value for name, value in obj.items() if name not in known}
    return _dumps(rest) if rest else ""  # sorted by _dumps, as the careful lane


def _signal_values(obj: dict, line_no: int) -> tuple | None:
    """An ordinary signal record → its row (SIGNAL_COLUMNS; ``ts`` as int ns) as ``_signal_row``
    gives it, or None: not ordinary, the careful lane decides."""
    ts = obj["ts"]  # a missing field raises KeyError: the careful lane takes the line
    if type(ts) is not str or (instant := _instant(ts)) is None:
        return None
    agent = obj["agent"]
    if type(agent) is not str or not agent.strip():
        return None
    run_id = obj["run_id"]
    if type(run_id) is not str or not run_id.strip():
        return None
    get = obj.get
    symbol = obj["symbol"]
    if type(symbol) is not str:
        return None
    instrument = _INSTRUMENTS.get(symbol)
    if instrument is None and (instrument := _instrument(symbol)) is None:
        return None
    direction = obj["direction"]
    if direction == "LONG":
        direction = "LONG"  # one shared str for the column
    elif direction == "SHORT":
        direction = "SHORT"
    elif type(direction) is str and direction.strip().upper() in ("LONG", "SHORT"):
        direction = "LONG" if direction.strip().upper() == "LONG" else "SHORT"
    else:
        return None
    fetched = 5
    regime = get("regime")
    if regime is not None:
        if type(regime) is not str:
            return None
        fetched += 1
    confidence = get("confidence")
    if confidence is None:
        confidence = _NAN
    elif (type(confidence) is float or type(confidence) is int) and 0 <= confidence <= 1:
        confidence = float(confidence)
        fetched += 1
    else:
        return None
    score = get("score_final")
    if score is None:
        score = _NAN
    elif (type(score) is float or type(score) is int) and -_FLOAT_MAX <= score <= _FLOAT_MAX:
        score = float(score)
        fetched += 1
    else:
        return None
    extra = _extra(obj, _SIGNAL_KNOWN, fetched)
    ns, day = instant
    return (day, ns, agent, run_id, symbol, instrument, direction, regime, confidence, score, extra, line_no)


def _telemetry_values(obj: dict, line_no: int) -> tuple | None:
    """An ordinary telemetry record (every metric a plain non-negative number or null) → its row
    (TELEMETRY_COLUMNS) as ``_telemetry_row`` gives it, or None."""
    ts = obj["ts"]  # a missing field raises KeyError: the careful lane takes the line
    if type(ts) is not str or (instant := _instant(ts)) is None:
        return None
    agent = obj["agent"]
    if type(agent) is not str or not agent.strip():
        return None
    run_id = obj["run_id"]
    if type(run_id) is not str or not run_id.strip():
        return None
    get = obj.get
    # each metric (unrolled: this is the hot loop): NaN if null, a plain non-negative number as
    # float, else None: another shape the careful lane reads and reports
    fetched = 3
    latency = get("latency_ms")
    if latency is None:
        latency = _NAN
    elif (type(latency) is float or type(latency) is int) and 0 <= latency <= _FLOAT_MAX:
        latency, fetched = float(latency), fetched + 1
    else:
        return None
    tokens_in = get("tokens_in")
    if tokens_in is None:
        tokens_in = _NAN
    elif (type(tokens_in) is int or type(tokens_in) is float) and 0 <= tokens_in <= _FLOAT_MAX:
        tokens_in, fetched = float(tokens_in), fetched + 1
    else:
        return None
    tokens_out = get("tokens_out")
    if tokens_out is None:
        tokens_out = _NAN
    elif (type(tokens_out) is int or type(tokens_out) is float) and 0 <= tokens_out <= _FLOAT_MAX:
        tokens_out, fetched = float(tokens_out), fetched + 1
    else:
        return None
    errors = get("errors")
    if errors is None:
        errors = _NAN
    elif (type(errors) is int or type(errors) is float) and 0 <= errors <= _FLOAT_MAX:
        errors, fetched = float(errors), fetched + 1
    else:
        return None
    cost = get("cost_usd")
    if cost is None:
        cost = _NAN
    elif (type(cost) is float or type(cost) is int) and 0 <= cost <= _FLOAT_MAX:
        cost, fetched = float(cost), fetched + 1
    else:
        return None
    ns, day = instant
    extra = _extra(obj, _TELEMETRY_KNOWN, fetched)
    return (day, ns, agent, run_id, latency, tokens_in, tokens_out, errors, cost, "", "", extra, line_no)


_SIGNAL_KNOWN = frozenset(_SIGNAL_FIELDS)
_TELEMETRY_KNOWN = frozenset(_TELEMETRY_FIELDS)

# --------------------------------------------------------------------------- the loop


@dataclass(frozen=True)
class Spec:
    """What the fast lane needs to know about one kind of input."""

    columns: list[str]  # of ``valid``; ``line_no`` last
    values: Callable[[dict, int], tuple | None]  # (record, line_no) → its row, or None
    identity: Callable[[tuple], tuple]  # a row → its key, as the careful lane's key function


_SPECS = {
    (_signal_row, signal_key): Spec(SIGNAL_COLUMNS, _signal_values, operator.itemgetter(3, 5, 6, 1)),
    (_telemetry_row, telemetry_key): Spec(TELEMETRY_COLUMNS, _telemetry_values, lambda row: (row[3],)),
}


def spec_for(validate: Callable, key: Callable, columns: list[str]) -> Spec | None:
    """The fast lane for these arguments of ``ingest_bytes``, or None (other validators or columns
    are read by the careful lane only)."""
    try:
        spec = _SPECS.get((validate, key))
    except TypeError:  # unhashable callables
        return None
    return spec if spec is not None and list(columns) == spec.columns else None


class Careful(Protocol):
    """The careful lane's per-line handling (``reading._Lines``); also holds the dedup state."""

    first_seen: dict[tuple, int]
    duplicate_lines: list[tuple[int, int]]

    def careful(self, line_no: int, raw: bytes, terminated: bool) -> dict | None: ...


def ingest(data: bytes, first_line_no: int, spec: Spec, lines: Careful) -> tuple[pd.DataFrame, int]:
    """``valid`` and the number of lines read; quarantine rows, duplicates, blank lines and
    fragments are recorded in ``lines`` as the careful lane records them."""
    if first_line_no == 1:
        data = data.removeprefix(b"\xef\xbb\xbf")
    raws = data.split(b"\n")
    last_terminated = not raws[-1]
    if last_terminated:
        raws.pop()  # the file ended with a newline (or is empty)
    if b"\r" in data:
        raws = [raw.rstrip(b"\r") for raw in raws]
    last_line_no = first_line_no + len(raws) - 1

    decode, values_of, identity_of = _decode_json, spec.values, spec.identity
    first_seen, duplicate_lines = lines.first_seen, lines.duplicate_lines
    surrogate_escape = _SURROGATE_ESCAPE.search
    names = spec.columns
    rows: list[tuple] = []
    append = rows.append
    line_no = first_line_no - 1
    for raw in raws:
        line_no += 1
        values = None
        if (
            # one "{" and no "[" (memchr-fast), else count: more than MAX_DEPTH may be too_deep
            ((raw.find(b"{", 1) < 0 and raw.find(b"[") < 0) or raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH)
            # no backslash at all, else no \uD800-\uDFFF escape: may be invalid_unicode
            and (raw.find(b"\\") < 0 or surrogate_escape(raw) is None)
        ):
            try:
                obj = decode(raw)
                if type(obj) is dict:
                    values = values_of(obj, line_no)
            except Exception:  # not for the fast lane (msgspec's errors, or anything unforeseen)
                values = None
        if values is None:
            row = lines.careful(line_no, raw, line_no != last_line_no or last_terminated)
            if row is not None:
                append(tuple([row[name] for name in names]))
            continue
        identity = identity_of(values)
        seen_at = first_seen.get(identity)
        if seen_at is not None:
            duplicate_lines.append((line_no, seen_at))
            continue
        first_seen[identity] = line_no
        append(values)
    return _frame(rows, names), len(raws)


def _frame(rows: list[tuple], columns: list[str]) -> pd.DataFrame:
    """The frame ``reading._frame`` builds from the same rows as dicts: same values, same dtypes."""
    if rows and _ARROW_FRAMES:
        try:
            return _arrow_frame(rows, columns)
        except Exception:  # e.g. text pyarrow cannot take: build it the general way
            pass
    # rows × columns; every cell is a scalar
    table = np.array(rows, dtype=object) if rows else np.empty((0, len(columns)), dtype=object)
    data: dict[str, Any] = {}
    for index, name in enumerate(columns):
        column = table[:, index]
        if name == "ts":
            data[name] = pd.to_datetime(column.astype("int64"), unit="ns", utc=True)
        elif name == "line_no":
            data[name] = column.astype("int64")
        elif name in _FLOAT_COLUMNS:
            data[name] = column.astype("float64")
        else:
            data[name] = pd.Series(column, dtype=None if len(column) else object)  # inferred
    return pd.DataFrame(data)


def _row_type(columns: list[str]) -> pa.StructType:
    def column_type(name: str) -> pa.DataType:
        if name in ("ts", "line_no"):
            return pa.int64()
        return pa.float64() if name in _FLOAT_COLUMNS else pa.large_string()

    return pa.struct([(name, column_type(name)) for name in columns])


_ROW_TYPES = {tuple(columns): _row_type(columns) for columns in (SIGNAL_COLUMNS, TELEMETRY_COLUMNS)}
_TEXT_DTYPE = pd.Series(["text"]).dtype  # what pandas infers for a column of str


def _arrow_frame(rows: list[tuple], columns: list[str]) -> pd.DataFrame:
    """``_frame`` by one pyarrow conversion of all rows (text, numbers, ns) at once."""
    table = pa.array(rows, type=_ROW_TYPES[tuple(columns)])
    data: dict[str, Any] = {}
    for index, name in enumerate(columns):
        column = table.field(index)
        if name == "ts":
            data[name] = pd.to_datetime(column.to_numpy(), unit="ns", utc=True)
        elif name == "line_no" or name in _FLOAT_COLUMNS:
            data[name] = column.to_numpy()
        elif column.null_count == len(column):  # all null (regime): pandas keeps None, as object
            data[name] = pd.Series([None] * len(column), dtype=object)
        else:  # text, maybe with nulls: what pandas infers, str (NaN for null)
            data[name] = pd.arrays.ArrowStringArray(column, dtype=_TEXT_DTYPE)
    return pd.DataFrame(data)


def _arrow_frames_are_inferred() -> bool:
    """Whether :func:`_arrow_frame` builds what pandas infers from the same rows (pandas ≥ 3 with
    pyarrow: text is ``str`` backed by large_string). If not, frames are built by inference."""
    sample = [
        ("2024-03-01", 10**18, "a", "r", "BTC", "BTCUSDT", "LONG", None, 0.5, math.nan, "", 1),
        ("2024-03-02", 10**18 + 1, "é", "r2", "ETH", "ETHUSDT", "SHORT", "trend", math.nan, 1.0, "{}", 2),
    ]
    try:
        for rows in (sample, [(*row[:7], None, *row[8:]) for row in sample]):
            inferred = pd.DataFrame({name: [row[i] for row in rows] for i, name in enumerate(SIGNAL_COLUMNS)})
            built = _arrow_frame(rows, SIGNAL_COLUMNS)
            pd.testing.assert_frame_equal(
                built.drop(columns="ts"), inferred.drop(columns="ts"), check_exact=True
            )
    except Exception:
        return False
    return True


_ARROW_FRAMES = _arrow_frames_are_inferred()
