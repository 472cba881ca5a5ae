"""Binance spot 1-minute klines: ``GET {base_url}/api/v3/klines``.

Binance returns at most ``limit`` (≤ 1000) klines with ``startTime <= open_time <= endTime``, oldest
first, each ``[open_time_ms, "open", "high", "low", "close", "volume", close_time_ms, …]``.

Pagination: the next page starts at ``last open_time + 60 000 ms`` (starting *at* the last open time
repeats one bar per page, the bug in the old collector). We stop when a page is shorter than the limit
or the range is exhausted, so a complete day is exactly two requests (1000 + 440). An *empty* page
while the range is not exhausted may be a fault: it is asked for once more, and if it is still empty
the rest of the range is accepted as a real gap.
"""

from __future__ import annotations

import logging
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
    normalize_bars,
    to_utc,
)

log = logging.getLogger(__name__)

DEFAULT_BINANCE_BASE_URL = "https://api.binance.com"
BINANCE_MAX_LIMIT = 1000
INVALID_SYMBOL = -1121


def parse_klines(payload: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate a klines page; return ``(open_time_ns int64[n], ohlcv float64[n, 5])``.

    Raises ``ValueError``/``TypeError`` for anything that is not a list of klines, so that the HTTP
    client retries the request instead of using a partially parsed page.
    """
    if not isinstance(payload, list):
        raise TypeError(f"expected a JSON list of klines, got {type(payload).__name__}")
    times = np.empty(len(payload), dtype=np.int64)
    values = np.empty((len(payload), 5), dtype=np.float64)
    for i, k in enumerate(payload):
        if not isinstance(k, list) or len(k) < 6:
            raise ValueError(f"kline {i} is not a list of at least 6 fields: {str(k)[:80]}")
        if isinstance(k[0], bool) or not isinstance(k[0], int):
            raise TypeError(f"kline {i}: open time {k[0]!r} is not an integer")
        times[i] = k[0]
        values[i] = [float(x) for x in k[1:6]]
    return epoch_to_ns(times), values


class BinanceSource(HttpSource):
    """Binance spot klines (``interval=1m``). See the module docstring for the pagination rules."""

    def __init__(
        self,
        base_url: str = DEFAULT_BINANCE_BASE_URL,
        *,
        limit: int = BINANCE_MAX_LIMIT,
        name: str = "binance",
        **http_options,
    ) -> None:
        if not 1 <= limit <= BINANCE_MAX_LIMIT:
            raise ValueError(f"limit must be in 1..{BINANCE_MAX_LIMIT}")
        super().__init__(base_url, name=name, **http_options)
        self.limit = limit

    def fetch_bars(self, instrument: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        base_asset(instrument)
        start, end = to_utc(start), to_utc(end)
        start_ms = -(-start.value // 1_000_000)  # ceil: a bar opening before start is out of range
        end_ms = -(-end.value // 1_000_000)  # exclusive
        if start_ms >= end_ms:
            return empty_bars()
        pages: list[tuple[np.ndarray, np.ndarray]] = []
        cursor = start_ms
        while cursor < end_ms:
            times, values = self._page(instrument, cursor, end_ms - 1)
            if len(times) == 0:
                log.info("binance %s: empty page at %d with range left; asking once more", instrument, cursor)
                times, values = self._page(instrument, cursor, end_ms - 1)
                if len(times) == 0:
                    break  # accepted as a real gap to the end of the range
            pages.append((times, values))
            if len(times) < self.limit:
                break
            nxt = int(times[-1] // 1_000_000) + MINUTE_NS // 1_000_000
            if nxt <= cursor:  # a page that does not move forward: never loop forever
                break
            cursor = nxt
        if not pages:
            return empty_bars()
        times = np.concatenate([t for t, _ in pages])
        values = np.concatenate([v for _, v in pages])
        df = make_bars(instrument, times, *values.T, source=self.name)
        return normalize_bars(df, start, end)

    def _page(self, symbol: str, start_ms: int, end_ms_inclusive: int) -> tuple[np.ndarray, np.ndarray]:
        params = {
            "symbol": symbol,
            "interval": "1m",
            "startTime": start_ms,
            "endTime": end_ms_inclusive,
            "limit": self.limit,
        }
        return self.http.get_json(
            f"{self.base_url}/api/v3/klines", params, validate=parse_klines, classify_error=self._classify
        )

    def _classify(self, status: int, body: Any) -> PriceSourceError | None:
        if isinstance(body, dict) and body.get("code") == INVALID_SYMBOL:
            return SymbolNotListed(f"{body.get('msg', 'Invalid symbol.')} ({INVALID_SYMBOL})")
        return None
