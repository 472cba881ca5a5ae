"""Real Binance 1-minute klines from ``meta_pipeline_tests/klines/``, read with the ``csv`` module.

Kept deliberately independent of ``meta_pipeline``: tests use these plain-Python rows to compute the
numbers they expect, and only convert them to a pandas bars frame to feed the code under test.

Layout (see ``klines/README.md``, which also gives their provenance): ``<SYMBOL>/<SYMBOL>-1m-<YYYY-MM-DD>.csv``, no header, Binance kline
column order, ``open_time`` in milliseconds, all times UTC.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path

import pandas as pd

MARKET_DATA = Path(__file__).resolve().parent / "klines"
MINUTE_MS = 60_000


@dataclass(frozen=True)
class Kline:
    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float

    @property
    def open_time(self) -> datetime:
        return ms_to_datetime(self.open_time_ms)


def ms_to_datetime(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def datetime_to_ms(moment: datetime) -> int:
    """Exact integer milliseconds of a whole-millisecond aware datetime."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if us % 1_000:
        raise ValueError(f"{moment} is not a whole millisecond")
    return us // 1_000


@cache
def _read_day(symbol: str, day: date) -> tuple[Kline, ...]:
    path = MARKET_DATA / symbol / f"{symbol}-1m-{day.isoformat()}.csv"
    rows = []
    with path.open(newline="") as fh:
        for rec in csv.reader(fh):
            if not rec:
                continue
            rows.append(Kline(int(rec[0]), *(float(x) for x in rec[1:6])))
    return tuple(rows)


def load_klines(symbol: str, first_day: date, last_day: date) -> list[Kline]:
    """All klines of ``symbol`` for the UTC days ``first_day``..``last_day`` (inclusive), in file order."""
    out: list[Kline] = []
    day = first_day
    while day <= last_day:
        out.extend(_read_day(symbol, day))
        day += timedelta(days=1)
    return out


def btc_2024() -> list[Kline]:
    return load_klines("BTCUSDT", date(2024, 3, 1), date(2024, 3, 22))


def btc_2025() -> list[Kline]:
    return load_klines("BTCUSDT", date(2025, 10, 29), date(2025, 11, 1))


def eth_2025() -> list[Kline]:
    return load_klines("ETHUSDT", date(2025, 10, 29), date(2025, 11, 1))


def open_by_ms(klines: list[Kline]) -> dict[int, float]:
    """open_time (ms) → open; a minute written twice keeps the later row."""
    return {k.open_time_ms: k.open for k in klines}


def bars_frame(instrument: str, klines: list[Kline]) -> pd.DataFrame:
    """A bars frame as the reconciliation kernel takes it (plus high/low/close/volume as decoys)."""
    return pd.DataFrame(
        {
            "instrument": [instrument] * len(klines),
            "open_time": pd.to_datetime([k.open_time_ms for k in klines], unit="ms", utc=True),
            "open": [k.open for k in klines],
            "high": [k.high for k in klines],
            "low": [k.low for k in klines],
            "close": [k.close for k in klines],
            "volume": [k.volume for k in klines],
        }
    )
