"""Coinbase Exchange 1-minute candles: ``GET {base_url}/products/{BASE}-USD/candles``.

``granularity=60&start=<ISO>&end=<ISO>``; Coinbase rejects a request that would cover more than 300
candles, so the range is cut into windows of 300 minutes (a day is 5 requests). Each window is asked
for as ``[first minute, last minute]`` (both ends inclusive on Coinbase's side). The response is newest
first, each candle ``[time_seconds, low, high, open, close, volume]`` (note the column order), and
minutes without trades are simply absent: they stay absent here (never invented). Output is sorted
ascending and limited to ``[start, end)``.

Each window's response is checked on arrival by :func:`~meta_pipeline.prices.model.validate_bars`:
impossible candles, candles off the minute, two candles for one minute in one response, and candles
with volume 0 are dropped and counted (docs/rules.md, *Prices*). Coinbase reports no trade count.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from meta_pipeline.prices.http import HttpSource
from meta_pipeline.prices.model import (
    MINUTE_NS,
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

DEFAULT_COINBASE_BASE_URL = "https://api.exchange.coinbase.com"
COINBASE_MAX_CANDLES = 300


def parse_candles(payload: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate a candles response; return ``(open_time_ns int64[n], ohlcv float64[n, 5])`` with the
    columns reordered to open, high, low, close, volume."""
    if not isinstance(payload, list):
        raise TypeError(f"expected a JSON list of candles, got {type(payload).__name__}")
    times = np.empty(len(payload), dtype=np.int64)
    values = np.empty((len(payload), 5), dtype=np.float64)
    for i, c in enumerate(payload):
        if not isinstance(c, list) or len(c) < 6:
            raise ValueError(f"candle {i} is not a list of 6 numbers: {str(c)[:80]}")
        if isinstance(c[0], bool) or not isinstance(c[0], int | float):
            raise TypeError(f"candle {i}: time {c[0]!r} is not a number")
        t, low, high, open_, close, volume = c[:6]
        # whole seconds as sent; a fractional second is kept (as ms) so that it shows as off-minute
        times[i] = int(t) if float(t).is_integer() else round(float(t) * 1000)
        values[i] = (float(open_), float(high), float(low), float(close), float(volume))
    return epoch_to_ns(times), values


def _iso(ns: int) -> str:
    return pd.Timestamp(ns, tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


class CoinbaseSource(HttpSource):
    """Coinbase Exchange public candles for ``BASE-USD``."""

    def __init__(
        self,
        base_url: str = DEFAULT_COINBASE_BASE_URL,
        *,
        max_candles: int = COINBASE_MAX_CANDLES,
        name: str = "coinbase",
        **http_options,
    ) -> None:
        if not 1 <= max_candles <= COINBASE_MAX_CANDLES:
            raise ValueError(f"max_candles must be in 1..{COINBASE_MAX_CANDLES}")
        super().__init__(base_url, name=name, **http_options)
        self.max_candles = max_candles

    @staticmethod
    def product_id(instrument: str) -> str:
        return f"{base_asset(instrument)}-USD"

    def fetch_bars(self, instrument: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Bars with ``start <= open_time < end`` (a validated bars frame); see :meth:`fetch_validated`."""
        return self.fetch_validated(instrument, start, end)[0]

    def fetch_validated(
        self, instrument: str, start: pd.Timestamp, end: pd.Timestamp
    ) -> tuple[pd.DataFrame, dict[str, int]]:
        """``(bars, {reason: bars dropped})`` for ``start <= open_time < end`` (UTC).

        Raises :class:`SymbolNotListed` (Coinbase's JSON 404), :class:`PriceSourceError` after the
        retries, or its subclasses :class:`SourceBanned` (418) and :class:`TimeBudgetExhausted`.
        """
        product = self.product_id(instrument)
        start, end = to_utc(start), to_utc(end)
        first_min = -(-start.value // MINUTE_NS)  # minute indices since the epoch, [first, stop)
        stop_min = -(-end.value // MINUTE_NS)
        url = f"{self.base_url}/products/{product}/candles"
        frames: list[pd.DataFrame] = []
        counts: list[dict[str, int]] = []
        for a in range(first_min, stop_min, self.max_candles):
            b = min(a + self.max_candles, stop_min)
            params = {"granularity": 60, "start": _iso(a * MINUTE_NS), "end": _iso((b - 1) * MINUTE_NS)}
            times, values = self.http.get_json(
                url, params, validate=parse_candles, classify_error=self._classify
            )
            if len(times) == 0:
                continue
            order = np.argsort(times, kind="stable")  # newest first on the wire → ascending
            window = make_bars(instrument, times[order], *values[order].T, source=self.name)
            good, rejected = validate_bars(window, start, end, duplicates="drop")
            frames.append(good)
            counts.append(rejected)
        frames = [f for f in frames if not f.empty]
        bars = normalize_bars(pd.concat(frames, ignore_index=True), start, end) if frames else empty_bars()
        return bars, merge_counts(*counts)

    @staticmethod
    def _classify(status: int, body: Any) -> PriceSourceError | None:
        # Only Coinbase's own JSON 404 means "no such product"; a bare 404 (wrong base URL, proxy)
        # stays a plain source error so that the symbol is not wrongly declared unpriceable.
        message = body.get("message") if isinstance(body, dict) else None
        if status == 404 and isinstance(message, str) and message.replace(" ", "").lower() == "notfound":
            return SymbolNotListed(f"{message} (HTTP 404)")
        return None
