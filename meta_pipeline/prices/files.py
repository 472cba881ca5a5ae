"""Local Binance daily kline dumps: ``<bars_dir>/<SYMBOL>/<SYMBOL>-1m-<YYYY-MM-DD>.csv``.

The files are read as Binance writes them and as collectors really leave them:

- a header row is optional (detected: the first field of the first line is not a number);
- open times in milliseconds or microseconds (Binance's newer spot dumps use µs), detected per row
  by magnitude (:func:`~meta_pipeline.prices.model.epoch_to_ns`);
- the first six columns (open_time, open, high, low, close, volume) are used, and the trade count
  (9th column) where the file has one (Binance's 12-column dumps); other columns are ignored;
- a minute written twice is de-duplicated with the LATER row winning (a collector writes the forming
  candle first and the final one later);
- the winning rows are then checked like every source's bars
  (:func:`~meta_pipeline.prices.model.validate_bars`, docs/rules.md, *Prices*): impossible bars,
  off-minute bars and bars without a trade (volume 0, or a trade count of 0) are dropped and counted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from meta_pipeline.prices.model import (
    MAX_PRICE,
    MINUTE_NS,
    PRICE_COLUMNS,
    TRADES_COLUMN,
    PriceSourceError,
    SymbolNotListed,
    base_asset,
    empty_bars,
    epoch_to_ns,
    merge_counts,
    normalize_bars,
    to_utc,
    validate_bars,
)

_NUMBER = re.compile(r"^\s*[-+]?\d+(\.\d*)?([eE][-+]?\d+)?\s*$")
_DUMP_NAME = re.compile(r"^([A-Z0-9]+)-1m-\d{4}-\d{2}-\d{2}")
_SAFE_SYMBOL = re.compile(r"^[A-Z0-9]{2,30}$")
TRADE_COUNT_FIELD = 8  # 0-based column of the trade count in Binance's kline layout


def _layout(path: Path) -> tuple[bool, int]:
    """``(has a header row, number of fields in the first data row)``."""
    with path.open("r", encoding="utf-8-sig") as fh:
        first = fh.readline()
        header = bool(first.strip()) and not _NUMBER.match(first.split(",", 1)[0])
        data = fh.readline() if header else first
    return header, len(data.split(",")) if data.strip() else 0


class _Columns(NamedTuple):
    """The columns of one kline file, in file order (see :func:`read_kline_rows`)."""

    open_time_ns: np.ndarray  # int64 ns since the epoch (µs/ms already detected)
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    trades: np.ndarray | None  # float64, None when the file has no 9th column


_ARROW_READ = pa_csv.ReadOptions(autogenerate_column_names=True, use_threads=False)
_ARROW_PARSE = pa_csv.ParseOptions()


def _arrow_convert(cols: list[int]) -> pa_csv.ConvertOptions:
    names = [f"f{i}" for i in cols]
    return pa_csv.ConvertOptions(
        include_columns=names,
        column_types={names[0]: pa.int64(), **{n: pa.float64() for n in names[1:]}},
        null_values=[],  # an empty field or "NA" is left to the pandas reader (_read_pandas)
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )


_ARROW_CONVERT = {False: _arrow_convert(list(range(6))), True: _arrow_convert([*range(6), TRADE_COUNT_FIELD])}


def _read_arrow(path: Path, header: bool, with_trades: bool) -> list[np.ndarray] | None:
    """The wanted columns via ``pyarrow.csv`` (int64 open time, float64 others), or ``None`` when the
    file is anything but a plain, rectangular, all-finite numeric CSV: pyarrow is strict where pandas is
    lenient (ragged rows, empty or "NA" fields, "inf"/"nan" spellings, …), so such files are left to
    :func:`_read_pandas`, which decides what they hold or raises exactly as before."""
    read = _ARROW_READ
    if header:
        read = pa_csv.ReadOptions(autogenerate_column_names=True, use_threads=False, skip_rows=1)
    try:
        table = pa_csv.read_csv(
            path, read_options=read, parse_options=_ARROW_PARSE, convert_options=_ARROW_CONVERT[with_trades]
        )
    except pa.ArrowException:
        return None
    if table.num_rows == 0:
        return None
    arrays = [col.to_numpy() for col in table.columns]
    if not all(np.isfinite(a).all() for a in arrays[1:]):
        return None
    return arrays


def _read_pandas(path: Path, header: bool, with_trades: bool) -> list[np.ndarray] | None:
    """The wanted columns via ``pandas.read_csv`` (the lenient reader: empty fields are NaN …), ``None``
    for a file without rows; ``ValueError`` naming ``path`` for a file that is not klines."""
    cols = list(range(6)) + ([TRADE_COUNT_FIELD] if with_trades else [])
    try:
        raw = pd.read_csv(
            path,
            header=None,
            skiprows=1 if header else 0,
            usecols=cols,
            dtype={0: np.int64, **{i: np.float64 for i in cols[1:]}},
            encoding="utf-8-sig",
        )
    except pd.errors.EmptyDataError:
        return None
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a Binance kline CSV ({exc})") from exc
    return [raw[i].to_numpy() for i in cols]


def _read_columns(path: Path) -> _Columns | None:
    """The columns of one kline file, ``None`` for a file without rows. Fast path ``pyarrow.csv``;
    whatever it refuses goes through ``pandas.read_csv``, which gives the same values on every file both
    read (tested) and decides alone about the rest."""
    if path.stat().st_size == 0:
        return None
    header, n_fields = _layout(path)
    with_trades = n_fields > TRADE_COUNT_FIELD
    arrays = _read_arrow(path, header, with_trades) if n_fields else None
    if arrays is None:
        arrays = _read_pandas(path, header, with_trades)
        if arrays is None:
            return None
    return _Columns(epoch_to_ns(arrays[0]), *arrays[1:6], arrays[6] if with_trades else None)


_STR = pd.Series([""], dtype=str).dtype  # make_bars's string columns: pyarrow-backed "str" on pandas 3


def _constant_str(value: str, n: int) -> pd.Series | pd.api.extensions.ExtensionArray:
    """``pd.Series([value] * n, dtype=str)`` as :func:`make_bars` builds it; on pandas 3 straight from
    ``pyarrow.repeat`` (no list of ``n`` Python strings to convert)."""
    if isinstance(_STR, pd.StringDtype) and _STR.storage == "pyarrow":
        return pd.array(pa.repeat(pa.scalar(value, pa.large_string()), n), dtype=_STR)
    return pd.Series([value] * n, dtype=str)


def _frame(
    instrument: str,
    open_time_ns: np.ndarray,
    prices: list[np.ndarray],
    source: str,
    trades: np.ndarray | None = None,
) -> pd.DataFrame:
    """What :func:`~meta_pipeline.prices.model.make_bars` builds from these columns (same columns,
    dtypes and values; the tests compare the two) in a third of its time: ``make_bars`` converts every
    column again, which was most of the cost of reading a clean day file. ``prices`` are open, high,
    low, close and volume, already float64."""
    n = len(open_time_ns)
    columns = {
        "instrument": _constant_str(instrument, n),
        "open_time": pd.DatetimeIndex(np.asarray(open_time_ns, dtype=np.int64).view("M8[ns]")).tz_localize(
            "UTC"
        ),
        **dict(zip(PRICE_COLUMNS, prices, strict=True)),
        "source": _constant_str(source, n),
    }
    if trades is not None:
        columns[TRADES_COLUMN] = trades
    return pd.DataFrame(columns, index=pd.RangeIndex(n))


def _rows_frame(instrument: str, cols: _Columns, source: str) -> pd.DataFrame:
    trades = cols.trades if cols.trades is not None else np.full(len(cols.open_time_ns), np.nan)
    return _frame(instrument, cols.open_time_ns, list(cols[1:6]), source, trades)


def _instrument(path: Path, instrument: str | None) -> str:
    if instrument is not None:
        return instrument
    m = _DUMP_NAME.match(path.name)
    return m.group(1) if m else ""


def read_kline_rows(
    path: str | Path, *, instrument: str | None = None, source: str = "files"
) -> pd.DataFrame:
    """The rows of one Binance kline CSV as they are in the file: :data:`BAR_COLUMNS` plus ``trades``
    (float64 trade count, NaN when the file has no 9th column), in file order, neither de-duplicated nor
    checked. Most callers want :func:`read_kline_csv`.

    ``instrument`` defaults to the symbol in a dump-style file name (``BTCUSDT-1m-2024-03-01.csv``),
    else ``""``. Raises ``ValueError`` (or ``OSError``) for a file that cannot be read as klines.
    """
    path = Path(path)
    instrument = _instrument(path, instrument)
    cols = _read_columns(path)
    if cols is None:
        return empty_bars()
    return _rows_frame(instrument, cols, source)


def _clean_bars(
    instrument: str, cols: _Columns, source: str, start: pd.Timestamp | None, end: pd.Timestamp | None
) -> pd.DataFrame | None:
    """``validate_bars(rows, start, end, duplicates="last")[0]`` for a file in which that drops nothing
    (the usual daily dump), built straight from the columns; ``None`` as soon as any row in range might
    be dropped, and the caller then runs :func:`validate_bars` itself.

    The check below only ever says "nothing to drop" for rows that pass every check of
    :func:`validate_bars`: finite positive prices <= MAX_PRICE, a held open/close range, a whole minute,
    volume > 0 and a trade count that is not 0 (the test suite checks the two agree)."""
    t = cols.open_time_ns
    keep = None
    if start is not None:
        keep = t >= to_utc(start).value
    if end is not None:
        below = t < to_utc(end).value
        keep = below if keep is None else keep & below
    arrays = list(cols[1:6]) + ([cols.trades] if cols.trades is not None else [])
    if keep is not None and not keep.all():
        t = t[keep]
        arrays = [a[keep] for a in arrays]
    if len(t) == 0:
        return None
    steps = np.diff(t)
    if not (steps > 0).all():  # out of order or a minute written twice: the later row wins
        order = np.argsort(t, kind="stable")
        t = t[order]
        last = np.append(t[1:] != t[:-1], True)
        order, t = order[last], t[last]
        arrays = [a[order] for a in arrays]
    o, h, lo, c, vol = arrays[:5]
    with np.errstate(invalid="ignore"):
        ok = (
            np.isfinite(o)
            & np.isfinite(h)
            & np.isfinite(lo)
            & np.isfinite(c)
            & (np.minimum(np.minimum(o, h), np.minimum(lo, c)) > 0)
            & (h <= MAX_PRICE)
            & (lo <= h)
            & (h >= np.maximum(o, c))
            & (lo <= np.minimum(o, c))
            & (t % MINUTE_NS == 0)
            & np.isfinite(vol)
            & (vol > 0)
        )
        if cols.trades is not None:
            ok &= arrays[5] != 0
    if not ok.all():
        return None
    return _frame(instrument, t, arrays[:5], source)


def read_kline_csv_checked(
    path: str | Path,
    *,
    instrument: str | None = None,
    source: str = "files",
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """``(bars frame, {reason: rows dropped})`` for one Binance kline CSV: rows with
    ``start <= open_time < end`` (UTC; no bound when ``None``), the later of two rows for one minute
    winning, then checked by :func:`~meta_pipeline.prices.model.validate_bars` (module docstring).
    Raises ``ValueError`` (or ``OSError``) for a file that cannot be read as klines.

    The result is always ``validate_bars(read_kline_rows(path), start, end, duplicates="last")``; a
    file in which no row in range would be dropped skips the pandas round trip and is built directly."""
    path = Path(path)
    instrument = _instrument(path, instrument)
    cols = _read_columns(path)
    if cols is None:
        return empty_bars(), {}
    bars = _clean_bars(instrument, cols, source, start, end)
    if bars is not None:
        return bars, {}
    return validate_bars(_rows_frame(instrument, cols, source), start, end, duplicates="last")


def read_kline_csv(path: str | Path, *, instrument: str | None = None, source: str = "files") -> pd.DataFrame:
    """Read one Binance kline CSV into a bars frame (``BAR_COLUMNS``), sorted, later duplicate wins,
    impossible and no-trade rows dropped (:func:`read_kline_csv_checked` also says how many).

    ``instrument`` defaults to the symbol in a dump-style file name (``BTCUSDT-1m-2024-03-01.csv``),
    else ``""``. Raises ``ValueError`` (or ``OSError``) for a file that cannot be read as klines.
    """
    return read_kline_csv_checked(path, instrument=instrument, source=source)[0]


def day_file(bars_dir: str | Path, instrument: str, day: pd.Timestamp) -> Path:
    """Where the dump for ``instrument`` on UTC ``day`` lives."""
    return Path(bars_dir) / instrument / f"{instrument}-1m-{day:%Y-%m-%d}.csv"


class FileSource:
    """Bars from local daily dumps. Makes no HTTP request (``requests_made`` stays 0).

    No directory for the symbol → :class:`SymbolNotListed`. A range for which no day file exists →
    :class:`PriceSourceError` (the fetcher falls back); a multi-day range with some files missing
    returns the days that exist (the missing ones show up as gaps).
    """

    def __init__(self, bars_dir: str | Path, *, name: str = "files") -> None:
        self.name = name
        self.bars_dir = Path(bars_dir)
        self.requests_made = 0

    def __repr__(self) -> str:
        return f"FileSource({str(self.bars_dir)!r})"

    def fetch_bars(self, instrument: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Bars with ``start <= open_time < end`` (a validated bars frame); see :meth:`fetch_validated`."""
        return self.fetch_validated(instrument, start, end)[0]

    def fetch_validated(
        self, instrument: str, start: pd.Timestamp, end: pd.Timestamp
    ) -> tuple[pd.DataFrame, dict[str, int]]:
        """``(bars, {reason: rows dropped})`` for ``start <= open_time < end`` (UTC). Raises
        :class:`SymbolNotListed` or :class:`PriceSourceError` (class docstring)."""
        base_asset(instrument)
        if not _SAFE_SYMBOL.match(instrument):
            raise SymbolNotListed(f"{instrument!r} is not an instrument key")
        folder = self.bars_dir / instrument
        if not folder.is_dir():
            raise SymbolNotListed(f"no directory {folder}")
        start, end = to_utc(start), to_utc(end)
        if start >= end:
            return empty_bars(), {}
        days = pd.date_range(start.floor("D"), (end - pd.Timedelta(1, "ns")).floor("D"), freq="D")
        frames: list[pd.DataFrame] = []
        counts: list[dict[str, int]] = []
        missing: list[str] = []
        found = 0
        for day in days:
            path = day_file(self.bars_dir, instrument, day)
            if not path.is_file():
                missing.append(path.name)
                continue
            found += 1
            try:
                bars, rejected = read_kline_csv_checked(
                    path, instrument=instrument, source=self.name, start=start, end=end
                )
            except (OSError, ValueError) as exc:
                raise PriceSourceError(f"{self.name}: cannot read {path}: {exc}") from exc
            frames.append(bars)
            counts.append(rejected)
        if not found:
            raise PriceSourceError(f"{self.name}: no day file {', '.join(missing)} in {folder}")
        frames = [f for f in frames if not f.empty]
        bars = normalize_bars(pd.concat(frames, ignore_index=True), start, end) if frames else empty_bars()
        return bars, merge_counts(*counts)
