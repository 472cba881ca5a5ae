"""Column-wise JSON Lines encoder of the export, byte-identical to building one dict per row and
calling ``json.dumps`` on it (the reference: ``meta_pipeline_tests/jsonl_oracle.py``, ~40k rows/s). Here each
column is formatted once into JSON text fragments with numpy / pyarrow kernels, and the columns are
then joined row-wise with the constant key text in between (``pyarrow.compute.binary_join_element_wise``),
so the whole file costs a handful of vectorised passes (~1M rows/s on one core).

Exactness, column by column (the slow, obviously-correct per-value path of the reference is kept as
the fallback for every dtype that has no fast path, so unusual input is still encoded identically):

* floats: Arrow's float → string cast (double-conversion, shortest round-trip digits, same choice as
  Python's ``repr``) for ``1e-4 <= |x| < 1e10`` and zero, where both use fixed notation — Arrow only
  drops the ``.0`` of whole numbers, which is added back; outside that range (where the two switch to
  scientific notation at different exponents and spell exponents differently) ``float.__repr__``.
  NaN → ``null``; ±inf raises ``ValueError`` exactly as ``json.dumps(..., allow_nan=False)`` does.
* strings: the UTF-8 bytes are scanned once for ``"``, ``\\`` and control characters; only strings
  containing one go through ``json.dumps`` (``ensure_ascii=False``: non-ASCII is written as is).
  Categoricals: each category is encoded once and taken by code. Lone surrogates cannot be UTF-8
  encoded: ``UnicodeEncodeError``, as ``.encode("utf-8")`` of the reference's text raises.
* timestamps: :func:`iso_utc` — seconds, then the fraction to the nanosecond with trailing zeros
  (and an all-zero fraction) stripped, plus ``Z``; finer than a microsecond takes the slow path
  (floored) — reproduced here from the int64 epoch values with cached date / time-of-day / fraction
  tables. NaT → ``null``.
* ``horizon_hours``: integer text when whole (``int(h)``), float text otherwise; ``status``:
  ``str(value)`` (a missing status is the string ``"nan"``, as in the reference).

Errors: the reference raises on the first bad cell in row order (``json.dumps``), and only after all rows
are dumped fails on a lone surrogate (``.encode``); the same priority is kept here.
"""

from __future__ import annotations

import datetime
import io
import json
import math
from collections.abc import Sequence
from functools import cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

TIME_FIELDS = ("ts", "entry_time", "exit_time")
HORIZON_FIELD = "horizon_hours"
STATUS_FIELD = "status"

# rows joined per pyarrow call: large enough to amortise per-call overhead, small enough that the
# joined text of a block stays far below Arrow's 2 GiB per-array limit and in cache-friendly sizes
BLOCK_ROWS = 1 << 16

_NAT = np.iinfo(np.int64).min
_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
_UTC_NAMES = {"UTC", "Etc/UTC", "utc", "Etc/Universal", "Universal", "Zulu", "Etc/Zulu"}
# Arrow writes fixed notation for decimal exponents -6..9, Python's repr for -4..15
_FIXED_LOW, _FIXED_HIGH = 1e-4, 1e10

# small-cardinality columns as (texts, codes): folding the constant key text around them and
# combining neighbours happens on the few texts, so the row-wise join has fewer pieces
_MAX_TABLE = 4096


class _Table:
    """One JSON text per row as ``texts[codes[row]]`` (texts are valid UTF-8)."""

    def __init__(self, texts: list[str], codes: np.ndarray):
        self.texts, self.codes = texts, codes

    def materialize(self) -> pa.Array:
        return pa.array(self.texts, type=pa.string()).take(pa.array(self.codes))


# a column's encoding: JSON text pieces to concatenate per row — literal ``str`` (same in every row),
# a ``_Table`` or a ``pa.StringArray`` with one (non-null) value per row
Parts = list


def _dumps(value) -> str:
    # exactly storage.dumps_strict(..., ensure_ascii=False) on a single value; a value is written the
    # same inside a dict as on its own (default separators, no indent)
    return json.dumps(value, allow_nan=False, ensure_ascii=False)


def _json_value(value):
    # as the reference encoder: missing values are null
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class _CellError(Exception):
    """A value ``json.dumps`` rejects, with its row (the reference raises for the first one in row order)."""

    def __init__(self, row: int, error: Exception):
        super().__init__(row, error)
        self.row, self.error = row, error


class _EncodeError(Exception):
    """A lone surrogate: the reference's text exists but cannot be UTF-8 encoded."""

    def __init__(self, error: UnicodeEncodeError):
        super().__init__(error)
        self.error = error


def encode_rows(rows: pd.DataFrame, fields: Sequence[str]) -> bytes:
    """``rows`` as JSON Lines (UTF-8), one object per row with ``fields`` in order; for
    ``fields=export.EXPORT_FIELDS`` byte-identical to the reference encoder's output.

    Raises ``ValueError`` for ±inf (not JSON), ``TypeError`` for values JSON cannot represent and
    ``UnicodeEncodeError`` for lone surrogates, like the reference.
    """
    fields = list(fields)
    if rows.empty:
        return b""
    n = len(rows)
    parts: Parts = ["{"]
    cell_errors: list[tuple[int, int, Exception]] = []
    encode_errors: list[UnicodeEncodeError] = []
    for position, name in enumerate(fields):
        series = rows[name]
        try:
            column = _encode_column(name, series)
        except _CellError as failure:
            cell_errors.append((failure.row, position, failure.error))
            continue
        except _EncodeError as failure:
            encode_errors.append(failure.error)
            continue
        parts.append(("" if position == 0 else ", ") + _dumps(name) + ": ")
        parts.extend(column)
    if cell_errors:
        raise min(cell_errors, key=lambda e: (e[0], e[1]))[2]
    if encode_errors:
        raise encode_errors[0]
    parts.append("}\n")
    return _join(_simplify(parts), n)


# ---------------------------------------------------------------------------------------- columns


def _encode_column(name: str, series: pd.Series) -> Parts:
    if name in TIME_FIELDS:
        return _encode_times(series)
    if name == HORIZON_FIELD:
        return _encode_horizon(series)
    if name == STATUS_FIELD:
        return _encode_status(series)
    return _encode_values(series)


def _encode_values(series: pd.Series) -> Parts:
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return _encode_categorical(series, missing="null") or _generic(series.tolist())
    if isinstance(dtype, np.dtype):
        if dtype.kind == "f":
            return [_float_fragments(series.to_numpy(dtype=np.float64))]
        if dtype.kind in "iu":
            return [_int_fragments(series.to_numpy())]
        if dtype.kind == "b":
            return [_Table(["false", "true"], series.to_numpy().view(np.uint8).astype(np.int32))]
    strings = _arrow_strings(series)
    if strings is not None:
        return _string_parts(strings, missing="null")
    return _generic(series.tolist())


def _encode_status(series: pd.Series) -> Parts:
    # the reference writes str(value): a missing status is the text of the missing-value marker
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        encoded = _encode_categorical(series, missing=_dumps(str(np.nan)))
        if encoded is not None:
            return encoded
    else:
        strings = _arrow_strings(series)
        if strings is not None:
            marker = str(dtype.na_value) if isinstance(dtype, pd.StringDtype) else "None"
            return _string_parts(strings, missing=_dumps(marker))
    return _generic([str(value) for value in series.tolist()])


def _generic(values: list, *, convert=None) -> Parts:
    """The per-value path of the reference itself (``convert`` as the reference applies it before ``_json_value``)."""
    fragments = []
    append = fragments.append
    for row, value in enumerate(values):
        try:
            append(_dumps(_json_value(convert(value) if convert else value)))
        except (TypeError, ValueError, OverflowError, RecursionError) as error:
            raise _CellError(row, error) from None
    return [_to_arrow(fragments)]


def _to_arrow(texts: list[str]) -> pa.Array:
    try:
        array = pa.array(texts, type=pa.string())
    except UnicodeEncodeError as error:
        raise _EncodeError(error) from None
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


# --------------------------------------------------------------------------------------- strings


def _is_str_index(values) -> bool:
    return len(values) == 0 or pd.api.types.infer_dtype(values, skipna=False) == "string"


def _encode_categorical(series: pd.Series, missing: str) -> Parts | None:
    """Each category encoded once, taken by code; ``None`` when categories are not all ``str``."""
    categories = series.cat.categories
    if not _is_str_index(categories):
        return None
    codes = series.cat.codes.to_numpy()
    texts = [_dumps(c) for c in categories.tolist()] + [missing]
    try:
        for text in texts:
            text.encode("utf-8")
    except UnicodeEncodeError:
        return None  # an error only if a row uses it: let the per-value path decide
    index = np.where(codes < 0, len(categories), codes).astype(np.int32)
    if len(texts) > _MAX_TABLE:
        return [_Table(texts, index).materialize()]
    return [_Table(texts, index)]


def _arrow_strings(series: pd.Series) -> pa.Array | None:
    """The column as an Arrow string array (missing → null) when every value is ``str`` or missing
    in the sense of the dtype; ``None`` when the per-value path is needed."""
    dtype = series.dtype
    if isinstance(dtype, pd.StringDtype):
        try:
            array = pa.array(series.array)
        except UnicodeEncodeError as error:
            raise _EncodeError(error) from None
    elif isinstance(dtype, np.dtype) and dtype.kind == "O":
        values = series.to_numpy()
        if not _is_str_index(values):
            return None
        try:
            array = pa.array(values, type=pa.string())
        except UnicodeEncodeError as error:
            raise _EncodeError(error) from None
    else:
        return None
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if array.type != pa.string():
        array = array.cast(pa.string())
    return array


def _string_parts(array: pa.Array, missing: str) -> Parts:
    """JSON strings: quoted as is unless a byte needs escaping (``"``, ``\\``, < 0x20)."""
    n = len(array)
    escape_rows = _rows_needing_escape(array)
    if array.null_count == 0:
        if len(escape_rows):
            inner = [_dumps(s)[1:-1] for s in array.take(pa.array(escape_rows)).to_pylist()]
            array = _replace_rows(array, escape_rows, inner, n)
        return ['"', array, '"']
    quoted = pc.binary_join_element_wise('"', array, '"', "")
    if len(escape_rows):
        texts = array.take(pa.array(escape_rows)).to_pylist()
        keep = [i for i, s in enumerate(texts) if s is not None]
        quoted = _replace_rows(quoted, escape_rows[keep], [_dumps(texts[i]) for i in keep], n)
    return [pc.fill_null(quoted, missing)]


def _rows_needing_escape(array: pa.Array) -> np.ndarray:
    _, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[array.offset : array.offset + len(array) + 1]
    if data_buffer is None or offsets[-1] == offsets[0]:
        return np.empty(0, dtype=np.int64)
    data = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]]
    bad = (data < 0x20) | (data == 0x22) | (data == 0x5C)
    positions = np.flatnonzero(bad)
    if not len(positions):
        return np.empty(0, dtype=np.int64)
    rows = np.searchsorted(offsets, positions + offsets[0], side="right") - 1
    return np.unique(rows)


def _replace_rows(array: pa.Array, rows: np.ndarray, texts: list[str] | pa.Array, n: int) -> pa.Array:
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    return pc.replace_with_mask(
        array, pa.array(mask), texts if isinstance(texts, pa.Array) else _to_arrow(texts)
    )


# ---------------------------------------------------------------------------------------- numbers


def _int_fragments(values: np.ndarray) -> _Table | pa.Array:
    if len(values):
        low, high = int(values.min()), int(values.max())
        if high - low < _MAX_TABLE:
            return _Table([str(v) for v in range(low, high + 1)], (values - low).astype(np.int32))
    return pc.cast(pa.array(values), pa.string())


def _run_starts(bits: np.ndarray) -> np.ndarray | None:
    """Where a new run of equal values starts, when runs make at least a quarter of the rows
    repeats (reconciled rows repeat every signal-level field once per horizon)."""
    if len(bits) < 64:
        return None
    starts = np.empty(len(bits), dtype=bool)
    starts[0] = True
    np.not_equal(bits[1:], bits[:-1], out=starts[1:])
    return starts if np.count_nonzero(starts) <= 0.75 * len(bits) else None


def _float_fragments(x: np.ndarray) -> pa.Array:
    """Python ``repr`` of each float as ``json.dumps`` writes it; NaN → null, ±inf raises."""
    starts = _run_starts(x.view(np.int64))  # bitwise: -0.0 and 0.0 differ
    if starts is not None:
        heads = np.flatnonzero(starts)
        try:
            text = _float_fragments_of(x[heads])
        except _CellError as failure:
            raise _CellError(int(heads[failure.row]), failure.error) from None
        return text.take(pa.array(np.cumsum(starts, dtype=np.int64) - 1))
    return _float_fragments_of(x)


def _float_fragments_of(x: np.ndarray) -> pa.Array:
    n = len(x)
    with np.errstate(invalid="ignore"):
        nan = np.isnan(x)
        infinite = np.isinf(x)
        if infinite.any():
            row = int(np.flatnonzero(infinite)[0])
            try:
                _dumps(float(x[row]))
            except ValueError as error:
                raise _CellError(row, error) from None
        magnitude = np.abs(x)
        fixed = ((magnitude >= _FIXED_LOW) & (magnitude < _FIXED_HIGH)) | (x == 0)
        whole = fixed & (x == np.floor(x))
    text = pc.cast(pa.array(x), pa.string())
    if whole.any():  # Arrow writes 2.0 as "2", Python as "2.0"
        rows = np.flatnonzero(whole)
        patched = pc.binary_join_element_wise(text.take(pa.array(rows)), ".0", "")
        text = _replace_rows(text, rows, patched, n)
    other = ~fixed & ~nan
    if other.any():
        rows = np.flatnonzero(other)
        text = _replace_rows(text, rows, list(map(float.__repr__, x[rows].tolist())), n)
    if nan.any():
        rows = np.flatnonzero(nan)
        text = _replace_rows(text, rows, pa.repeat(pa.scalar("null"), len(rows)), n)
    return text


def _encode_horizon(series: pd.Series) -> Parts:
    # the reference: int(h) if float(h).is_integer() else float(h)
    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        return [_int_fragments(series.to_numpy())]
    if not (isinstance(dtype, np.dtype) and dtype.kind == "f"):
        return _generic(series.tolist(), convert=lambda h: int(h) if float(h).is_integer() else float(h))
    x = series.to_numpy(dtype=np.float64)
    n = len(x)
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(x) & (x == np.floor(x))
        small = whole & (np.abs(x) < 2.0**62)
    text = pc.cast(pa.array(np.where(small, x, 0.0).astype(np.int64)), pa.string())
    huge = whole & ~small
    if huge.any():
        rows = np.flatnonzero(huge)
        text = _replace_rows(text, rows, [str(int(h)) for h in x[rows].tolist()], n)
    fractional = ~whole
    if fractional.any():
        rows = np.flatnonzero(fractional)
        try:
            floats = _float_fragments(x[rows])
        except _CellError as failure:
            raise _CellError(int(rows[failure.row]), failure.error) from None
        mask = np.zeros(n, dtype=bool)
        mask[rows] = True
        text = pc.replace_with_mask(text, pa.array(mask), floats)
    return [text]


# ------------------------------------------------------------------------------------- timestamps


def iso_utc(values: pd.Series) -> list[str | None]:
    """UTC timestamps → ``2024-03-01T10:00:00Z``, with the fraction of a second only when there is
    one, to the nanosecond, trailing zeros stripped (``…00.5Z``, ``…00.000000001Z``); None for NaT."""
    series = pd.Series(values)
    text = series.dt.strftime("%Y-%m-%dT%H:%M:%S")
    ns = (series.dt.microsecond * 1000 + series.dt.nanosecond).to_numpy()
    return [
        None if pd.isna(t) else t + (f".{int(f):09d}".rstrip("0") if f else "") + "Z"
        for t, f in zip(text, ns, strict=True)
    ]


_iso_utc = iso_utc  # the per-value path for timestamps without a fast path


def _encode_times(series: pd.Series) -> Parts:
    epoch = _epoch_values(series)
    if epoch is None:
        return _generic(_iso_utc(series))
    values, per_second = epoch
    starts = _run_starts(values)
    if starts is None:
        return _time_parts(values, per_second, series)
    parts = _time_parts(values[starts], per_second, series[starts])
    index = pa.array(np.cumsum(starts, dtype=np.int64) - 1)
    return [p if isinstance(p, str) else p.take(index) for p in parts]


def _time_parts(values: np.ndarray, per_second: int, series: pd.Series) -> Parts:
    n = len(values)
    nat = values == _NAT
    has_nat = bool(nat.any())
    if has_nat:
        values = np.where(nat, 0, values)
    seconds = np.floor_divide(values, per_second)
    sub = values - seconds * per_second
    days = np.floor_divide(seconds, 86_400)
    second_of_day = (seconds - days * 86_400).astype(np.int32)
    first, last = int(days.min()), int(days.max())
    years = _civil(np.array([first, last]))[0]
    if years[0] < 1000 or years[1] > 9999:
        return _generic(_iso_utc(series))  # years strftime might not write as 4 digits

    # "YYYY-MM-DDTHH:MM:SS" — fixed width, assembled from per-day and per-second-of-day tables
    text = np.empty((n, 19), dtype=np.uint8)
    if last - first < 4 * n + 1024:
        text[:, :10] = _date_table(first, last)[days - first]
    else:
        unique_days, inverse = np.unique(days, return_inverse=True)
        text[:, :10] = _date_bytes(unique_days)[inverse]
    text[:, 10] = ord("T")
    text[:, 11:] = _time_of_day_table()[second_of_day]
    stamp = pa.StringArray.from_buffers(
        n, pa.py_buffer(np.arange(0, 19 * (n + 1), 19, dtype=np.int32)), pa.py_buffer(text)
    )
    parts: Parts = ['"', stamp]
    if per_second > 1:
        micros = sub * (10**6 // per_second) if per_second <= 10**6 else sub // (per_second // 10**6)
        nanos = (sub % (per_second // 10**6)) * (10**9 // per_second) if per_second > 10**6 else None
        if nanos is not None and nanos.any():
            # finer than a microsecond: all six microsecond digits, then the nanoseconds stripped
            fine = pc.binary_join_element_wise(
                _micro_digits_table().take(pa.array(micros.astype(np.int32))),
                _nano_digits_table().take(pa.array(nanos.astype(np.int32))),
                "",
            )
            coarse = _fraction_table().take(pa.array(micros.astype(np.int32)))
            parts.append(pc.if_else(pa.array(nanos != 0), fine, coarse))
        elif micros.any():
            parts.append(_fraction_table().take(pa.array(micros.astype(np.int32))))
    parts.append('Z"')
    if not has_nat:
        return parts
    joined = pc.binary_join_element_wise(*parts, "")
    return [pc.if_else(pa.array(nat), pa.scalar("null"), joined)]


def _epoch_values(series: pd.Series) -> tuple[np.ndarray, int] | None:
    """int64 epoch values and their units per second, for UTC (or naive) datetime64 columns."""
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        tz = dtype.tz
        if str(tz) not in _UTC_NAMES and tz is not datetime.UTC:
            return None
        unit = dtype.unit
    elif isinstance(dtype, np.dtype) and dtype.kind == "M":
        unit = np.datetime_data(dtype)[0]
    else:
        return None
    if unit not in _PER_SECOND:
        return None
    return np.asarray(series.array.asi8, dtype=np.int64), _PER_SECOND[unit]


def _civil(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Days since 1970-01-01 → proleptic Gregorian (year, month, day) (H. Hinnant's algorithm)."""
    z = days.astype(np.int64) + 719_468
    era = np.floor_divide(z, 146_097)
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    return year, month, day


def _digits(out: np.ndarray, column: int, values: np.ndarray, width: int) -> None:
    for k in range(width):
        out[:, column + width - 1 - k] = values // 10**k % 10 + 48


def _date_bytes(days: np.ndarray) -> np.ndarray:
    year, month, day = _civil(days)
    out = np.empty((len(days), 10), dtype=np.uint8)
    _digits(out, 0, year, 4)
    out[:, 4] = out[:, 7] = ord("-")
    _digits(out, 5, month, 2)
    _digits(out, 8, day, 2)
    return out


def _date_table(first: int, last: int) -> np.ndarray:
    return _date_bytes(np.arange(first, last + 1))


@cache
def _time_of_day_table() -> np.ndarray:
    seconds = np.arange(86_400)
    out = np.empty((86_400, 8), dtype=np.uint8)
    _digits(out, 0, seconds // 3600, 2)
    out[:, 2] = out[:, 5] = ord(":")
    _digits(out, 3, seconds // 60 % 60, 2)
    _digits(out, 6, seconds % 60, 2)
    return out


@cache
def _fraction_table() -> pa.Array:
    """microseconds → ``.%f`` with trailing zeros stripped ("" for 0), for 0..999999."""
    micros = np.arange(10**6)
    text = np.empty((10**6, 7), dtype=np.uint8)
    text[:, 0] = ord(".")
    _digits(text, 1, micros, 6)
    trailing = np.zeros(10**6, dtype=np.int64)
    for k in range(1, 6):
        trailing += micros % 10**k == 0
    length = np.where(micros == 0, 0, 7 - trailing)
    offsets = np.zeros(10**6 + 1, dtype=np.int32)
    np.cumsum(length, out=offsets[1:])
    data = text[np.arange(7) < length[:, None]]
    return pa.StringArray.from_buffers(10**6, pa.py_buffer(offsets), pa.py_buffer(data))


@cache
def _micro_digits_table() -> pa.Array:
    """microseconds → ``.dddddd`` (all six digits), for 0..999999."""
    text = np.empty((10**6, 7), dtype=np.uint8)
    text[:, 0] = ord(".")
    _digits(text, 1, np.arange(10**6), 6)
    offsets = np.arange(0, 7 * (10**6 + 1), 7, dtype=np.int32)
    return pa.StringArray.from_buffers(10**6, pa.py_buffer(offsets), pa.py_buffer(text))


@cache
def _nano_digits_table() -> pa.Array:
    """the nanoseconds after the microseconds (0..999) → their digits, trailing zeros stripped."""
    return pa.array(["" if n == 0 else f"{n:03d}".rstrip("0") for n in range(1000)], type=pa.string())


# ------------------------------------------------------------------------------------------- join


def _simplify(parts: Parts) -> list[str | pa.Array]:
    """Fold the constant text into neighbouring tables, combine neighbouring tables, materialize."""
    merged: Parts = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    folded: Parts = []
    for i, part in enumerate(merged):
        if isinstance(part, str) and i + 1 < len(merged) and isinstance(merged[i + 1], _Table):
            table = merged[i + 1]
            merged[i + 1] = _Table([part + text for text in table.texts], table.codes)
        elif isinstance(part, str) and folded and isinstance(folded[-1], _Table):
            table = folded[-1]
            folded[-1] = _Table([text + part for text in table.texts], table.codes)
        elif (
            isinstance(part, _Table)
            and folded
            and isinstance(folded[-1], _Table)
            and len(part.texts) * len(folded[-1].texts) <= _MAX_TABLE
        ):
            left = folded[-1]
            texts = [a + b for a in left.texts for b in part.texts]
            folded[-1] = _Table(texts, left.codes * np.int32(len(part.texts)) + part.codes)
        else:
            folded.append(part)
    return [p.materialize() if isinstance(p, _Table) else p for p in folded]


def _join(parts: list[str | pa.Array], n: int) -> bytes:
    """Concatenate the pieces row by row, a block of rows at a time; each block's joined rows are one
    contiguous buffer, appended to the output (and freed, so the next block reuses the memory)."""
    if not any(isinstance(p, pa.Array) for p in parts):  # no fields: the same text on every row
        return "".join(parts).encode("utf-8") * n
    out = io.BytesIO()
    for start in range(0, n, BLOCK_ROWS):
        _join_block(parts, start, min(n, start + BLOCK_ROWS), out)
    return out.getvalue()


def _join_block(parts: list[str | pa.Array], start: int, stop: int, out: io.BytesIO) -> None:
    pieces = [p if isinstance(p, str) else p.slice(start, stop - start) for p in parts]
    try:
        joined = pc.binary_join_element_wise(*pieces, "")
    except (pa.ArrowCapacityError, pa.ArrowInvalid):  # a block of more than 2 GiB of text
        if stop - start < 2:
            raise
        middle = (start + stop) // 2
        _join_block(parts, start, middle, out)
        _join_block(parts, middle, stop, out)
        return
    if joined.null_count:
        raise AssertionError("a JSON fragment is missing")
    _, offsets, data = joined.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int32)[joined.offset : joined.offset + len(joined) + 1]
    with memoryview(data) as view:
        out.write(view[int(bounds[0]) : int(bounds[-1])])
