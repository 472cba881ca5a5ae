"""Binance spot 1-minute klines: ``GET {base_url}/api/v3/klines``.

Binance returns at most ``limit`` (≤ 1000) klines with ``startTime <= open_time <= endTime``, oldest
first, each ``[open_time_ms, "open", "high", "low", "close", "volume", close_time_ms, quote_volume,
trade_count, …]``.

Pagination: the next page starts at ``last open_time + 1 ms``, so the cursor never moves past a bar
that was not seen. (Starting at ``last open_time + 60 000 ms`` loses the real bar of the next minute
whenever the last bar is stamped off the minute: after a bar stamped 16:39:14.8 the next page would
start at 16:40:14.8 and never return the 16:40:00 bar. Starting *at* the last open time repeats one bar
per page.) We stop when a page is shorter than the limit, or when no whole minute is left in the range
after the last bar seen, so a complete day is still exactly two requests (1000 + 440). An *empty* page
while the range is not exhausted may be a fault: it is asked for once more, and if it is still empty
the rest of the range is accepted as a real gap.

Each page is checked on arrival by :func:`~meta_pipeline.prices.model.validate_bars`: impossible
bars, off-minute bars, two bars for one minute in the page, and bars without a trade (volume 0 or
trade count 0) are dropped and counted (docs/rules.md, *Prices*).
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
    merge_counts,
    normalize_bars,
    to_utc,
    validate_bars,
)

log = logging.getLogger(__name__)

DEFAULT_BINANCE_BASE_URL = "https://api.binance.com"
BINANCE_MAX_LIMIT = 1000
INVALID_SYMBOL = -1121


def parse_klines(payload: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate a klines page's shape; return ``(open_time_ns int64[n], values float64[n, 6])`` with
    the columns open, high, low, close, volume, trade count (NaN where a kline has no 9th field).

    Raises ``ValueError``/``TypeError`` for anything that is not a list of klines, so that the HTTP
    client retries the request instead of using a partially parsed page. Values that parse but make no
    sense (0, negative, inf, NaN prices …) are not errors here: :func:`validate_bars` drops and counts
    them.
    """
    if not isinstance(payload, list):
        raise TypeError(f"expected a JSON list of klines, got {type(payload).__name__}")
    times = np.empty(len(payload), dtype=np.int64)
    values = np.empty((len(payload), 6), dtype=np.float64)
    for i, k in enumerate(payload):
        if not isinstance(k, list) or len(k) < 6:
            raise ValueError(f"kline {i} is not a list of at least 6 fields: {str(k)[:80]}")
        if isinstance(k[0], bool) or not isinstance(k[0], int):
            raise TypeError(f"kline {i}: open time {k[0]!r} is not an integer")
        times[i] = k[0]
        values[i, :5] = [float(x) for x in k[1:6]]
        if len(k) > 8:
            if isinstance(k[8], bool) or not isinstance(k[8], int | float | str):
                raise TypeError(f"kline {i}: trade count {k[8]!r} is not a number")
            values[i, 5] = float(k[8])
        else:
            values[i, 5] = np.nan
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
        """Bars with ``start <= open_time < end`` (a validated bars frame); see :meth:`fetch_validated`."""
        return self.fetch_validated(instrument, start, end)[0]

    def fetch_validated(
        self, instrument: str, start: pd.Timestamp, end: pd.Timestamp
    ) -> tuple[pd.DataFrame, dict[str, int]]:
        """``(bars, {reason: bars dropped})`` for ``start <= open_time < end`` (UTC).

        Raises :class:`SymbolNotListed` (-1121), :class:`PriceSourceError` after the retries, or its
        subclasses :class:`SourceBanned` (418) and :class:`TimeBudgetExhausted`.
        """
        base_asset(instrument)
        start, end = to_utc(start), to_utc(end)
        start_ms = -(-start.value // 1_000_000)  # ceil: a bar opening before start is out of range
        end_ms = -(-end.value // 1_000_000)  # exclusive
        if start_ms >= end_ms:
            return empty_bars(), {}
        minute_ms = MINUTE_NS // 1_000_000
        frames: list[pd.DataFrame] = []
        counts: list[dict[str, int]] = []
        cursor = start_ms
        while cursor < end_ms:
            times, values = self._page(instrument, cursor, end_ms - 1)
            if len(times) == 0:
                log.info("binance %s: empty page at %d with range left; asking once more", instrument, cursor)
                times, values = self._page(instrument, cursor, end_ms - 1)
                if len(times) == 0:
                    break  # accepted as a real gap to the end of the range
            page = make_bars(instrument, times, *values[:, :5].T, source=self.name, trades=values[:, 5])
            good, rejected = validate_bars(page, start, end, duplicates="drop")
            frames.append(good)
            counts.append(rejected)
            if len(times) < self.limit:
                break
            last_ms = int(times.max() // 1_000_000)
            if (last_ms // minute_ms + 1) * minute_ms >= end_ms:
                break  # no whole minute left in the range after the last bar seen
            nxt = last_ms + 1  # never past a bar not seen (module docstring)
            if nxt <= cursor:  # a page that does not move forward: never loop forever
                break
            cursor = nxt
        frames = [f for f in frames if not f.empty]
        bars = normalize_bars(pd.concat(frames, ignore_index=True), start, end) if frames else empty_bars()
        return bars, merge_counts(*counts)

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
