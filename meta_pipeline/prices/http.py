"""HTTP for the exchange clients: pooled ``requests.Session`` s (one per source and thread), urllib3
retries with exponential backoff that honour ``Retry-After``, exact attempt counting (per source and
per call), and JSON validation.

Layers, from the socket up:

1. :class:`CountingRetry` (a ``urllib3.util.Retry``) retries connection errors, read timeouts and
   HTTP 429/500/502/503/504 for GET, sleeping ``backoff_factor · 2^(n-1)`` (capped at ``backoff_max``)
   or the server's ``Retry-After`` (capped at ``max_retry_after``). Every retry it grants bumps the
   client's counter, so ``requests_made`` = top-level calls + urllib3-internal retries, exactly.
2. :meth:`JsonHttpClient.get_json` reads the body itself and parses it. A truncated body, malformed
   JSON, or JSON of the wrong shape (``validate`` raises) is an error for that request: it is retried by
   a small bounded loop with the same backoff, and a partially parsed page is never returned.
3. Status mapping: 418 → :class:`SourceBanned` (never retried, logged at ERROR, and the client refuses
   every later call); other 4xx → ``classify_error`` (e.g. :class:`SymbolNotListed`) or
   :class:`PriceSourceError`; 429/5xx left after the retries → :class:`PriceSourceError`.
4. Time budget: :meth:`JsonHttpClient.set_deadline` (called by the fetcher with the run's deadline)
   makes every wait fit in what is left: no attempt starts after the deadline, each attempt's connect
   and read timeouts and every backoff or ``Retry-After`` sleep are cut to the remaining seconds, and
   the call then raises :class:`TimeBudgetExhausted`. One call can overrun the deadline by little
   more than the time to open a connection, instead of ``(max_retries + 1) × read timeout`` plus
   every sleep.
5. Concurrency (``PriceFetcher.fetch_many`` calls one client from several threads):

   - Sessions: each thread gets its own ``requests.Session`` (own ``HTTPAdapter`` and urllib3 pool),
     created on the thread's first request. urllib3's pools are thread-safe, but ``requests.Session``
     is not documented as such (cookie jar, adapters and settings are mutable session state), so no
     session is shared between threads. The cost is one keep-alive connection per worker and host,
     the same as a shared pool sized for the workers would hold. :meth:`JsonHttpClient.release_idle_sessions`
     closes the sessions of threads that have ended (the fetcher calls it after its pool shuts down);
     :meth:`JsonHttpClient.close` closes all of them.
   - Counting: ``requests_made`` (the client's total) is updated under a lock. Every attempt is
     also reported to the calling thread's active :func:`request_meter` s (retries are granted on the
     thread that made the request), so a caller can count the attempts of one call exactly while other
     threads use the same client.
   - Ban: the first 418 sets :attr:`JsonHttpClient.banned` (under the lock, first reason wins); from
     then on no thread starts another attempt on that client: calls refuse, a payload retry loop
     stops, and a urllib3 retry of a 429/5xx or connection error is not granted (or called off after
     its sleep). An attempt already on the wire finishes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError
from urllib3.util import Retry

from meta_pipeline.prices.model import PriceSourceError, SourceBanned, TimeBudgetExhausted

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
Timeout = float | tuple[float, float]
MIN_TIMEOUT = 0.01  # seconds: the shortest connect/read timeout an attempt is given


class _BudgetSpent(Exception):
    """urllib3-level reason for stopping the retries: the run's time budget is spent."""


class _Stopped(Exception):
    """urllib3-level reason for stopping the retries: the source banned us (on another thread)."""


# ------------------------------------------------------------------------------- per-call counting
class RequestMeter:
    """HTTP attempts made on one thread while the meter was active (see :func:`request_meter`)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def __repr__(self) -> str:
        return f"RequestMeter(count={self.count})"


_meters = threading.local()


@contextlib.contextmanager
def request_meter() -> Iterator[RequestMeter]:
    """Count the HTTP attempts every :class:`JsonHttpClient` makes *on this thread* inside the block
    (retries included, attempts called off excluded), whatever other threads do with the same
    clients meanwhile. Meters nest: an attempt counts in every meter active on the thread."""
    meter = RequestMeter()
    stack: list[RequestMeter] = _meters.__dict__.setdefault("stack", [])
    stack.append(meter)
    try:
        yield meter
    finally:
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is meter:
                del stack[i]
                break


def _meter(delta: int) -> None:
    for meter in getattr(_meters, "stack", ()):
        meter.count += delta


class CountingRetry(Retry):
    """``Retry`` that calls ``on_retry()`` each time it grants another attempt, caps any
    ``Retry-After`` sleep at ``max_retry_after`` seconds (works on every urllib3 2.x), and, when
    ``remaining()`` returns seconds (the run's time budget; ``None`` = no budget), grants no attempt
    once they are spent and cuts every sleep to them. A retry granted and then called off because the
    budget ran out during its sleep calls ``on_cancel()``, so that attempt counts stay exact.
    ``stopped()`` returning true (the source banned us, seen by another thread) stops the retries the
    same way as a spent budget."""

    def __init__(
        self,
        *args: Any,
        on_retry: Callable[[], None] | None = None,
        max_retry_after: float | None = None,
        remaining: Callable[[], float | None] | None = None,
        on_cancel: Callable[[], None] | None = None,
        stopped: Callable[[], bool] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.on_retry = on_retry
        self.max_retry_after = max_retry_after
        self.remaining = remaining
        self.on_cancel = on_cancel
        self.stopped = stopped

    def new(self, **kw: Any) -> CountingRetry:
        retry = super().new(**kw)
        retry.on_retry = self.on_retry
        retry.max_retry_after = self.max_retry_after
        retry.remaining = self.remaining
        retry.on_cancel = self.on_cancel
        retry.stopped = self.stopped
        return retry

    def _left(self) -> float | None:
        return self.remaining() if self.remaining is not None else None

    def _stopped(self) -> bool:
        return self.stopped is not None and bool(self.stopped())

    def _stop(self, url: str | None = None, pool: Any = None) -> MaxRetryError:
        if self._stopped():
            return MaxRetryError(pool, url or "", _Stopped("source banned: no further attempt"))
        return MaxRetryError(pool, url or "", _BudgetSpent("run time budget exhausted"))

    def increment(
        self, method: str | None = None, url: str | None = None, *args: Any, **kwargs: Any
    ) -> CountingRetry:
        left = self._left()
        if (left is not None and left <= 0) or self._stopped():
            # For a 429/5xx urllib3 then returns the last response (raise_on_status=False); for a
            # connection error or timeout it raises. JsonHttpClient turns both into
            # TimeBudgetExhausted (or SourceBanned when stopped by a ban).
            raise self._stop(url, kwargs.get("_pool"))
        retry = super().increment(method, url, *args, **kwargs)  # raises MaxRetryError when exhausted
        if self.on_retry is not None:
            self.on_retry()
        return retry

    def sleep(self, response: Any = None) -> None:
        """Sleep before the next attempt: the (capped) ``Retry-After``, else the exponential backoff,
        cut to the remaining budget; raise ``MaxRetryError`` if the budget is then spent."""
        delay = 0.0
        if self.respect_retry_after_header and response:
            delay = self.get_retry_after(response) or 0.0
        if not delay:
            delay = self.get_backoff_time()
        left = self._left()
        if left is not None:
            delay = min(delay, max(0.0, left))
        if delay > 0:
            time.sleep(delay)
        if (left is not None and (self._left() or 0.0) <= 0) or self._stopped():
            if self.on_cancel is not None:
                self.on_cancel()  # the attempt granted by increment() will not be made
            raise self._stop()

    def get_retry_after(self, response: Any) -> float | None:
        seconds = super().get_retry_after(response)
        if seconds is not None and self.max_retry_after is not None:
            seconds = min(seconds, self.max_retry_after)
        return seconds


class _BadPayload(Exception):
    """The body was truncated, not JSON, or JSON of the wrong shape: retry the request."""


class JsonHttpClient:
    """GET-and-parse-JSON for one source.

    ``timeout`` is ``(connect, read)`` seconds (or one number for both); ``max_retries`` bounds both
    the urllib3 retries of one call and the payload retries; ``backoff_factor``/``backoff_max`` shape
    the exponential backoff; ``max_retry_after`` caps how long a server's ``Retry-After`` can make us
    sleep; :meth:`set_deadline` bounds every call by the run's time budget (module docstring, 4).

    Safe to call from several threads at once (module docstring, 5): one session per thread, counter
    and ban state under a lock, attempts reported to the calling thread's :func:`request_meter`.
    """

    def __init__(
        self,
        name: str,
        *,
        timeout: Timeout = (3.05, 10.0),
        max_retries: int = 5,
        backoff_factor: float = 0.5,
        backoff_max: float = 30.0,
        max_retry_after: float = 60.0,
        pool_maxsize: int = 10,
        user_agent: str = "meta-pipeline-prices/0.1",
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.name = name
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_factor = backoff_factor
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.requests_made = 0
        self.banned: str | None = None
        self.deadline: float | None = None
        self.clock: Callable[[], float] = time.monotonic
        self._lock = threading.Lock()
        self._user_agent = user_agent
        self._pool_maxsize = pool_maxsize
        self._local = threading.local()
        self._sessions: dict[threading.Thread, requests.Session] = {}
        self.retry = CountingRetry(
            total=max_retries,
            connect=None,
            read=None,
            status=None,
            redirect=3,
            allowed_methods=frozenset({"GET"}),
            status_forcelist=RETRY_STATUSES,
            backoff_factor=backoff_factor,
            backoff_max=backoff_max,
            raise_on_status=False,  # we map the last 429/5xx response ourselves
            respect_retry_after_header=True,
            on_retry=self._count,
            max_retry_after=max_retry_after,
            remaining=self.remaining,
            on_cancel=self._uncount,
            stopped=self._is_banned,
        )

    # -- sessions: one per thread (module docstring, 5) --------------------------------------------
    def _new_session(self) -> requests.Session:
        session = requests.Session()
        session.headers.update({"User-Agent": self._user_agent, "Accept": "application/json"})
        # The Retry is shared: urllib3 never mutates it (every increment() returns a new one).
        adapter = HTTPAdapter(max_retries=self.retry, pool_connections=2, pool_maxsize=self._pool_maxsize)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    @property
    def session(self) -> requests.Session:
        """The calling thread's session, created on first use."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._new_session()
            self._local.session = session
            with self._lock:
                self._sessions[threading.current_thread()] = session
        return session

    def release_idle_sessions(self) -> int:
        """Close the sessions of threads that have ended (their pooled connections with them);
        return how many were closed."""
        with self._lock:
            dead = [t for t in self._sessions if not t.is_alive()]
            sessions = [self._sessions.pop(t) for t in dead]
        for session in sessions:
            session.close()
        return len(sessions)

    def close(self) -> None:
        """Close every thread's session; a later call opens new ones."""
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
            self._local = threading.local()
        for session in sessions:
            session.close()

    # -- counting and ban state --------------------------------------------------------------------
    def _count(self) -> None:
        with self._lock:
            self.requests_made += 1
        _meter(1)

    def _uncount(self) -> None:
        with self._lock:
            self.requests_made -= 1
        _meter(-1)

    def _is_banned(self) -> bool:
        return self.banned is not None

    def _set_banned(self, reason: str) -> bool:
        """Record the ban; ``True`` if this call set it (the first 418 seen by any thread)."""
        with self._lock:
            if self.banned is not None:
                return False
            self.banned = reason
            return True

    def _refuse(self) -> SourceBanned:
        return SourceBanned(
            f"{self.name} banned this IP earlier in this run ({self.banned}); not calling it again"
        )

    def set_deadline(self, deadline: float | None, clock: Callable[[], float] | None = None) -> None:
        """Make no attempt after ``deadline`` (a ``clock()`` reading in seconds; default clock
        ``time.monotonic``) and cut every timeout and sleep to what is left; ``None`` lifts it."""
        self.deadline = deadline
        if clock is not None:
            self.clock = clock

    def remaining(self) -> float | None:
        """Seconds left before the deadline (negative once passed), or ``None`` without one."""
        return None if self.deadline is None else self.deadline - self.clock()

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_max, self.backoff_factor * (2**attempt))

    def _budget_spent(self) -> bool:
        left = self.remaining()
        return left is not None and left <= 0

    def _out_of_budget(self, last: str) -> TimeBudgetExhausted:
        return TimeBudgetExhausted(f"{self.name}: run time budget exhausted ({last})")

    def _timeout_now(self) -> Timeout:
        """The configured timeout, each part cut to the remaining budget."""
        left = self.remaining()
        if left is None:
            return self.timeout
        left = max(MIN_TIMEOUT, left)
        if isinstance(self.timeout, tuple):
            return (min(self.timeout[0], left), min(self.timeout[1], left))
        return min(self.timeout, left)

    def get_json(
        self,
        url: str,
        params: Mapping[str, Any] | None = None,
        *,
        validate: Callable[[Any], Any] | None = None,
        classify_error: Callable[[int, Any], PriceSourceError | None] | None = None,
    ) -> Any:
        """GET ``url`` and return the parsed JSON (or ``validate(parsed)`` when given).

        ``validate`` raises ``ValueError``/``TypeError``/``KeyError``/``IndexError``/``OverflowError``
        for a payload of the wrong shape (the request is then retried). ``classify_error(status, body_or_None)`` may
        turn a non-retryable 4xx into a specific error such as :class:`SymbolNotListed`.
        """
        if self.banned is not None:
            raise self._refuse()
        last_problem = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                pause = self._backoff(attempt - 1)
                left = self.remaining()
                time.sleep(pause if left is None else min(pause, max(0.0, left)))
            if self.banned is not None:  # banned meanwhile by another thread's request
                raise self._refuse()
            if self._budget_spent():
                raise self._out_of_budget(
                    f"no request made; last problem: {last_problem}" if last_problem else "no request made"
                )
            self._count()
            try:
                resp = self.session.get(url, params=params, timeout=self._timeout_now(), stream=True)
            except requests.RequestException as exc:
                if self.banned is not None:
                    raise self._refuse() from exc
                if self._budget_spent():
                    raise self._out_of_budget(f"last: {_describe(exc)}") from exc
                # urllib3 has already retried connection errors and timeouts max_retries times.
                raise PriceSourceError(
                    f"{self.name}: request failed after retries: {_describe(exc)}"
                ) from exc
            try:
                body = resp.content  # truncated bodies raise here
            except requests.RequestException as exc:
                last_problem = f"body truncated or unreadable: {_describe(exc)}"
                log.warning("%s: %s (%s); retrying", self.name, last_problem, _short(resp.url))
                continue
            finally:
                resp.close()
            status = resp.status_code
            if status == 418:
                first = self._set_banned(
                    f"HTTP 418 at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}: {_snippet(body)}"
                )
                if first:
                    log.error(
                        "!!! %s RETURNED HTTP 418: THIS IP IS BANNED. No further requests will be sent to %s in "
                        "this run. Body: %s",
                        self.name.upper(),
                        self.name,
                        _snippet(body),
                    )
                raise SourceBanned(f"{self.name}: HTTP 418 IP ban: {_snippet(body)}")
            if status != 200:
                parsed = _try_json(body)
                if classify_error is not None:
                    err = classify_error(status, parsed)
                    if err is not None:
                        raise err
                if status in RETRY_STATUSES:
                    if self.banned is not None:  # retries stopped by another thread's ban
                        raise self._refuse()
                    if self._budget_spent():
                        raise self._out_of_budget(f"last: HTTP {status}: {_snippet(body)}")
                    raise PriceSourceError(
                        f"{self.name}: HTTP {status} after {self.max_retries} retries: {_snippet(body)}"
                    )
                raise PriceSourceError(f"{self.name}: HTTP {status}: {_snippet(body)}")
            try:
                try:
                    parsed = json.loads(body)
                except ValueError as exc:
                    raise _BadPayload(f"malformed JSON ({exc})") from exc
                if validate is None:
                    return parsed
                try:
                    return validate(parsed)
                except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
                    raise _BadPayload(f"unexpected JSON shape ({exc})") from exc
            except _BadPayload as exc:
                last_problem = str(exc)
                log.warning("%s: %s (%s); retrying", self.name, last_problem, _short(resp.url))
        raise PriceSourceError(
            f"{self.name}: bad response after {self.max_retries + 1} attempts: {last_problem}"
        )


def _try_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _snippet(body: bytes, limit: int = 200) -> str:
    text = body.decode("utf-8", "replace").strip()
    return text if len(text) <= limit else text[:limit] + "…"


def _short(url: str | None) -> str:
    return (url or "")[:200]


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "args", None)
    text = str(reason[0]) if reason else str(exc)
    return f"{type(exc).__name__}: {text[:300]}"


class HttpSource:
    """What the HTTP price sources share: a name, a base URL and one pooled :class:`JsonHttpClient`
    (retries, timeouts, request counting, ban state). Safe to call from several threads at once."""

    name: str
    #: Every HTTP attempt is reported to the calling thread's :func:`request_meter`, so the fetcher
    #: counts one call's attempts exactly while other threads use the same source.
    reports_to_request_meter = True

    def __init__(self, base_url: str, *, name: str, **http_options: Any) -> None:
        """``http_options`` are :class:`JsonHttpClient`'s: timeout, max_retries, backoff_factor,
        backoff_max, max_retry_after."""
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.http = JsonHttpClient(name, **http_options)

    @property
    def requests_made(self) -> int:
        return self.http.requests_made

    def set_deadline(self, deadline: float | None, clock: Callable[[], float] | None = None) -> None:
        """See :meth:`JsonHttpClient.set_deadline` (the fetcher passes the run's deadline here)."""
        self.http.set_deadline(deadline, clock)

    @property
    def banned(self) -> str | None:
        return self.http.banned

    def release_idle_sessions(self) -> int:
        """See :meth:`JsonHttpClient.release_idle_sessions`."""
        return self.http.release_idle_sessions()

    def close(self) -> None:
        self.http.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"
