"""Fetch one (instrument, UTC day) of 1-minute bars from an ordered list of sources, with fallback.

Rules (see DESIGN.md "Pricing and PnL rules"):

- Fallback is per symbol and day, in the given order. A source that raises (any
  :class:`PriceSourceError`) or returns no bars at all for a day that has started hands over to the
  next one. The first source that returns bars supplies the whole day: a partial day with gaps is a
  success, its gaps are reported (:attr:`DayFetch.gaps`) and never filled from another source, so a
  day's prices always come from one venue.
- A source that answered HTTP 418 (:class:`SourceBanned`) is skipped for the rest of the fetcher's
  life (and refuses calls on its own too).
- Every source said "not listed" → ``DayFetch.unpriceable``; otherwise all failed → ``DayFetch.error``.
- Today is fetched only up to ``now``: ``[00:00, floor(now, 1 min) + 1 min)`` so that the forming
  bar's open (final as soon as it exists) is included. A future day makes no request.
- Only historical bars are ever requested: no ticker, no "current price" endpoint.

``DayFetch.requests`` is read from the sources' ``requests_made`` counters before and after each call,
so one fetcher must not be shared by threads that fetch concurrently through the same sources.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from meta_pipeline.prices.binance import DEFAULT_BINANCE_BASE_URL, BinanceSource
from meta_pipeline.prices.coinbase import DEFAULT_COINBASE_BASE_URL, CoinbaseSource
from meta_pipeline.prices.files import FileSource
from meta_pipeline.prices.http import Timeout
from meta_pipeline.prices.model import (
    MINUTE,
    DayFetch,
    PriceSource,
    PriceSourceError,
    SourceBanned,
    SymbolNotListed,
    day_bounds,
    empty_bars,
    normalize_bars,
    to_utc,
)

log = logging.getLogger(__name__)

SOURCE_NAMES = ("binance", "coinbase", "files")


def _default_now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


class PriceFetcher:
    """Fetch days of bars through ``sources`` in order. ``now`` is injectable for tests."""

    def __init__(self, sources: Sequence[PriceSource], now: Callable[[], pd.Timestamp] | None = None) -> None:
        if not sources:
            raise ValueError("PriceFetcher needs at least one source")
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        self.sources = list(sources)
        self.now = now or _default_now
        self.banned: dict[str, str] = {}

    def fetch_day(self, instrument: str, day: dt.date) -> DayFetch:
        if isinstance(day, dt.datetime):
            day = day.date()
        fetched_at = to_utc(self.now())
        result = DayFetch(instrument=instrument, day=day, fetched_at=fetched_at)
        day_start, day_end = day_bounds(day)
        if fetched_at < day_start:
            result.attempts.append("future day: nothing to fetch yet")
            return result
        end = min(day_end, fetched_at.floor("min") + MINUTE)

        not_listed: list[str] = []
        failures: list[str] = []
        for source in self.sources:
            name = source.name
            if name in self.banned:
                msg = f"{name}: skipped, banned earlier in this run ({self.banned[name]})"
                result.attempts.append(msg)
                failures.append(msg)
                continue
            before = source.requests_made
            try:
                bars = source.fetch_bars(instrument, day_start, end)
            except SourceBanned as exc:
                self.banned[name] = str(exc)
                log.error(
                    "price source %s is BANNED (HTTP 418); skipping it for the rest of this run: %s",
                    name,
                    exc,
                )
                msg = f"{name}: SourceBanned: {exc}"
                result.attempts.append(msg)
                failures.append(msg)
                continue
            except SymbolNotListed as exc:
                msg = f"{name}: SymbolNotListed: {exc}"
                result.attempts.append(msg)
                not_listed.append(msg)
                continue
            except PriceSourceError as exc:
                msg = f"{name}: {type(exc).__name__}: {exc}"
                log.warning("%s %s: %s", instrument, day, msg)
                result.attempts.append(msg)
                failures.append(msg)
                continue
            except Exception as exc:  # a bug in one source must not stop the others
                log.exception("%s %s: price source %s crashed", instrument, day, name)
                msg = f"{name}: unexpected {type(exc).__name__}: {exc}"
                result.attempts.append(msg)
                failures.append(msg)
                continue
            finally:
                result.requests += source.requests_made - before
            bars = normalize_bars(bars, day_start, end) if not bars.empty else bars
            if bars.empty:
                msg = f"{name}: no bars"
                result.attempts.append(msg)
                failures.append(msg)
                continue
            result.bars = bars
            result.source = name
            result.attempts.append(f"{name}: ok, {len(bars)} bars")
            return result

        result.bars = empty_bars()
        if not_listed and not failures:
            result.unpriceable = "not listed on any source: " + "; ".join(not_listed)
        else:
            result.error = "no source supplied bars: " + "; ".join(failures + not_listed)
        return result

    def fetch_days(self, instrument: str, days: Sequence[dt.date]) -> list[DayFetch]:
        """:meth:`fetch_day` for each day, in order."""
        return [self.fetch_day(instrument, d) for d in days]


def build_sources(
    names: Sequence[str] | str,
    *,
    binance_base_url: str | None = None,
    coinbase_base_url: str | None = None,
    bars_dir: str | Path | None = None,
    timeout: Timeout = (3.05, 10.0),
    max_retries: int = 5,
    backoff_factor: float = 0.5,
    backoff_max: float = 30.0,
    max_retry_after: float = 60.0,
) -> list[PriceSource]:
    """Sources in the given order from names ``binance``, ``coinbase``, ``files``.

    ``names`` may be a comma-separated string (``"binance,coinbase"``). A base URL left ``None`` comes
    from the env (``BINANCE_BASE_URL`` / ``COINBASE_BASE_URL``), else the public endpoint. ``files``
    needs ``bars_dir``. Unknown or repeated names → ``ValueError`` naming them.
    """
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    wanted = [n.strip().lower() for n in names if n.strip()]
    if not wanted:
        raise ValueError("no price source named")
    bad = [n for n in wanted if n not in SOURCE_NAMES]
    if bad:
        raise ValueError(f"unknown price source name(s) {bad}; choose from {list(SOURCE_NAMES)}")
    dupes = sorted({n for n in wanted if wanted.count(n) > 1})
    if dupes:
        raise ValueError(f"price source name(s) repeated: {dupes}")
    http = {
        "timeout": timeout,
        "max_retries": max_retries,
        "backoff_factor": backoff_factor,
        "backoff_max": backoff_max,
        "max_retry_after": max_retry_after,
    }
    sources: list[PriceSource] = []
    for name in wanted:
        if name == "binance":
            url = binance_base_url or os.environ.get("BINANCE_BASE_URL") or DEFAULT_BINANCE_BASE_URL
            sources.append(BinanceSource(url, **http))
        elif name == "coinbase":
            url = coinbase_base_url or os.environ.get("COINBASE_BASE_URL") or DEFAULT_COINBASE_BASE_URL
            sources.append(CoinbaseSource(url, **http))
        else:
            if bars_dir is None:
                raise ValueError("price source 'files' needs bars_dir")
            sources.append(FileSource(bars_dir))
    return sources
