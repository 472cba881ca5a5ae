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

Concurrency: :meth:`PriceFetcher.fetch_many` fetches symbol-days on a bounded thread pool; one
fetcher (and its sources) may serve any number of threads calling :meth:`~PriceFetcher.fetch_day`.

- Each item's :class:`DayFetch` is what :meth:`~PriceFetcher.fetch_day` alone would return (same bars,
  source, attempts, errors), as long as no limit trips in between: the limits below are shared, so
  which items a ban, an open circuit or the spent budget reaches depends on timing.
- ``DayFetch.requests`` is exact per call: an HTTP source reports every attempt (retries included) to
  the calling thread's :func:`~meta_pipeline.prices.http.request_meter`, so it is not a difference of
  shared counters that other threads move. A source without that support
  (``reports_to_request_meter``) is counted by the difference of its ``requests_made`` before and
  after the call, exact only if it makes no requests (:class:`FileSource`) or is not called
  concurrently.
- Circuit breaker: the counts and the open circuits are shared and updated under a lock, in the
  order the symbol-days *complete*: N consecutive failures means N failed symbol-days of that source
  with no success completing in between. Calls already under way when the circuit opens finish
  (each may retry), so a failing source can cost up to ``max_workers - 1`` symbol-days more than
  sequentially; every symbol-day started after that skips it and says why. A success completing
  after the circuit opened resets the count but does not close the circuit.
- Ban: the first HTTP 418 on any thread bans the source for every thread at once: the HTTP client
  starts no further attempt (no new call, no retry, no next page), the in-flight calls end with
  :class:`SourceBanned`, and later symbol-days skip the source.
- Time budget: one deadline for all threads (from the fetcher's creation); every thread's HTTP calls
  are cut at it, and every symbol-day started after it returns the budget error without a request.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from meta_pipeline.prices.binance import DEFAULT_BINANCE_BASE_URL, BinanceSource
from meta_pipeline.prices.coinbase import DEFAULT_COINBASE_BASE_URL, CoinbaseSource
from meta_pipeline.prices.files import FileSource
from meta_pipeline.prices.http import Timeout, request_meter
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
DEFAULT_MAX_WORKERS = 4


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

    Thread-safe: :meth:`fetch_day` may be called from several threads at once, and
    :meth:`fetch_many` does so on its own pool (module docstring, *Concurrency*). ``banned``,
    ``circuit_open`` and ``consecutive_failures`` are the shared limit state; read them under
    no lock only when no fetch is running.
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
        self._lock = threading.Lock()  # guards banned, circuit_open, consecutive_failures

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
        with self._lock:
            n = self.consecutive_failures.get(name, 0) + 1
            self.consecutive_failures[name] = n
            limit = self.max_consecutive_failures
            opened = None
            if limit is not None and n >= limit and name not in self.circuit_open:
                opened = self.circuit_open[name] = (
                    f"circuit open after {n} consecutive failed symbol-days (last: {why})"
                )
        if opened:
            log.error("price source %s skipped for the rest of this run: %s", name, opened)

    def _succeeded(self, name: str) -> None:
        with self._lock:
            self.consecutive_failures[name] = 0

    def _ban(self, name: str, why: str) -> bool:
        """Record that ``name`` banned us; ``True`` for the first report (any thread)."""
        with self._lock:
            if name in self.banned:
                return False
            self.banned[name] = why
            return True

    def _skip_reason(self, source: PriceSource) -> str | None:
        """Why ``source`` is not to be called any more in this fetcher's life, or ``None``. A ban the
        source itself knows of (another thread's call got the 418 and has not reported it yet)
        counts too."""
        name = source.name
        own = getattr(source, "banned", None)
        if isinstance(own, str) and own and self._ban(name, f"{name}: {own}"):
            log.error(
                "price source %s is BANNED (HTTP 418); skipping it for the rest of this run: %s", name, own
            )
        with self._lock:
            if name in self.banned:
                return f"{name}: skipped, banned earlier in this run ({self.banned[name]})"
            if name in self.circuit_open:
                return f"{name}: skipped, {self.circuit_open[name]}"
        return None

    @staticmethod
    def _call(
        source: PriceSource, instrument: str, start: pd.Timestamp, end: pd.Timestamp
    ) -> tuple[pd.DataFrame | None, dict[str, int], Exception | None, int]:
        """``(bars, rejected, exception, requests)`` of one source call; ``requests`` counts this
        call's HTTP attempts only (module docstring, *Concurrency*)."""
        metered = bool(getattr(source, "reports_to_request_meter", False))
        before = 0 if metered else source.requests_made
        bars: pd.DataFrame | None = None
        rejected: dict[str, int] = {}
        error: Exception | None = None
        with request_meter() as meter:
            try:
                bars, rejected = fetch_validated(source, instrument, start, end)
            except Exception as exc:  # sorted out by fetch_day
                error = exc
        requests = meter.count if metered else source.requests_made - before
        return bars, rejected, error, requests

    # -- fetching ----------------------------------------------------------------------------------
    def fetch_day(self, instrument: str, day: dt.date) -> DayFetch:
        """One (instrument, UTC day): see the module docstring. Never raises for a source's fault."""
        day = _as_date(day)
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
            skipped = self._skip_reason(source)
            if skipped is not None:
                result.attempts.append(skipped)
                failures.append(skipped)
                continue
            if self.budget_exhausted:
                out_of_time = True
                break
            set_deadline = getattr(source, "set_deadline", None)
            if callable(set_deadline):
                set_deadline(self.deadline, self.clock)  # the same values from every thread
            bars, rejected, exc, requests = self._call(source, instrument, day_start, end)
            result.requests += requests
            if isinstance(exc, TimeBudgetExhausted):
                msg = f"{name}: TimeBudgetExhausted: {exc}"
                result.attempts.append(msg)
                failures.append(msg)
                out_of_time = True
                break
            if isinstance(exc, SourceBanned):
                if self._ban(name, str(exc)):
                    log.error(
                        "price source %s is BANNED (HTTP 418); skipping it for the rest of this run: %s",
                        name,
                        exc,
                    )
                msg = f"{name}: SourceBanned: {exc}"
                result.attempts.append(msg)
                failures.append(msg)
                continue
            if isinstance(exc, SymbolNotListed):
                msg = f"{name}: SymbolNotListed: {exc}"
                result.attempts.append(msg)
                not_listed.append(msg)
                continue
            if exc is not None:
                if isinstance(exc, PriceSourceError):
                    why = f"{type(exc).__name__}: {exc}"
                    log.warning("%s %s: %s: %s", instrument, day, name, why)
                else:  # a bug in one source must not stop the others
                    log.error("%s %s: price source %s crashed", instrument, day, name, exc_info=exc)
                    why = f"unexpected {type(exc).__name__}: {exc}"
                msg = f"{name}: {why}"
                result.attempts.append(msg)
                failures.append(msg)
                self._failed(name, why)
                continue
            assert bars is not None
            dropped = f" (dropped: {describe_counts(rejected)})" if rejected else ""
            if bars.empty:
                msg = f"{name}: no bars{dropped}"
                result.attempts.append(msg)
                failures.append(msg)
                continue
            self._succeeded(name)
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

    def fetch_days(self, instrument: str, days: Sequence[dt.date], max_workers: int = 1) -> list[DayFetch]:
        """:meth:`fetch_day` for each day, in order (``max_workers > 1``: through :meth:`fetch_many`;
        a day given twice is fetched once)."""
        if max_workers == 1:
            return [self.fetch_day(instrument, d) for d in days]
        fetched = self.fetch_many([(instrument, d) for d in days], max_workers=max_workers)
        return [fetched[(instrument, _as_date(d))] for d in days]

    def fetch_many(
        self, items: Sequence[tuple[str, dt.date]], max_workers: int = DEFAULT_MAX_WORKERS
    ) -> dict[tuple[str, dt.date], DayFetch]:
        """:meth:`fetch_day` for each ``(instrument, day)``, at most ``max_workers`` at a time.

        Returns ``{(instrument, day): DayFetch}`` in the order of ``items`` (a ``datetime`` day is
        keyed by its date; an item given twice is fetched once). Each result is what
        :meth:`fetch_day` would have returned for it alone; the circuit breaker, bans and the time
        budget are shared by all threads (module docstring, *Concurrency*). Work starts in item order.
        ``max_workers=1`` is the plain sequential loop on the calling thread. A ``fetch_day`` that
        raises (a bug: source faults never raise) cancels the items not started, lets the running
        ones finish, and is re-raised (the first in item order). ``ValueError`` for ``max_workers``
        not a positive integer.
        """
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers must be a positive integer, got {max_workers!r}")
        keys = list(dict.fromkeys((instrument, _as_date(day)) for instrument, day in items))
        if max_workers == 1 or len(keys) <= 1:
            return {key: self.fetch_day(*key) for key in keys}
        pool = ThreadPoolExecutor(max_workers=min(max_workers, len(keys)), thread_name_prefix="price-fetch")
        try:
            futures = {key: pool.submit(self.fetch_day, *key) for key in keys}
            return {key: future.result() for key, future in futures.items()}
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # a no-op after success
            for source in self.sources:  # the pool's threads have ended: close their sessions
                release = getattr(source, "release_idle_sessions", None)
                if callable(release):
                    release()


def _as_date(day: dt.date) -> dt.date:
    return day.date() if isinstance(day, dt.datetime) else day


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
