"""Synthetic 1-minute bars for the demo, in the Binance daily-dump layout.

BTCUSDT, ETHUSDT, SOLUSDT and DOGEUSDT each follow a geometric Brownian motion per minute
(annualised volatility 55–90 %) with an intraday volatility profile (quiet around 03:00 UTC, busiest
around 15:00 UTC) and 6-hour volatility regimes. Each bar opens at the previous bar's close.

SOLUSDT (:data:`GAP_SYMBOL`) deliberately misses :data:`GAP_MINUTES` minutes from 14:00 UTC on day
:data:`GAP_DAY_INDEX` (counted from the first signal day). That gap is longer than the pricing
rule's limit (``MAX_BAR_GAP`` in :mod:`meta_pipeline.reconcile`), so a signal whose entry or 24 h
exit falls in it has no price.

Files are written one per symbol and UTC day, ``<SYMBOL>-1m-<YYYY-MM-DD>.csv``, without a header and
with the 12 Binance columns (open time, open, high, low, close, volume, close time, quote volume,
trades, taker buy base volume, taker buy quote volume, ignore).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from meta_pipeline.reconcile import MAX_BAR_GAP

MINUTE_MS = 60_000
DAY_MS = 86_400_000
MINUTES_PER_YEAR = 525_600
MAX_BAR_GAP_MS = int(MAX_BAR_GAP / pd.Timedelta(milliseconds=1))
"""A bar opening more than this after t gives no price at t (docs/rules.md, *Pricing and PnL*)."""

# symbol: start price, annualised vol, price decimals, volume decimals, base volume per minute,
# trades per minute
SYMBOLS: dict[str, tuple[float, float, int, int, float, float]] = {
    "BTCUSDT": (60_000.0, 0.55, 2, 5, 12.0, 1_100.0),
    "ETHUSDT": (2_500.0, 0.70, 2, 4, 250.0, 900.0),
    "SOLUSDT": (150.0, 0.85, 2, 3, 4_000.0, 700.0),
    "DOGEUSDT": (0.15, 0.90, 5, 0, 1_500_000.0, 400.0),
}
# the spellings the app writes for each base (all normalise to BASEUSDT)
SPELLINGS: dict[str, tuple[str, ...]] = {
    "BTC": ("BTC", "BTCUSDT", "BTC/USDT", "btc-usdt", "BTC-USD", "btc/usdc", "BTCUSDT"),
    "ETH": ("ETH", "ETHUSDT", "ETH/USDT", "eth-usdt", "ETH-USD", "ETH/USDC", "ETHUSDT"),
    "SOL": ("SOL", "SOLUSDT", "SOL/USDT", "sol-usdt", "SOL-USD", "sol/usdc", "SOLUSDT"),
    "DOGE": ("DOGE", "DOGEUSDT", "DOGE/USDT", "doge-usdt", "DOGE-USD", "doge/usdc"),
}

GAP_SYMBOL = "SOLUSDT"
GAP_DAY_INDEX = 12  # day offset from the first signal day
GAP_MINUTE = 14 * 60  # 14:00 UTC
GAP_MINUTES = 8

REGIMES = ("trend", "range", "high_vol")  # the regime labels, indexed by :func:`regimes`


@dataclass
class Bars:
    """One symbol's bars over the whole period."""

    symbol: str
    open_time: np.ndarray  # int64 ms, gap removed
    columns: list[np.ndarray]  # the first 11 Binance columns, gap removed ("ignore" is written as 0)
    decimals: tuple[int, int]  # price, volume
    # for regime labels: the continuous minute grid
    t0: int
    log_ret: np.ndarray

    @property
    def open(self) -> np.ndarray:
        return self.columns[1]


def gap_start_ms(start_ms: int) -> int:
    """Open time of the first missing :data:`GAP_SYMBOL` bar, for a period starting at ``start_ms``."""
    return start_ms + GAP_DAY_INDEX * DAY_MS + GAP_MINUTE * MINUTE_MS


def make_bars(symbol: str, rng: np.random.Generator, t0: int, n_days: int) -> Bars:
    """``n_days`` days of 1-minute bars from ``t0`` (ms), drawn from ``rng``."""
    s0, vol, pdec, vdec, base_vol, base_trades = SYMBOLS[symbol]
    n = n_days * 1440
    minute_of_day = np.arange(n) % 1440
    # intraday profile: quiet around 03:00 UTC, busiest around 15:00 UTC (mean 1)
    profile = 1.0 + 0.35 * np.sin(2 * np.pi * (minute_of_day - 9 * 60) / 1440)
    # 6-hour vol regimes (vol clustering), mean-one lognormal
    blocks = np.exp(0.45 * rng.standard_normal(n_days * 4) - 0.5 * 0.45**2)
    sigma = vol / np.sqrt(MINUTES_PER_YEAR) * profile * np.repeat(blocks, 360)
    z = rng.standard_normal(n)
    log_ret = -0.5 * sigma**2 + sigma * z
    close_raw = s0 * np.exp(np.cumsum(log_ret))
    close = np.round(close_raw, pdec)
    open_ = np.concatenate(([round(s0, pdec)], close[:-1]))
    hi_body, lo_body = np.maximum(open_, close), np.minimum(open_, close)
    wick = sigma * close_raw
    high = np.maximum(np.round(hi_body + np.abs(rng.normal(0.0, 0.6, n)) * wick, pdec), hi_body)
    low = np.minimum(np.round(lo_body - np.abs(rng.normal(0.0, 0.6, n)) * wick, pdec), lo_body)
    activity = profile * (0.4 + np.abs(z)) * np.exp(0.4 * rng.standard_normal(n))
    volume = np.round(base_vol * activity, vdec)
    volume = np.maximum(volume, 10.0**-vdec)
    typical = (open_ + high + low + close) / 4
    quote_volume = np.round(volume * typical, 8)
    trades = np.maximum(1, np.round(base_trades * activity)).astype(np.int64)
    taker_base = np.round(volume * rng.uniform(0.35, 0.65, n), vdec)
    taker_quote = np.round(taker_base * typical, 8)
    open_time = t0 + np.arange(n, dtype=np.int64) * MINUTE_MS
    cols = [
        open_time,
        open_,
        high,
        low,
        close,
        volume,
        open_time + (MINUTE_MS - 1),
        quote_volume,
        trades,
        taker_base,
        taker_quote,
    ]
    keep = np.ones(n, dtype=bool)
    if symbol == GAP_SYMBOL:
        first = GAP_DAY_INDEX * 1440 + GAP_MINUTE
        keep[first : first + GAP_MINUTES] = False
    cols = [c[keep] for c in cols]
    return Bars(symbol, cols[0], cols, (pdec, vdec), t0, log_ret)


def price_at(open_time: np.ndarray, opens: np.ndarray, t_ms: np.ndarray) -> np.ndarray:
    """Price at each t (docs/rules.md, *Pricing and PnL*): the open of the first bar whose open time
    is ≥ t; NaN when that bar opens more than :data:`MAX_BAR_GAP_MS` after t, or there is none."""
    t_ms = np.asarray(t_ms, dtype=np.int64)
    idx = np.searchsorted(open_time, t_ms, side="left")
    ok = idx < len(open_time)
    safe = np.minimum(idx, len(open_time) - 1)
    ok &= (open_time[safe] - t_ms) <= MAX_BAR_GAP_MS
    return np.where(ok, opens[safe], np.nan)


def regimes(bars: Bars, t_ms: np.ndarray) -> np.ndarray:
    """Regime index into :data:`REGIMES` at each t, from the bars that closed before t only.

    ``high_vol`` when the trailing 1 h volatility is above 1.3 × the symbol's median 1 h volatility;
    else ``trend`` when the trailing 4 h move is larger than one 4 h sigma; else ``range``.
    """
    lr = bars.log_ret
    csum = np.concatenate(([0.0], np.cumsum(lr)))
    csq = np.concatenate(([0.0], np.cumsum(lr * lr)))
    j = (t_ms - bars.t0) // MINUTE_MS - 1  # last bar closed at t
    j = np.clip(j, 240, len(lr) - 1)
    s60 = csum[j + 1] - csum[j - 59]
    var60 = (csq[j + 1] - csq[j - 59]) / 60 - (s60 / 60) ** 2
    vol60 = np.sqrt(np.maximum(var60, 0.0))
    all_var = np.sqrt(np.maximum((csq[61:] - csq[1:-60]) / 60 - ((csum[61:] - csum[1:-60]) / 60) ** 2, 0.0))
    median_vol = float(np.median(all_var))
    move4h = csum[j + 1] - csum[j - 239]
    regime = np.ones(len(j), dtype=np.int64)
    regime[np.abs(move4h) > median_vol * np.sqrt(240)] = 0
    regime[vol60 > 1.3 * median_vol] = 2
    return regime


def _format_rows(columns: list[np.ndarray], decimals: tuple[int, int]) -> bytes:
    pdec, vdec = decimals
    fmt = f"%d,%.{pdec}f,%.{pdec}f,%.{pdec}f,%.{pdec}f,%.{vdec}f,%d,%.8f,%d,%.{vdec}f,%.8f,0\n"
    rows = zip(*(c.tolist() for c in columns), strict=True)
    return "".join([fmt % row for row in rows]).encode("ascii")


def daily_bar_files(bars: Bars, start: date, start_ms: int, n_days: int) -> Iterator[tuple[str, bytes]]:
    """``(file name, CSV bytes)`` for each UTC day from ``start`` (at ``start_ms``), Binance layout."""
    day_of = (bars.open_time - start_ms) // DAY_MS
    bounds = np.searchsorted(day_of, np.arange(n_days + 1))
    for d in range(n_days):
        name = f"{bars.symbol}-1m-{(start + timedelta(days=d)).isoformat()}.csv"
        lo, hi = int(bounds[d]), int(bounds[d + 1])
        yield name, _format_rows([c[lo:hi] for c in bars.columns], bars.decimals)
