"""Column-wise JSON Lines encoder of the export, byte-identical to building one dict per row and
calling ``json.dumps`` on it (the reference: ``meta_pipeline_tests/jsonl_oracle.py``, ~40k rows/s).

Each column is formatted once into JSON texts with vectorised kernels (numpy, msgspec, pyarrow) and
kept as a *pool*: one buffer of texts plus, per row, which text is that row's — so a value met again
(a category, a bar time, a signal's fields repeated on each of its horizon rows) is formatted once and
only pointed at. The constant key text between the columns is folded into the neighbouring small
tables. Then:

* runs: where rows come in runs that repeat some fields (reconciled rows: a signal's fields once per
  horizon), those columns are encoded for the first row of each run only, and neighbouring ones are
  joined once per run (one Arrow ``take``), so a line has fewer pieces left to join;
* the lines: all texts go into one Arrow binary array, and one ``take`` per block of rows, with the
  text numbers in row-major order, writes the pieces of every line one after the other — the block's
  bytes, copied straight into the output, whose size is known beforehand (``bytes`` allocated once,
  written in place, backed by transparent huge pages where Linux offers them).

~1.2M rows/s on one core for the benchmark's rows (``benchmarks/bench_encode.py``).

Exactness, column by column (the slow, obviously-correct per-value path of the reference is kept as
the fallback for every dtype that has no fast path, so unusual input is still encoded identically):

* floats: a column of decimals with few digits (prices, rounded scores: ``k / 10**d``, ``d <= 4``,
  ``|k| < 10**15``) is written from digit tables — for such a value ``repr``'s shortest round-trip
  digits are the decimal's own (see :func:`_fixed_point`); every other value by msgspec's float writer
  (shortest round-trip digits too) on the values as one JSON array, split at the commas. msgspec and
  ``repr`` agree in fixed notation (``1e-4 <= |x| < 1e16`` and zero; checked at import time on probe
  values, otherwise ``repr`` itself is used); outside that range, where the two spell exponents
  differently, ``float.__repr__`` is passed to msgspec as raw text. NaN → ``null``; ±inf raises
  ``ValueError`` exactly as ``json.dumps(..., allow_nan=False)`` does.
* strings: the UTF-8 bytes are scanned once for ``"``, ``\\`` and control characters; only strings
  containing one go through ``json.dumps`` (``ensure_ascii=False``: non-ASCII is written as is).
  Categoricals: each category is encoded once and taken by code. Lone surrogates cannot be UTF-8
  encoded: ``UnicodeEncodeError``, as ``.encode("utf-8")`` of the reference's text raises.
* timestamps: :func:`iso_utc` — seconds, then the fraction to the nanosecond with trailing zeros
  (and an all-zero fraction) stripped, plus ``Z``; finer than a microsecond takes the slow path
  (floored) — reproduced here from the int64 epoch values, each quoted text written into a
  fixed-width numpy row a machine word at a time from cached date / time-of-day / digit tables, or
  looked up in a table of every minute (second) in range for times on whole minutes (seconds), as bar
  times are. NaT → ``null``.
* ``horizon_hours``: integer text when whole (``int(h)``), float text otherwise; ``status``:
  ``str(value)`` (a missing status is the string ``"nan"``, as in the reference).

Errors: the reference raises on the first bad cell in row order (``json.dumps``), and only after all rows
are dumped fails on a lone surrogate (``.encode``); the same priority is kept here (a column encoded
once per run reports the first row of the run).
"""

from __future__ import annotations

import datetime
import io
import json
import math
from collections.abc import Sequence
from functools import cache

import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

TIME_FIELDS = ("ts", "entry_time", "exit_time")
HORIZON_FIELD = "horizon_hours"
STATUS_FIELD = "status"

# rows gathered per pyarrow ``take``: large enough to amortise per-call overhead, small enough that
# a block's joined text (a few MiB) is still in cache when it is copied into the output
BLOCK_ROWS = 1 << 14

_NAT = np.iinfo(np.int64).min
_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
_UTC_NAMES = {"UTC", "Etc/UTC", "utc", "Etc/Universal", "Universal", "Zulu", "Etc/Zulu"}
# Python's repr writes fixed notation for 1e-4 <= |x| < 1e16 (and zero), scientific notation outside
_FIXED_LOW, _FIXED_HIGH = 1e-4, 1e16
_INT32_MAX = np.iinfo(np.int32).max

# small-cardinality columns as (texts, codes): folding the constant key text around them and
# combining neighbours happens on the few texts, so the row-wise gather has fewer pieces
_MAX_TABLE = 4096

_FLOAT_WRITER = msgspec.json.Encoder()


def _msgspec_writes_repr() -> bool:
    """Whether msgspec writes floats in fixed notation exactly as ``float.__repr__`` (shortest
    round-trip digits: checked rather than assumed, the fallback is ``repr`` itself)."""
    probes = [0.0, -0.0, 1e-4, 0.1, 0.5, 2.0, -2.5, 1 / 3, 0.30000000000000004, 12345.678, 65000.12]
    probes += [9999999999.5, 1e10, 123456789012.25, 1e15, 9999999999999998.0, 2.0**53, 5e-4, 1.5e-4]
    return _FLOAT_WRITER.encode(probes) == ("[" + ",".join(map(float.__repr__, probes)) + "]").encode()


_MSGSPEC_FLOATS = _msgspec_writes_repr()


class _Table:
    """One JSON text per row as ``texts[codes[row]]`` (few texts, valid UTF-8). ``repeated``: one row
    per run of repeated rows (see :class:`_Runs`)."""

    def __init__(self, texts: list[str], codes: np.ndarray, repeated: bool = False):
        self.texts, self.codes, self.repeated = texts, codes, repeated


class _Pool:
    """JSON texts in one UTF-8 buffer: text ``e`` is ``data[offsets[e]:offsets[e + 1]]``; row ``r`` is
    text ``index[r]``, or, without an index, text ``first + stride * r`` (``stride`` 0: the same text
    on every row). Texts no row points at (the gaps between padded texts) are allowed. ``repeated``:
    one row per run of repeated rows (see :class:`_Runs`)."""

    __slots__ = ("data", "offsets", "index", "stride", "first", "repeated")

    def __init__(self, data: np.ndarray, offsets: np.ndarray, index=None, stride: int = 1, first: int = 0):
        self.data, self.offsets, self.index, self.stride, self.first = data, offsets, index, stride, first
        self.repeated = False

    def row_index(self, n: int) -> np.ndarray:
        """The text numbers of rows ``0..n-1`` (not for a constant: stride 0)."""
        if self.index is not None:
            return self.index
        return np.arange(self.first, self.first + self.stride * n, self.stride, dtype=np.int64)[:n]

    def at(self, rows: np.ndarray) -> np.ndarray:
        """The text numbers of ``rows``."""
        if self.index is not None:
            return self.index[rows]
        return self.first + self.stride * np.asarray(rows, dtype=np.int64)

    def with_rows(self, n: int, rows: np.ndarray, other: _Pool) -> _Pool:
        """These ``n`` rows, except ``rows[j]`` takes ``other``'s row ``j``."""
        data, offsets, (_, base) = _concat([self, other])
        index = self.row_index(n).astype(np.int64, copy=True)
        index[rows] = other.row_index(len(rows)) + base
        return _Pool(data, offsets, index)

    def fill(self, start: int, stop: int, base: int, out: np.ndarray, run: np.ndarray | None) -> None:
        """``out`` = the text numbers (plus ``base``) of output rows ``start:stop`` (``run``: each
        output row's run, for a repeated pool)."""
        if self.index is None and self.stride == 0:
            out[:] = base + self.first
        elif self.repeated:
            rows = run[start:stop]
            if self.index is not None:
                np.add(self.index[rows], base, out=out, casting="unsafe")
            else:
                np.multiply(rows, self.stride, out=out, casting="unsafe")
                out += base + self.first
        elif self.index is not None:
            np.add(self.index[start:stop], base, out=out, casting="unsafe")
        else:
            first = base + self.first + self.stride * start
            out[:] = np.arange(first, first + self.stride * (stop - start), self.stride)


def _concat(pools: list[_Pool]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """All texts in one buffer (int32 offsets when they fit); each pool's first text number. Between
    two pools there is one more text (from the end of one pool's last text to the next pool's first)."""
    total = sum(len(p.data) for p in pools)
    count = sum(len(p.offsets) for p in pools)
    data = np.empty(total, dtype=np.uint8)
    offsets = np.empty(count, dtype=np.int32 if total <= _INT32_MAX else np.int64)
    bases = []
    at = element = 0
    for pool in pools:
        data[at : at + len(pool.data)] = pool.data
        np.add(
            pool.offsets, np.int64(at), out=offsets[element : element + len(pool.offsets)], casting="unsafe"
        )
        bases.append(element)
        at += len(pool.data)
        element += len(pool.offsets)
    return data, offsets, bases


def _constant_pool(text: str) -> _Pool:
    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    return _Pool(data, np.array([0, len(data)], dtype=np.int64), stride=0)


def _table_pool(table: _Table) -> _Pool:
    encoded = [text.encode("utf-8") for text in table.texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    pool = _Pool(np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets, index=table.codes)
    pool.repeated = table.repeated
    return pool


def _arrow_pool(array: pa.Array) -> _Pool:
    """A (large) string / binary array as a pool, row ``r`` = element ``r`` (nulls: whatever bytes
    their slots span)."""
    _, offsets, data = array.buffers()
    width = np.int64 if array.type in (pa.large_string(), pa.large_binary()) else np.int32
    if offsets is None or len(array) == 0:
        return _Pool(np.empty(0, dtype=np.uint8), np.zeros(len(array) + 1, dtype=np.int64))
    offsets = np.frombuffer(offsets, dtype=width)[array.offset : array.offset + len(array) + 1]
    data = np.empty(0, dtype=np.uint8) if data is None else np.frombuffer(data, dtype=np.uint8)
    return _Pool(data, offsets)


def _texts_pool(texts: list[str]) -> _Pool:
    return _arrow_pool(_to_arrow(texts))


def _padded_pool(text: np.ndarray, starts: np.ndarray | int, ends: np.ndarray | int) -> _Pool:
    """Row ``r``'s text is ``text[r, starts[r]:ends[r]]``; between two texts is one more (the rest of
    a row and the start of the next)."""
    m, width = text.shape
    rows = np.arange(0, width * m, width, dtype=np.int64)
    offsets = np.empty(2 * m + 1, dtype=np.int64)
    np.add(rows, starts, out=offsets[0:-1:2])
    np.add(rows, ends, out=offsets[1::2])
    offsets[-1] = offsets[-2]
    return _Pool(text.reshape(-1), offsets, stride=2)


# a column's encoding: JSON text pieces to concatenate per row — literal ``str`` (same in every row),
# a ``_Table`` or a ``_Pool``
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
    runs, repeated = _Runs.of([rows[name] for name in fields])
    parts: Parts = ["{"]
    cell_errors: list[tuple[int, int, Exception]] = []
    encode_errors: list[UnicodeEncodeError] = []
    for position, name in enumerate(fields):
        series = rows[name]
        if repeated[position]:  # one row per run: its first
            series = pd.Series(series.array.take(runs.heads), copy=False)
        try:
            column = _encode_column(name, series)
        except _CellError as failure:
            row = int(runs.heads[failure.row]) if repeated[position] else failure.row
            cell_errors.append((row, position, failure.error))
            continue
        except _EncodeError as failure:
            encode_errors.append(failure.error)
            continue
        if repeated[position]:
            for part in column:
                if not isinstance(part, str):
                    part.repeated = True
        parts.append(("" if position == 0 else ", ") + _dumps(name) + ": ")
        parts.extend(column)
    if cell_errors:
        raise min(cell_errors, key=lambda e: (e[0], e[1]))[2]
    if encode_errors:
        raise encode_errors[0]
    parts.append("}\n")
    return _join(_simplify(parts), n, runs)


class _Runs:
    """Rows in runs that repeat some fields (reconciled rows repeat a signal's fields once per
    horizon): a column whose value changes only where a run starts is encoded once per run, and
    neighbouring such columns are joined once per run."""

    def __init__(self, starts: np.ndarray):
        self.heads = np.flatnonzero(starts)  # the first row of each run
        self.run = np.cumsum(starts, dtype=np.int64) - 1  # each row's run
        self.lengths = np.diff(self.heads, append=len(starts))

    @classmethod
    def of(cls, columns: list[pd.Series]) -> tuple[_Runs | None, list[bool]]:
        """The runs of the rows (where any column that repeats values changes) and which columns
        repeat their value within them; no runs unless they make at least a quarter of the rows
        repeats."""
        starts = [_run_starts(series) for series in columns]
        found = [s for s in starts if s is not None]
        if not found:
            return None, [False] * len(columns)
        union = found[0].copy()
        for other in found[1:]:
            union |= other
        if np.count_nonzero(union) > 0.75 * len(union):
            return None, [False] * len(columns)
        return cls(union), [s is not None for s in starts]


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
            return [_float_pool(series.to_numpy(dtype=np.float64))]
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
    return [_texts_pool(fragments)]


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
        return [_table_pool(_Table(texts, index))]
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
    pool = _arrow_pool(array)
    if array.null_count == 0:
        if len(escape_rows):
            inner = [_dumps(s)[1:-1] for s in array.take(pa.array(escape_rows)).to_pylist()]
            pool = pool.with_rows(n, escape_rows, _texts_pool(inner))
        return ['"', pool, '"']
    null = array.is_null().to_numpy(zero_copy_only=False)
    # null rows: the marker instead of the opening quote, nothing for the text and the closing quote
    rows = np.union1d(np.flatnonzero(null), escape_rows)
    texts = array.take(pa.array(rows)).to_pylist()
    pool = pool.with_rows(n, rows, _texts_pool(["" if s is None else _dumps(s)[1:-1] for s in texts]))
    codes = null.astype(np.int32)
    return [_Table(['"', missing], codes), pool, _Table(['"', ""], codes)]


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


# ---------------------------------------------------------------------------------------- numbers


def _int_fragments(values: np.ndarray) -> _Table | _Pool:
    if len(values):
        low, high = int(values.min()), int(values.max())
        if high - low < _MAX_TABLE:
            return _Table([str(v) for v in range(low, high + 1)], (values - low).astype(np.int32))
    return _arrow_pool(pc.cast(pa.array(values), pa.string()))


def _run_starts(series: pd.Series) -> np.ndarray | None:
    """Where the column's value changes (a value the same as the row before writes the same text),
    when at least a quarter of the rows repeat the row before; None otherwise, or for a dtype whose
    values are not compared here."""
    n = len(series)
    if n < 64:
        return None
    dtype = series.dtype
    starts = np.empty(n, dtype=bool)
    starts[0] = True
    if isinstance(dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy()
        np.not_equal(codes[1:], codes[:-1], out=starts[1:])
    elif isinstance(dtype, pd.DatetimeTZDtype) or (isinstance(dtype, np.dtype) and dtype.kind in "fiubmM"):
        values = series.array.asi8 if dtype.kind in "mM" else series.to_numpy()
        bits = values.view(f"u{values.dtype.itemsize}")  # bitwise: -0.0 and 0.0 differ
        np.not_equal(bits[1:], bits[:-1], out=starts[1:])
    elif isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        array = pa.array(series.array)
        array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
        changed = pc.not_equal(array.slice(1), array.slice(0, n - 1))
        starts[1:] = pc.fill_null(changed, True).to_numpy(zero_copy_only=False)
    else:
        return None
    return starts if np.count_nonzero(starts) <= 0.75 * n else None


def _float_pool(x: np.ndarray) -> _Pool:
    """Python ``repr`` of each float as ``json.dumps`` writes it; NaN → null, ±inf raises."""
    fixed = _fixed_point(x)
    if fixed is None:
        return _shortest_pool(x)
    pool, other = fixed
    if len(other):
        try:
            texts = _shortest_pool(x[other])
        except _CellError as failure:
            raise _CellError(int(other[failure.row]), failure.error) from None
        pool = pool.with_rows(len(x), other, texts)
    return pool


_MAX_DECIMALS = 4
_FIXED_MIN_ROWS = 2048  # below this, numpy's cost per call is more than it saves


def _decimals(sample: np.ndarray) -> int | None:
    """The fewest decimals (0.._MAX_DECIMALS) that write nine in ten of ``sample`` exactly."""
    with np.errstate(invalid="ignore", over="ignore"):
        for d in range(_MAX_DECIMALS + 1):
            k = np.rint(sample * 10.0**d)
            if np.count_nonzero((k / 10.0**d == sample) & (np.abs(k) < 1e15)) >= 0.9 * len(sample):
                return d
    return None


def _fixed_point(x: np.ndarray) -> tuple[_Pool, np.ndarray] | None:
    """The texts of the rows that are decimals with few digits (prices, rounded scores), and the rows
    that are not; ``None`` when too few are (the caller formats every row the general way).

    If x is the double nearest to k / 10**d with |k| < 10**15 (at most 15 significant digits) — which
    ``rint(x * 10**d) / 10**d == x`` tells, a division being correctly rounded — the shortest text that
    reads back as x, ``repr``'s digits, is that decimal's: two decimals of at most 15 significant digits
    never round to the same double (DBL_DIG), so no shorter one reads back as x either. The text is then
    k's digits with the point d places from the right, trailing fraction zeros dropped (one kept), in
    fixed notation as ``repr`` writes it (1e-4 <= |x| < 1e16 holds for k != 0, d <= 4), "-" for a
    negative sign bit (-0.0 too)."""
    m = len(x)
    if m < _FIXED_MIN_ROWS:
        return None
    d = _decimals(x[:: max(1, m // 256)])
    if d is None:
        return None
    scale = 10.0**d
    with np.errstate(invalid="ignore", over="ignore"):
        k = np.rint(x * scale)
        np.abs(k, out=k)
        exact = k / scale == np.abs(x)
        exact &= k < 1e15
    other = np.flatnonzero(~exact)
    if len(other) > m // 2:
        return None
    if len(other):
        k[other] = 0.0
    top = float(k.max())
    a = k.astype(np.int64 if top >= 2**31 else np.int32)
    high = a // 100_000
    low = a - high * 100_000
    # a row: the five lowest digits of |k| with the point in its last 8 bytes, the digits above before
    # them as 4-digit groups, the sign before those; 16 bytes a row up to 9 digits, 24 beyond
    width = 16 if top < 10**9 else 24
    low_text, low_start, low_end = _low_digits_table(d, width - 8)
    text = np.empty((m, width), dtype=np.uint8)
    text.view(np.uint64)[:, -1] = low_text[low]
    start = low_start[low]
    if top >= 100_000:
        groups = _four_digits_tables()[0]
        words = text.view(np.uint32)
        if width == 16:
            words[:, 1] = groups[high]
            start = np.minimum(start, _high_start_table()[high])
        else:
            words[:, 3] = groups[high - high // 10_000 * 10_000]
            rest = high // 10_000
            words[:, 2] = groups[rest - rest // 10_000 * 10_000]
            words[:, 1] = groups[high // 10**8]
            start = np.where(high > 0, 16 - _digit_count(high), start)
    negative = np.signbit(x)
    if negative.any():
        rows = np.flatnonzero(negative)
        start = start.astype(np.int64)
        start[rows] -= 1
        text.reshape(-1)[rows * width + start[rows]] = ord("-")
    return _padded_pool(text, start, low_end[low]), other


@cache
def _high_start_table() -> np.ndarray:
    """1..9999 → where a number starts in a 16-byte row when these are its digits above the lowest five
    (bytes 4-7); 0 → beyond any start."""
    values = np.arange(10_000)
    start = 8 - _digit_count(np.maximum(values, 1))
    start[0] = np.iinfo(np.int8).max
    return start.astype(np.int8)


def _digit_count(values: np.ndarray) -> np.ndarray:
    """Decimal digits of each positive value < 10**12."""
    count = np.ones(len(values), dtype=np.int8)
    for power in range(1, 12):
        if values.max() < 10**power:
            break
        count += values >= 10**power
    return count


@cache
def _low_digits_table(d: int, at: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """0..99999, five digits with the point ``d`` digits from the right (``ddd.dd``; ``ddddd.0`` for
    d = 0), as the bytes of a uint64 at byte ``at`` of a row; and where in the row the number starts
    when there are no digits above (its first significant integer digit, or the units digit) and ends
    (fraction zeros stripped, one kept)."""
    values = np.arange(100_000)
    whole, fraction = values // 10**d, values % 10**d
    integer_digits = 5 - d
    text = np.zeros((100_000, 8), dtype=np.uint8)
    _digits(text, 0, whole, integer_digits)
    text[:, integer_digits] = ord(".")
    kept = np.ones(100_000, dtype=np.int64)
    if d:
        _digits(text, integer_digits + 1, fraction, d)
        for k in range(1, d):  # digits kept: d minus trailing zeros, at least one
            kept += fraction % 10**k != 0
    else:
        text[:, integer_digits + 1] = ord("0")
    start = at + integer_digits - _digit_count(np.maximum(whole, 1))
    end = at + integer_digits + 1 + kept
    return text.view(np.uint64).reshape(-1), start.astype(np.int8), end.astype(np.int8)


def _shortest_pool(x: np.ndarray) -> _Pool:
    """msgspec's texts (``repr``'s in fixed notation), ``repr`` itself in scientific notation."""
    with np.errstate(invalid="ignore"):
        magnitude = np.abs(x)
        large = magnitude >= _FIXED_HIGH  # ±inf, and scientific notation
        small = magnitude < _FIXED_LOW  # zero, and scientific notation
    odd = np.empty(0, dtype=np.intp)
    if large.any():
        odd = np.flatnonzero(large)
        infinite = np.isinf(x[odd])
        if infinite.any():
            row = int(odd[np.argmax(infinite)])
            try:
                _dumps(float(x[row]))
            except ValueError as error:
                raise _CellError(row, error) from None
    if small.any():
        rows = np.flatnonzero(small)
        odd = np.union1d(odd, rows[x[rows] != 0])
    if not _MSGSPEC_FLOATS:
        return _repr_pool(x)
    # a chunk at a time, so the Python floats and the text of a chunk reuse the memory of the chunk
    # before; the texts are gathered in a numpy buffer
    chunk = bytearray()
    encoded = np.empty(_FLOAT_TEXTS * len(x) + 2, dtype=np.uint8)
    ends = []
    at = 0
    for start in range(0, len(x), _FLOAT_CHUNK):
        values = x[start : start + _FLOAT_CHUNK].tolist()
        if len(odd):
            first, last = np.searchsorted(odd, [start, start + _FLOAT_CHUNK])
            for row in (odd[first:last] - start).tolist():
                values[row] = msgspec.Raw(float.__repr__(values[row]).encode())
        _FLOAT_WRITER.encode_into(values, chunk)
        if at + len(chunk) > len(encoded):
            encoded = np.concatenate([encoded, np.empty(len(encoded) + len(chunk), dtype=np.uint8)])
        encoded[at : at + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
        at += len(chunk)
        ends.append(at)
    pool = _json_arrays_pool(encoded[:at], ends, len(x))
    return _repr_pool(x) if pool is None else pool


_FLOAT_CHUNK = 1 << 14
# bytes per value that hold every chunk: at most 24 a text ("-2.2250738585072014e-308"), a comma,
# and a chunk's brackets (at most 1 a value)
_FLOAT_TEXTS = 26


def _repr_pool(x: np.ndarray) -> _Pool:
    return _texts_pool(["null" if v != v else float.__repr__(v) for v in x.tolist()])


def _json_arrays_pool(raw: np.ndarray, ends: list[int], m: int) -> _Pool | None:
    """The ``m`` values of JSON arrays one after the other (``ends``: where each ends) of
    ``_FLOAT_CHUNK`` values each (the last: the rest), values with no comma (numbers, ``null``);
    None if that is not what ``raw`` holds (never seen: the caller then uses ``repr``)."""
    offsets = np.empty(2 * m + 1, dtype=np.int64)
    begin = value = 0
    for end in ends:
        count = min(_FLOAT_CHUNK, m - value)
        commas = np.flatnonzero(raw[begin:end] == ord(",")) + begin
        if len(commas) != count - 1 or raw[begin] != ord("[") or raw[end - 1] != ord("]"):
            return None
        at = 2 * value  # value i is text 2 i; the comma (or "][") after it is one more
        offsets[at] = begin + 1
        offsets[at + 1 : at + 2 * count - 1 : 2] = commas
        offsets[at + 2 : at + 2 * count - 1 : 2] = commas + 1
        offsets[at + 2 * count - 1] = end - 1
        begin, value = end, value + count
    offsets[-1] = offsets[-2]
    return _Pool(raw, offsets, stride=2)


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
    ints = _int_fragments(np.where(small, x, 0.0).astype(np.int64))
    if small.all():
        return [ints]
    pool = _table_pool(ints) if isinstance(ints, _Table) else ints
    huge = whole & ~small
    if huge.any():
        rows = np.flatnonzero(huge)
        pool = pool.with_rows(n, rows, _texts_pool([str(int(h)) for h in x[rows].tolist()]))
    fractional = ~whole
    if fractional.any():
        rows = np.flatnonzero(fractional)
        try:
            floats = _float_pool(x[rows])
        except _CellError as failure:
            raise _CellError(int(rows[failure.row]), failure.error) from None
        pool = pool.with_rows(n, rows, floats)
    return [pool]


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
    pool = _time_texts(*epoch)
    if pool is None:
        return _generic(_iso_utc(series))  # years strftime might not write as 4 digits
    return [pool]


def _time_texts(values: np.ndarray, per_second: int) -> _Pool | None:
    """The quoted ISO text (``null`` for NaT) of each epoch value; values on whole minutes (bar
    times) or whole seconds are looked up in a table of every minute (second) in their range when
    that table is smaller than the values."""
    m = len(values)
    if m < 64:
        return _time_pool(values, per_second)
    nat = values == _NAT
    has_nat = bool(nat.any())
    valid = values[~nat] if has_nat else values
    if not len(valid):
        return _time_pool(values, per_second)
    for step in (60 * per_second, per_second) if per_second > 1 else (60,):
        if np.any(valid[:64] % step):  # most often answered here
            continue
        slots = valid // step
        if not np.array_equal(slots * step, valid):
            continue
        low, high = int(slots.min()), int(slots.max())
        if high - low >= m // 2:
            break  # a finer step has a larger table still
        table = _time_pool(np.append(np.arange(low, high + 1, dtype=np.int64) * step, _NAT), per_second)
        if table is None:
            return None
        slots -= low
        if has_nat:
            slots = np.full(m, high - low + 1, dtype=np.int64)
            slots[~nat] = valid // step - low
        return _Pool(table.data, table.offsets, table.at(slots))
    return _time_pool(values, per_second)


def _time_pool(values: np.ndarray, per_second: int) -> _Pool | None:
    """``"YYYY-MM-DDTHH:MM:SS[.fffffffff]Z"`` or ``null`` per epoch value, each in a fixed-width
    numpy row written a machine word at a time from cached tables; ``None`` when a year is outside
    1000..9999. Row bytes: 4 '"', 5-14 the date, 15 'T', 16-23 the time of day, from 24 the fraction
    and 'Z"'."""
    m = len(values)
    nat = values == _NAT
    has_nat = bool(nat.any())
    if has_nat:
        values = np.where(nat, 0, values)
    seconds = values // per_second
    days = seconds // 86_400
    second_of_day = (seconds - days * 86_400).astype(np.int32)
    first, last = int(days.min()), int(days.max())
    years = _civil(np.array([first, last]))[0]
    if years[0] < 1000 or years[1] > 9999:
        return None
    nanos = None
    if per_second > 1:
        nanos = ((values - seconds * per_second) * (10**9 // per_second)).astype(np.int32)
        if not nanos.any():
            nanos = None

    width = 32 if nanos is None else 40
    text = np.empty((m, width), dtype=np.uint8)
    words = text.view(np.uint64)
    if last - first < 4 * m + 1024:
        head, tail = _date_words(np.arange(first, last + 1))
        day = (days - first).astype(np.int32)
    else:
        unique_days, day = np.unique(days, return_inverse=True)
        head, tail = _date_words(unique_days)
    words[:, 0] = head[day]
    words[:, 1] = tail[day]
    words[:, 2] = _time_of_day_words()[second_of_day]
    if nanos is None:
        text.view(np.uint16)[:, 12] = np.frombuffer(b'Z"', dtype=np.uint16)[0]
        end = 26
    else:
        # ".ddd" + "dddd" + "dd" (bytes 24-27, 28-31, 32-33), trailing zeros (and a zero fraction) cut
        high = nanos // 10**6
        rest = nanos - high * 10**6
        middle = rest // 100
        low = rest - middle * 100
        point_three, zeros_three = _point_three_digits_table()
        four, zeros_four = _four_digits_tables()
        two, zeros_two = _two_digits_table()
        quarters = text.view(np.uint32)
        quarters[:, 6] = point_three[high]
        quarters[:, 7] = four[middle]
        text.view(np.uint16)[:, 16] = two[low]
        trailing = np.where(
            low != 0, zeros_two[low], np.where(middle != 0, 2 + zeros_four[middle], 6 + zeros_three[high])
        )
        end = np.where(nanos == 0, 24, 34 - trailing)
        at = np.arange(0, width * m, width) + end
        flat = text.reshape(-1)
        flat[at] = ord("Z")
        flat[at + 1] = ord('"')
        end += 2
    if has_nat:
        text[nat, 4:8] = np.frombuffer(b"null", dtype=np.uint8)
        end = np.where(nat, 8, end)
    return _padded_pool(text, 4, end)


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


def _date_words(days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bytes 0-15 of a row (4 spare, '"YYYY-MM-DDT') for each day, as two uint64 arrays."""
    text = np.zeros((len(days), 16), dtype=np.uint8)
    text[:, 4] = ord('"')
    text[:, 5:15] = _date_bytes(days)
    text[:, 15] = ord("T")
    words = text.view(np.uint64)
    return np.ascontiguousarray(words[:, 0]), np.ascontiguousarray(words[:, 1])


@cache
def _time_of_day_words() -> np.ndarray:
    """Second of the day → "HH:MM:SS" as the bytes of a uint64."""
    seconds = np.arange(86_400)
    out = np.empty((86_400, 8), dtype=np.uint8)
    _digits(out, 0, seconds // 3600, 2)
    out[:, 2] = out[:, 5] = ord(":")
    _digits(out, 3, seconds // 60 % 60, 2)
    _digits(out, 6, seconds % 60, 2)
    return out.view(np.uint64).reshape(-1)


def _digit_tables(width: int, point: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """0..10**width-1 → its digits with leading zeros (after a "." if ``point``) as the bytes of an
    unsigned int, and how many of those digits are trailing zeros (all of them for 0)."""
    values = np.arange(10**width)
    size = width + point
    text = np.empty((10**width, size), dtype=np.uint8)
    if point:
        text[:, 0] = ord(".")
    _digits(text, int(point), values, width)
    zeros = np.zeros(10**width, dtype=np.int8)
    for k in range(1, width + 1):
        zeros += values % 10**k == 0
    return text.view(f"u{size}").reshape(-1), zeros


@cache
def _point_three_digits_table() -> tuple[np.ndarray, np.ndarray]:
    return _digit_tables(3, point=True)


@cache
def _four_digits_tables() -> tuple[np.ndarray, np.ndarray]:
    return _digit_tables(4)


@cache
def _two_digits_table() -> tuple[np.ndarray, np.ndarray]:
    return _digit_tables(2)


# ------------------------------------------------------------------------------------------- join


def _simplify(parts: Parts) -> Parts:
    """Fold the constant text into neighbouring tables, combine neighbouring tables."""
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
            merged[i + 1] = _Table([part + text for text in table.texts], table.codes, table.repeated)
        elif isinstance(part, str) and folded and isinstance(folded[-1], _Table):
            table = folded[-1]
            folded[-1] = _Table([text + part for text in table.texts], table.codes, table.repeated)
        elif (
            isinstance(part, _Table)
            and folded
            and isinstance(folded[-1], _Table)
            and part.repeated == folded[-1].repeated
            and len(part.texts) * len(folded[-1].texts) <= _MAX_TABLE
        ):
            left = folded[-1]
            texts = [a + b for a in left.texts for b in part.texts]
            codes = left.codes * np.int32(len(part.texts)) + part.codes
            folded[-1] = _Table(texts, codes, part.repeated)
        else:
            folded.append(part)
    # the constant text left between pools goes into a neighbour with few texts (say, times looked
    # up in a table of minutes): rewritten once per text, not gathered once per row
    joined: Parts = []
    for i, part in enumerate(folded):
        if isinstance(part, str) and joined and _few_texts(joined[-1]):
            joined[-1] = _around(joined[-1], "", part)
        elif isinstance(part, str) and i + 1 < len(folded) and _few_texts(folded[i + 1]):
            folded[i + 1] = _around(folded[i + 1], part, "")
        else:
            joined.append(part)
    return joined


def _few_texts(part) -> bool:
    """A pool pointing at fewer texts than a quarter of its rows."""
    return isinstance(part, _Pool) and part.index is not None and 4 * len(part.offsets) <= len(part.index)


def _around(pool: _Pool, prefix: str, suffix: str) -> _Pool:
    """``pool`` with ``prefix`` before and ``suffix`` after each of its texts."""
    texts = len(pool.offsets) - 1
    parts = [_constant_pool(prefix), _Pool(pool.data, pool.offsets), _constant_pool(suffix)]
    joined = _gather(parts, texts)
    if joined is None:
        return pool
    joined.index, joined.repeated = pool.index, pool.repeated
    return joined


def _join(parts: Parts, n: int, runs: _Runs | None) -> bytes:
    """Every row's pieces one after the other: all texts in one Arrow binary array, gathered a block
    of rows at a time with the text numbers in row-major order — the gathered block is the block's
    bytes, copied into the output (and freed, so the next block reuses the memory)."""
    if all(isinstance(p, str) for p in parts):  # no fields: the same text on every row
        return "".join(parts).encode("utf-8") * n
    if runs is not None:
        parts = _join_runs(parts, len(runs.heads))
    pools = [_as_pool(p) for p in parts]
    size = sum(_size(pool, n, runs) for pool in pools)
    data, offsets, bases = _concat(pools)
    for pool in pools:  # their texts are in the joined buffer now: free them before the output exists
        pool.data = None
    binary = pa.binary() if offsets.dtype == np.int32 else pa.large_binary()
    texts = pa.Array.from_buffers(binary, len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    index_type = np.int32 if len(offsets) <= _INT32_MAX else np.int64
    run = None if runs is None else runs.run
    # the output is written in place: bytes(size) is calloc'ed, so its pages are untouched until a
    # block is copied in, and the BytesIO owning it alone hands out a writable view and then the
    # same bytes object (a copy, in an implementation that does otherwise: slower, still right)
    out = io.BytesIO(bytes(size))
    with out.getbuffer() as view:
        target = np.frombuffer(view, dtype=np.uint8)
        _advise_huge_pages(target)
        at = 0
        for start in range(0, n, BLOCK_ROWS):
            stop = min(n, start + BLOCK_ROWS)
            at = _join_block(texts, pools, bases, index_type, run, start, stop, target, at)
        del target
    if at != size:
        raise AssertionError("the joined rows are not the size of their pieces")
    return out.getvalue()


def _size(pool: _Pool, n: int, runs: _Runs | None) -> int:
    """Bytes of the texts of the ``n`` output rows."""
    offsets = pool.offsets
    if pool.index is None:
        if pool.stride == 0:
            return int(offsets[pool.first + 1] - offsets[pool.first]) * n
        rows = len(runs.heads) if pool.repeated else n
        stop = pool.first + pool.stride * rows
        starts = offsets[pool.first : stop : pool.stride]
        ends = offsets[pool.first + 1 : stop + 1 : pool.stride]
        if not pool.repeated:
            return int(ends.sum(dtype=np.int64) - starts.sum(dtype=np.int64))
        return int((ends - starts) @ runs.lengths)
    lengths = np.diff(offsets)
    if pool.repeated:
        return int(lengths[pool.index] @ runs.lengths)
    return int(lengths[pool.index].sum(dtype=np.int64))


def _advise_huge_pages(buffer: np.ndarray) -> None:
    """Ask Linux to back ``buffer`` with transparent huge pages, as numpy does for its own large
    arrays: the output is written once, and taking a page fault every 4 KiB is the largest part of
    that. Only advice: nothing happens where it is not available."""
    madvise = _madvise()
    if madvise is None or buffer.nbytes < _HUGE_PAGE:
        return
    address = buffer.ctypes.data
    start = -(-address // _HUGE_PAGE) * _HUGE_PAGE
    stop = (address + buffer.nbytes) // _HUGE_PAGE * _HUGE_PAGE
    if stop > start:
        madvise(start, stop - start)


_HUGE_PAGE = 2 << 20


@cache
def _madvise():
    try:
        import ctypes
        import mmap

        advice = mmap.MADV_HUGEPAGE
        function = ctypes.CDLL(None, use_errno=True).madvise
    except (ImportError, AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    function.restype = ctypes.c_int
    return lambda start, length: function(start, length, advice)


def _as_pool(part: str | _Table | _Pool) -> _Pool:
    if isinstance(part, str):
        return _constant_pool(part)
    return _table_pool(part) if isinstance(part, _Table) else part


def _join_runs(parts: Parts, m: int) -> Parts:
    """Neighbouring repeated pieces (one row per run) are joined once per run: one text per run, so
    the row-wise gather has fewer pieces."""
    joined: Parts = []
    group: Parts = []
    for part in [*parts, None]:
        if part is not None and (isinstance(part, str) or part.repeated):
            group.append(part)
            continue
        texts = _gather(group, m) if len(group) > 1 else None
        if texts is None:
            joined.extend(group)
        else:
            texts.repeated = True
            joined.append(texts)
        group = []
        if part is not None:
            joined.append(part)
    return joined


def _gather(parts: Parts, m: int) -> _Pool | None:
    """The texts of the ``m`` rows of ``parts`` joined, one per row (None if that would not fit in
    2 GiB)."""
    pools = [_as_pool(p) for p in parts]
    data, offsets, bases = _concat(pools)
    if offsets.dtype != np.int32:
        return None
    index = np.empty((m, len(pools)), dtype=np.int32)
    for column, (pool, base) in enumerate(zip(pools, bases, strict=True)):
        if pool.index is not None:
            np.add(pool.index, base, out=index[:, column], casting="unsafe")
        elif pool.stride == 0:
            index[:, column] = base + pool.first
        else:
            first = base + pool.first
            index[:, column] = np.arange(first, first + pool.stride * m, pool.stride)
    texts = pa.Array.from_buffers(
        pa.binary(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    try:
        joined = texts.take(pa.array(index.reshape(-1)))
    except (pa.ArrowCapacityError, pa.ArrowInvalid):
        return None
    for pool in pools:
        pool.data = None
    _, offsets, data = joined.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int32)[joined.offset : joined.offset + len(joined) + 1]
    data = np.empty(0, dtype=np.uint8) if data is None else np.frombuffer(data, dtype=np.uint8)
    return _Pool(data, bounds[:: len(pools)])


def _join_block(texts: pa.Array, pools: list[_Pool], bases: list[int], index_type, run: np.ndarray | None,
                start: int, stop: int, target: np.ndarray, at: int) -> int:  # fmt: skip
    """Rows ``start:stop`` into ``target`` from byte ``at``; returns where they end."""
    index = np.empty((stop - start, len(pools)), dtype=index_type)
    for column, (pool, base) in enumerate(zip(pools, bases, strict=True)):
        pool.fill(start, stop, base, index[:, column], run)
    try:
        joined = texts.take(pa.array(index.reshape(-1)))
    except (pa.ArrowCapacityError, pa.ArrowInvalid):  # a block of more than 2 GiB of text
        if stop - start < 2:
            raise
        middle = (start + stop) // 2
        at = _join_block(texts, pools, bases, index_type, run, start, middle, target, at)
        return _join_block(texts, pools, bases, index_type, run, middle, stop, target, at)
    _, offsets, data = joined.buffers()
    width = np.int64 if joined.type == pa.large_binary() else np.int32
    bounds = np.frombuffer(offsets, dtype=width)[joined.offset : joined.offset + len(joined) + 1]
    size = int(bounds[-1] - bounds[0])
    if size:
        target[at : at + size] = np.frombuffer(data, dtype=np.uint8)[int(bounds[0]) : int(bounds[-1])]
    return at + size
