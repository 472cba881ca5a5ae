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

import numpy as np
import pandas as pd

from meta_pipeline.prices.model import (
    PriceSourceError,
    SymbolNotListed,
    base_asset,
    empty_bars,
    epoch_to_ns,
    make_bars,
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
    if instrument is None:
        m = _DUMP_NAME.match(path.name)
        instrument = m.group(1) if m else ""
    if path.stat().st_size == 0:
        return empty_bars()
    header, n_fields = _layout(path)
    with_trades = n_fields > TRADE_COUNT_FIELD
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
        return empty_bars()
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a Binance kline CSV ({exc})") from exc
    return make_bars(
        instrument,
        epoch_to_ns(raw[0].to_numpy()),
        *(raw[i].to_numpy() for i in range(1, 6)),
        source=source,
        trades=raw[TRADE_COUNT_FIELD].to_numpy() if with_trades else np.full(len(raw), np.nan),
    )


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
    Raises ``ValueError`` (or ``OSError``) for a file that cannot be read as klines."""
    rows = read_kline_rows(path, instrument=instrument, source=source)
    return validate_bars(rows, start, end, duplicates="last")


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
