"""Fetch one (instrument, UTC day) of 1-minute bars from an ordered list of sources, with fallback.

Rules (docs/rules.md, *Prices*):

- Fallback is per symbol and day, in the given order. A source that raises (any
  :class:`PriceSourceError`) or returns no bars at all for a day that has started hands over to the
  next one. The first source that returns bars supplies the whole day: a partial day with gaps is a
  success, its gaps are reported (:attr:`DayFetch.gaps`) and never filled from another source, so a
  day's prices always come from one venue.
- Every bar is checked on arrival (:func:`~meta_pipeline.prices.model.validate_bars`, by the source
  and again here for any source): impossible bars and bars holding no trade are dropped, counted in
  :attr:`DayFetch.rejected_bars` / :attr:`DayFetch.no_trade_bars`, and their minutes are gaps.
- A source that answered HTTP 418 (:class:`SourceBanned`) is skipped for the rest of the fetcher's
  life (and refuses calls on its own too).
- Circuit breaker: a source that failed ``max_consecutive_failures`` symbol-days in a row (raised a
  :class:`PriceSourceError` other than :class:`SymbolNotListed`, or crashed) is skipped for the rest
  of the fetcher's life, so a 429 storm or a server that sleeps past the timeout costs a few
  symbol-days' retries, not every symbol-day's. A day it supplies bars for resets the count; "not
  listed" and "no bars" are answers, neither failure nor success.
- Time budget: the fetcher's life has ``time_budget_seconds`` (measured on ``clock``, from the
  fetcher's creation). HTTP sources are given the deadline, so no request starts after it and no
  timeout or retry sleep reaches past it; once spent, :meth:`PriceFetcher.fetch_day` tries no source
  and returns ``error = "run time budget of N s exhausted"``. The symbol-days not fetched are fetched
  by a later run.
- Every source said "not listed" → ``DayFetch.unpriceable``; otherwise all failed → ``DayFetch.error``.
- Today is fetched only up to ``now``: ``[00:00, floor(now, 1 min) + 1 min)`` so that the forming
  bar's open (final as soon as it exists) is included. A future day makes no request.
- Only historical bars are ever requested: no ticker, no "current price" endpoint.

Configuration is not read here: base URLs and source names are passed in (the deployment reads them
once, in ``meta_pipeline.settings``). :data:`SOURCE_NAMES`, ``DEFAULT_BINANCE_BASE_URL`` and
``DEFAULT_COINBASE_BASE_URL`` are the single definitions of the known sources and public endpoints.

``DayFetch.requests`` is read from the sources' ``requests_made`` counters before and after each call,
so one fetcher must not be shared by threads that fetch concurrently through the same sources.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from meta_pipeline.prices.binance import DEFAULT_BINANCE_BASE_URL, BinanceSource
from meta_pipeline.prices.coinbase import DEFAULT_COINBASE_BASE_URL, CoinbaseSource
from meta_pipeline.prices.files import FileSource
from meta_pipeline.prices.http import Timeout
from meta_pipeline.prices.model import (
    MINUTE,
    NO_TRADE,
    DayFetch,
    PriceSource,
    PriceSourceError,
    SourceBanned,
    SymbolNotListed,
    TimeBudgetExhausted,
    day_bounds,
    describe_counts,
    empty_bars,
    merge_counts,
    to_utc,
    validate_bars,
)

log = logging.getLogger(__name__)

SOURCE_NAMES = ("binance", "coinbase", "files")
DEFAULT_MAX_CONSECUTIVE_FAILURES = 3
DEFAULT_TIME_BUDGET_SECONDS = 600.0


def _default_now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def parse_source_names(names: str | Sequence[str]) -> tuple[str, ...]:
    """Price source names in fallback order, lower-cased and stripped.

    ``names`` is a comma-separated string (``"Binance, coinbase"``) or a sequence of names; blank
    entries are ignored. Raises ``ValueError`` naming the bad names and the allowed ones
    (:data:`SOURCE_NAMES`) when a name is unknown or not a string, a name is repeated, or no name is
    left.
    """
    parts = names.split(",") if isinstance(names, str) else list(names)
    allowed = ", ".join(SOURCE_NAMES)
    not_text = [p for p in parts if not isinstance(p, str)]
    if not_text:
        raise ValueError(f"price source names must be strings, got {not_text!r}; choose from {allowed}")
    wanted = [p.strip().lower() for p in parts if p.strip()]
    if not wanted:
        raise ValueError(f"no price source named in {names!r}; choose one or more of {allowed}")
    unknown = [n for n in wanted if n not in SOURCE_NAMES]
    if unknown:
        raise ValueError(f"unknown price source name(s) {unknown} in {names!r}; choose from {allowed}")
    repeated = sorted({n for n in wanted if wanted.count(n) > 1})
    if repeated:
        raise ValueError(f"price source name(s) repeated in {names!r}: {repeated}; name each source once")
    return tuple(wanted)


def fetch_validated(
    source: PriceSource, instrument: str, start: pd.Timestamp, end: pd.Timestamp
) -> tuple[pd.DataFrame, dict[str, int]]:
    """``source``'s bars for ``[start, end)`` checked by :func:`validate_bars`, and the rows dropped by
    reason. Uses ``source.fetch_validated`` where the source has it (its own counts per response),
    else ``fetch_bars``; either way the result is checked again here, so no source's impossible bars
    get through. Raises what the source raises."""
    own = getattr(source, "fetch_validated", None)
    if callable(own):
        bars, counts = own(instrument, start, end)
    else:
        bars, counts = source.fetch_bars(instrument, start, end), {}
    bars, more = validate_bars(bars, start, end, duplicates="drop")
    return bars, merge_counts(counts, more)


class PriceFetcher:
    """Fetch days of bars through ``sources`` in order (module docstring for the rules).

    ``now`` (UTC wall clock) and ``clock`` (monotonic seconds, for the time budget) are injectable
    for tests. ``max_consecutive_failures`` (default 3; ``None`` = never) opens a source's circuit;
    ``time_budget_seconds`` (default 600 s; ``None`` = unlimited) bounds the fetcher's life. Raises
    ``ValueError`` for no sources, repeated source names, or a limit that is not positive.
    """

    def __init__(
        self,
        sources: Sequence[PriceSource],
        now: Callable[[], pd.Timestamp] | None = None,
        *,
        max_consecutive_failures: int | None = DEFAULT_MAX_CONSECUTIVE_FAILURES,
        time_budget_seconds: float | None = DEFAULT_TIME_BUDGET_SECONDS,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not sources:
            raise ValueError("PriceFetcher needs at least one source")
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        if max_consecutive_failures is not None and max_consecutive_failures < 1:
            raise ValueError(f"max_consecutive_failures must be >= 1 or None, got {max_consecutive_failures}")
        if time_budget_seconds is not None and not time_budget_seconds > 0:
            raise ValueError(f"time_budget_seconds must be > 0 or None, got {time_budget_seconds}")
        self.sources = list(sources)
        self.now = now or _default_now
        self.clock = clock or time.monotonic
        self.max_consecutive_failures = max_consecutive_failures
        self.time_budget_seconds = time_budget_seconds
        self.started = self.clock()
        self.deadline: float | None = (
            None if time_budget_seconds is None else self.started + float(time_budget_seconds)
        )
        self.banned: dict[str, str] = {}
        self.circuit_open: dict[str, str] = {}
        self.consecutive_failures: dict[str, int] = dict.fromkeys(names, 0)

    # -- limits ------------------------------------------------------------------------------------
    def time_left(self) -> float | None:
        """Seconds left of the time budget (<= 0 once spent), ``None`` without a budget."""
        return None if self.deadline is None else self.deadline - self.clock()

    @property
    def budget_exhausted(self) -> bool:
        left = self.time_left()
        return left is not None and left <= 0

    def _budget_message(self) -> str:
        return f"run time budget of {self.time_budget_seconds:g} s exhausted"

    def _failed(self, name: str, why: str) -> None:
        n = self.consecutive_failures.get(name, 0) + 1
        self.consecutive_failures[name] = n
        limit = self.max_consecutive_failures
        if limit is not None and n >= limit and name not in self.circuit_open:
            self.circuit_open[name] = f"circuit open after {n} consecutive failed symbol-days (last: {why})"
            log.error("price source %s skipped for the rest of this run: %s", name, self.circuit_open[name])

    # -- fetching ----------------------------------------------------------------------------------
    def fetch_day(self, instrument: str, day: dt.date) -> DayFetch:
        """One (instrument, UTC day): see the module docstring. Never raises for a source's fault."""
        if isinstance(day, dt.datetime):
            day = day.date()
        fetched_at = to_utc(self.now())
        result = DayFetch(instrument=instrument, day=day, fetched_at=fetched_at)
        day_start, day_end = day_bounds(day)
        if fetched_at < day_start:
            result.attempts.append("future day: nothing to fetch yet")
            return result
        end = min(day_end, fetched_at.floor("min") + MINUTE)
        if self.budget_exhausted:
            result.error = self._budget_message()
            result.attempts.append(f"{self._budget_message()}: no source tried")
            return result

        not_listed: list[str] = []
        failures: list[str] = []
        out_of_time = False
        for source in self.sources:
            name = source.name
            if name in self.banned:
                msg = f"{name}: skipped, banned earlier in this run ({self.banned[name]})"
                result.attempts.append(msg)
                failures.append(msg)
                continue
            if name in self.circuit_open:
                msg = f"{name}: skipped, {self.circuit_open[name]}"
                result.attempts.append(msg)
                failures.append(msg)
                continue
            if self.budget_exhausted:
                out_of_time = True
                break
            set_deadline = getattr(source, "set_deadline", None)
            if callable(set_deadline):
                set_deadline(self.deadline, self.clock)
            before = source.requests_made
            try:
                bars, rejected = fetch_validated(source, instrument, day_start, end)
            except TimeBudgetExhausted as exc:
                msg = f"{name}: TimeBudgetExhausted: {exc}"
                result.attempts.append(msg)
                failures.append(msg)
                out_of_time = True
                break
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
                why = f"{type(exc).__name__}: {exc}"
                msg = f"{name}: {why}"
                log.warning("%s %s: %s", instrument, day, msg)
                result.attempts.append(msg)
                failures.append(msg)
                self._failed(name, why)
                continue
            except Exception as exc:  # a bug in one source must not stop the others
                log.exception("%s %s: price source %s crashed", instrument, day, name)
                why = f"unexpected {type(exc).__name__}: {exc}"
                msg = f"{name}: {why}"
                result.attempts.append(msg)
                failures.append(msg)
                self._failed(name, why)
                continue
            finally:
                result.requests += source.requests_made - before
            dropped = f" (dropped: {describe_counts(rejected)})" if rejected else ""
            if bars.empty:
                msg = f"{name}: no bars{dropped}"
                result.attempts.append(msg)
                failures.append(msg)
                continue
            self.consecutive_failures[name] = 0
            result.bars = bars
            result.source = name
            result.no_trade_bars = rejected.get(NO_TRADE, 0)
            result.rejected_bars = {k: n for k, n in rejected.items() if k != NO_TRADE}
            result.attempts.append(f"{name}: ok, {len(bars)} bars{dropped}")
            return result

        result.bars = empty_bars()
        if out_of_time:
            result.attempts.append(f"{self._budget_message()}: no further source tried")
            result.error = f"{self._budget_message()}: " + "; ".join(failures + not_listed)
        elif not_listed and not failures:
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
    binance_base_url: str | None = DEFAULT_BINANCE_BASE_URL,
    coinbase_base_url: str | None = DEFAULT_COINBASE_BASE_URL,
    bars_dir: str | Path | None = None,
    timeout: Timeout = (3.05, 10.0),
    max_retries: int = 5,
    backoff_factor: float = 0.5,
    backoff_max: float = 30.0,
    max_retry_after: float = 60.0,
) -> list[PriceSource]:
    """Sources in the given order from names ``binance``, ``coinbase``, ``files``
    (:func:`parse_source_names`: a comma-separated string or a sequence).

    Base URLs are taken as given (``None`` → the public endpoint); the environment is not read. ``files``
    needs ``bars_dir``. Unknown, repeated or no names, or ``files`` without ``bars_dir`` → ``ValueError``.
    """
    wanted = parse_source_names(names)
    http = {
        "timeout": timeout,
        "max_retries": max_retries,
        "backoff_factor": backoff_factor,
        "backoff_max": backoff_max,
        "max_retry_after": max_retry_after,
    }
    if "files" in wanted and bars_dir is None:
        raise ValueError("price source 'files' needs bars_dir")
    sources: list[PriceSource] = []
    for name in wanted:
        if name == "binance":
            sources.append(BinanceSource(binance_base_url or DEFAULT_BINANCE_BASE_URL, **http))
        elif name == "coinbase":
            sources.append(CoinbaseSource(coinbase_base_url or DEFAULT_COINBASE_BASE_URL, **http))
        else:
            sources.append(FileSource(bars_dir))
    return sources
