"""Local Binance daily kline dumps: ``<bars_dir>/<SYMBOL>/<SYMBOL>-1m-<YYYY-MM-DD>.csv``.

The files are read as Binance writes them and as collectors really leave them:

- a header row is optional (detected: the first field of the first line is not a number);
- open times in milliseconds or microseconds (Binance's newer spot dumps use µs), detected per row
  by magnitude (:func:`~meta_pipeline.prices.model.epoch_to_ns`);
- only the first six columns (open_time, open, high, low, close, volume) are used, extras ignored;
- a minute written twice is de-duplicated with the LATER row winning (a collector writes the forming
  candle first and the final one later).
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
    normalize_bars,
    to_utc,
)

_NUMBER = re.compile(r"^\s*[-+]?\d+(\.\d*)?([eE][-+]?\d+)?\s*$")
_DUMP_NAME = re.compile(r"^([A-Z0-9]+)-1m-\d{4}-\d{2}-\d{2}")
_SAFE_SYMBOL = re.compile(r"^[A-Z0-9]{2,30}$")


def _has_header(path: Path) -> bool:
    with path.open("r", encoding="utf-8-sig") as fh:
        first = fh.readline()
    if not first.strip():
        return False
    return not _NUMBER.match(first.split(",", 1)[0])


def read_kline_csv(path: str | Path, *, instrument: str | None = None, source: str = "files") -> pd.DataFrame:
    """Read one Binance kline CSV into a bars frame (``BAR_COLUMNS``), sorted, later duplicate wins.

    ``instrument`` defaults to the symbol in a dump-style file name (``BTCUSDT-1m-2024-03-01.csv``),
    else ``""``. Raises ``ValueError`` (or ``OSError``) for a file that cannot be read as klines.
    """
    path = Path(path)
    if instrument is None:
        m = _DUMP_NAME.match(path.name)
        instrument = m.group(1) if m else ""
    if path.stat().st_size == 0:
        return empty_bars()
    header = _has_header(path)
    try:
        raw = pd.read_csv(
            path,
            header=None,
            skiprows=1 if header else 0,
            usecols=range(6),
            dtype={0: np.int64, 1: np.float64, 2: np.float64, 3: np.float64, 4: np.float64, 5: np.float64},
            encoding="utf-8-sig",
        )
    except pd.errors.EmptyDataError:
        return empty_bars()
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a Binance kline CSV ({exc})") from exc
    df = make_bars(
        instrument,
        epoch_to_ns(raw[0].to_numpy()),
        *(raw[i].to_numpy() for i in range(1, 6)),
        source=source,
    )
    return normalize_bars(df)


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
        base_asset(instrument)
        if not _SAFE_SYMBOL.match(instrument):
            raise SymbolNotListed(f"{instrument!r} is not an instrument key")
        folder = self.bars_dir / instrument
        if not folder.is_dir():
            raise SymbolNotListed(f"no directory {folder}")
        start, end = to_utc(start), to_utc(end)
        if start >= end:
            return empty_bars()
        days = pd.date_range(start.floor("D"), (end - pd.Timedelta(1, "ns")).floor("D"), freq="D")
        frames: list[pd.DataFrame] = []
        missing: list[str] = []
        for day in days:
            path = day_file(self.bars_dir, instrument, day)
            if not path.is_file():
                missing.append(path.name)
                continue
            try:
                frames.append(read_kline_csv(path, instrument=instrument, source=self.name))
            except (OSError, ValueError) as exc:
                raise PriceSourceError(f"{self.name}: cannot read {path}: {exc}") from exc
        if not frames:
            raise PriceSourceError(f"{self.name}: no day file {', '.join(missing)} in {folder}")
        frames = [f for f in frames if not f.empty]
        if not frames:
            return empty_bars()
        return normalize_bars(pd.concat(frames, ignore_index=True), start, end)
