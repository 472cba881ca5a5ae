"""PriceFetcher.fetch_many: concurrent symbol-days give the sequential results, exact per-call request
counts, and shared limits (circuit breaker, ban, time budget) that hold under concurrency."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pandas as pd
import pytest

from meta_pipeline.prices import (
    DEFAULT_MAX_WORKERS,
    DayFetch,
    JsonHttpClient,
    PriceFetcher,
    PriceSourceError,
    SourceBanned,
    build_sources,
    empty_bars,
    request_meter,
)
from meta_pipeline_tests.fake_exchange import MARKET_DATA_DIR, FakeExchange, LoggedRequest

FAST = {
    "timeout": (1.0, 0.25),
    "max_retries": 2,
    "backoff_factor": 0.001,
    "backoff_max": 0.01,
    "max_retry_after": 1.0,
}
# FAST's retries with a read timeout far above the latency, for the tests that compare request
# counts and are not about timeouts: on a loaded machine the in-process server can answer late, and
# a retry would change the counts (timeouts are tested with FAST, on purpose)
PATIENT = {**FAST, "timeout": (5.0, 5.0)}
PROD_LIKE = {**FAST, "timeout": (1.0, 10.0), "max_retries": 5, "max_retry_after": 60.0}
D = dt.date
MARCH = [D(2024, 3, d) for d in range(1, 23)]  # BTCUSDT days in the fake exchange (and the files)
OCT = [D(2025, 10, 29), D(2025, 10, 30), D(2025, 10, 31), D(2025, 11, 1)]  # BTCUSDT and ETHUSDT
NOW = pd.Timestamp("2026-01-01", tz="UTC")


def ms(text: str) -> int:
    return pd.Timestamp(text, tz="UTC").value // 1_000_000


def fetcher(fx: FakeExchange, names="binance,coinbase", http=None, **kw) -> PriceFetcher:
    sources = build_sources(
        names,
        binance_base_url=fx.binance_url,
        coinbase_base_url=fx.coinbase_url,
        bars_dir=MARKET_DATA_DIR,
        **(http or FAST),
    )
    return PriceFetcher(sources, now=lambda: NOW, **kw)


def assert_same(got: DayFetch, want: DayFetch) -> None:
    key = (want.instrument, want.day)
    assert (got.instrument, got.day) == key
    assert got.source == want.source, key
    assert got.attempts == want.attempts, key
    assert got.error == want.error, key
    assert got.unpriceable == want.unpriceable, key
    assert got.requests == want.requests, key
    assert got.rejected_bars == want.rejected_bars and got.no_trade_bars == want.no_trade_bars, key
    assert got.fetched_at == want.fetched_at, key
    pd.testing.assert_frame_equal(got.bars, want.bars)


def page_at(symbol: str, start_ms: int):
    """Match the Binance page of ``symbol`` that starts at ``start_ms``."""
    return lambda r: r.symbol == symbol and r.params.get("startTime") == str(start_ms)


def second_page_of(symbol: str, day: str):
    lo, hi = ms(day), ms(day) + 86_400_000
    return lambda r: r.symbol == symbol and lo < int(r.params.get("startTime", lo)) < hi


def window_at(symbol: str, start_iso: str):
    return lambda r: r.symbol == symbol and r.params.get("start") == start_iso


# ------------------------------------------------------------------------- same results as sequential
ITEMS = (
    [("BTCUSDT", d) for d in MARCH[:16]]
    + [("BTCUSDT", d) for d in OCT]
    + [("ETHUSDT", d) for d in OCT]
    + [("XRPUSDT", D(2024, 3, 5)), ("BTCUSDT", D(2030, 1, 1))]
)


def set_up_faults(fx: FakeExchange) -> None:
    """Faults that hit one precise request each, so that they land on the same symbol-day whatever
    the order the threads get there in."""
    fx.delist("ETHUSDT", api="binance")  # ETH days come from Coinbase
    fx.inject("429", api="binance", retry_after=1, match=page_at("BTCUSDT", ms("2024-03-02")))
    fx.inject("500", api="binance", times=3, match=page_at("BTCUSDT", ms("2024-03-03")))  # → coinbase
    fx.inject("empty", api="binance", match=second_page_of("BTCUSDT", "2024-03-04"))  # asked again
    fx.inject("empty", api="binance", times=2, match=page_at("BTCUSDT", ms("2024-03-06")))  # no bars
    fx.inject("truncated", api="binance", match=page_at("BTCUSDT", ms("2024-03-10")))
    fx.inject("timeout", api="binance", delay=0.5, match=page_at("BTCUSDT", ms("2024-03-11")))
    fx.inject("503", api="coinbase", match=window_at("ETHUSDT", "2025-10-30T05:00:00Z"))
    fx.inject("502", api="binance", times=2, match=page_at("BTCUSDT", ms("2025-10-30")))  # 3rd try ok


def test_concurrent_results_equal_sequential_results_with_faults(fake_exchange):
    set_up_faults(fake_exchange)
    sequential = fetcher(fake_exchange, "binance,coinbase,files")
    want = {(i, d): sequential.fetch_day(i, d) for i, d in ITEMS}
    want_counts = fake_exchange.counts()
    assert sum(r.requests for r in want.values()) == fake_exchange.count()
    assert not fake_exchange.pending_faults()

    fake_exchange.reset()
    set_up_faults(fake_exchange)
    got = fetcher(fake_exchange, "binance,coinbase,files").fetch_many(ITEMS, max_workers=6)
    assert list(got) == [(i, d) for i, d in ITEMS]  # keyed and ordered as asked
    for key in want:
        assert_same(got[key], want[key])
    assert sum(r.requests for r in got.values()) == fake_exchange.count()
    assert fake_exchange.counts() == want_counts
    assert not fake_exchange.pending_faults()

    # the faults did what they were meant to
    assert got[("BTCUSDT", D(2024, 3, 2))].requests == 3  # 429, then 2 pages
    assert got[("BTCUSDT", D(2024, 3, 3))].source == "coinbase"
    assert got[("BTCUSDT", D(2024, 3, 6))].attempts[0] == "binance: no bars"
    assert got[("ETHUSDT", D(2025, 10, 30))].source == "coinbase"
    assert got[("XRPUSDT", D(2024, 3, 5))].unpriceable is not None
    assert got[("BTCUSDT", D(2030, 1, 1))].attempts == ["future day: nothing to fetch yet"]


def test_requests_add_up_to_what_the_server_saw_under_random_faults(fake_exchange):
    """Faults that land on whichever request comes first: results depend on timing, counts do not."""
    fake_exchange.latency = 0.005
    fake_exchange.inject("500", times=7)
    fake_exchange.inject("429", api="binance", retry_after=0, times=5)
    fake_exchange.inject("truncated", times=3)
    fake_exchange.inject("empty", api="binance", times=4)
    fake_exchange.inject("timeout", delay=0.4, times=2)
    items = [("BTCUSDT", d) for d in MARCH] + [(s, d) for s in ("BTCUSDT", "ETHUSDT") for d in OCT]
    f = fetcher(fake_exchange, max_consecutive_failures=None)
    got = f.fetch_many(items, max_workers=8)
    assert len(got) == len(items)
    assert all(r.source in ("binance", "coinbase") for r in got.values())
    assert sum(r.requests for r in got.values()) == fake_exchange.count()
    per_source = {"binance": 0, "coinbase": 0}
    for source in f.sources:
        per_source[source.name] = source.requests_made
    assert per_source["binance"] == fake_exchange.count("binance")
    assert per_source["coinbase"] == fake_exchange.count("coinbase")


def test_request_meter_counts_only_the_calling_threads_attempts(fake_exchange):
    fake_exchange.latency = 0.01
    fake_exchange.inject("500", api="binance", symbol="ETHUSDT", times=2)
    client = JsonHttpClient("binance", **FAST)
    url = f"{fake_exchange.binance_url}/api/v3/klines"
    counts: dict[str, int] = {}
    barrier = threading.Barrier(2)

    def get(symbol: str, n: int) -> None:
        barrier.wait()
        with request_meter() as meter:
            for _ in range(n):
                client.get_json(url, {"symbol": symbol, "interval": "1m", "limit": 5})
        counts[symbol] = meter.count

    threads = [threading.Thread(target=get, args=a) for a in (("BTCUSDT", 6), ("ETHUSDT", 3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counts == {"BTCUSDT": 6, "ETHUSDT": 3 + 2}  # ETH's two 500s were retried by urllib3
    assert client.requests_made == fake_exchange.count() == 11
    with request_meter() as outer, request_meter() as inner:
        client.get_json(url, {"symbol": "BTCUSDT", "interval": "1m", "limit": 5})
    assert outer.count == inner.count == 1


# ------------------------------------------------------------------------------------ circuit breaker
def test_the_circuit_opens_under_concurrency_and_later_items_say_why(fake_exchange):
    fake_exchange.latency = 0.02
    fake_exchange.inject("500", api="binance", times=10_000)
    items = [("BTCUSDT", d) for d in MARCH[:12]]
    workers = 4
    f = fetcher(fake_exchange, http=PATIENT, max_consecutive_failures=3)
    got = f.fetch_many(items, max_workers=workers)
    assert [r.source for r in got.values()] == ["coinbase"] * len(items)
    failed = [r for r in got.values() if r.attempts[0].startswith("binance: PriceSourceError: ")]
    skipped = [r for r in got.values() if r.attempts[0].startswith("binance: skipped, circuit open after 3 ")]
    assert len(failed) + len(skipped) == len(items)
    # three failures open it; calls already under way then may fail too, no call starts after that
    assert 3 <= len(failed) <= 3 + workers - 1
    assert fake_exchange.count("binance") == 3 * len(failed)  # 1 + 2 retries each
    assert all(r.requests == 5 for r in skipped)  # coinbase only
    assert set(items[-(len(items) - 3 - (workers - 1)) :]) <= {(r.instrument, r.day) for r in skipped}
    assert f.circuit_open["binance"].startswith("circuit open after 3 consecutive failed symbol-days")
    assert f.consecutive_failures["binance"] == len(failed)
    assert sum(r.requests for r in got.values()) == fake_exchange.count()


def test_a_success_completing_between_failures_resets_the_count(fake_exchange):
    """Completion order decides: failures of BTC days and successes of ETH days interleave."""
    fake_exchange.latency = 0.01
    fake_exchange.inject("500", api="binance", symbol="BTCUSDT", times=10_000)
    f = fetcher(fake_exchange, max_consecutive_failures=3)
    f.fetch_many([("BTCUSDT", MARCH[0]), ("BTCUSDT", MARCH[1]), ("ETHUSDT", OCT[1])], max_workers=3)
    assert f.circuit_open == {}
    got = f.fetch_many([("BTCUSDT", d) for d in MARCH[2:8]], max_workers=3)
    assert "binance" in f.circuit_open
    assert all(r.source == "coinbase" for r in got.values())


# -------------------------------------------------------------------------------------------- bans
def test_a_ban_seen_by_one_thread_stops_the_others(fake_exchange, caplog):
    fake_exchange.latency = 0.05
    fake_exchange.inject("418", api="binance", skip=3)  # the 4th binance request
    workers = 4
    items = [("BTCUSDT", d) for d in MARCH[:16]]
    f = fetcher(fake_exchange, http=PATIENT)
    with caplog.at_level("ERROR"):
        got = f.fetch_many(items, max_workers=workers)
    assert all(r.error is None and r.source in ("binance", "coinbase") for r in got.values())
    assert "binance" in f.banned and f.sources[0].banned is not None
    banned_log = [r for r in caplog.records if "RETURNED HTTP 418" in r.getMessage()]
    assert len(banned_log) == 1  # told once, not once per thread
    # the 418 and the requests already on the wire, nothing after
    (ban,) = [r for r in fake_exchange.requests("binance") if r.status == 418]
    assert fake_exchange.count("binance") <= 4 + (workers - 1)
    # (a count, not a clock: on a loaded machine a request already sent can reach the server late)
    assert ban.status == 418
    later = [r for r in got.values() if r.attempts[0].startswith("binance: skipped, banned earlier")]
    assert len(later) >= len(items) - workers
    assert all(r.requests == 5 and r.source == "coinbase" for r in later)
    assert sum(r.requests for r in got.values()) == fake_exchange.count()


def test_a_ban_stops_another_threads_retries(fake_exchange):
    """A thread sleeping out a 429's Retry-After does not retry once another thread got a 418."""
    fake_exchange.inject("429", api="binance", symbol="BTCUSDT", retry_after=1, times=100)
    fake_exchange.inject("418", api="binance", symbol="ETHUSDT")
    client = JsonHttpClient("binance", **PROD_LIKE)
    url = f"{fake_exchange.binance_url}/api/v3/klines"
    outcome: dict[str, object] = {}

    def slow() -> None:
        t0 = time.monotonic()
        with request_meter() as meter:
            try:
                client.get_json(url, {"symbol": "BTCUSDT", "interval": "1m"})
            except PriceSourceError as exc:
                outcome["error"] = exc
        outcome["requests"] = meter.count
        outcome["seconds"] = time.monotonic() - t0

    t = threading.Thread(target=slow)
    t.start()
    while fake_exchange.count("binance", "BTCUSDT") == 0:
        time.sleep(0.005)
    with pytest.raises(SourceBanned, match="418"):
        client.get_json(url, {"symbol": "ETHUSDT", "interval": "1m"})
    t.join(5)
    assert isinstance(outcome["error"], SourceBanned)
    assert outcome["requests"] == 1 and fake_exchange.count("binance", "BTCUSDT") == 1
    assert outcome["seconds"] < 2.5  # not 5 retries × 1 s
    assert client.requests_made == fake_exchange.count() == 2


# -------------------------------------------------------------------------------------- time budget
def test_the_budget_stops_every_thread(fake_exchange):
    """A 429 storm with Retry-After 10: each worker's first request sleeps into the budget; no
    symbol-day started afterwards makes a request."""
    fake_exchange.inject("429", retry_after=10, times=10_000)
    items = [("BTCUSDT", d) for d in MARCH[:16]]
    f = fetcher(fake_exchange, http=PROD_LIKE, time_budget_seconds=0.5)
    t0 = time.monotonic()
    got = f.fetch_many(items, max_workers=4)
    assert time.monotonic() - t0 < 5.0  # vs 10 s of Retry-After per worker without the budget
    assert all(r.error.startswith("run time budget of 0.5 s exhausted") for r in got.values())
    assert fake_exchange.count("coinbase") == 0
    assert sum(r.requests for r in got.values()) == fake_exchange.count("binance") <= 4
    untried = [
        r for r in got.values() if r.attempts == ["run time budget of 0.5 s exhausted: no source tried"]
    ]
    assert len(untried) >= len(items) - 4 and all(r.requests == 0 for r in untried)


def test_the_budget_running_out_mid_run_stops_all_threads(fake_exchange):
    fake_exchange.latency = 0.05
    items = [(s, d) for d in MARCH for s in ("BTCUSDT",)] + [("ETHUSDT", d) for d in OCT]
    budget = 0.4
    wall_deadline = time.time() + budget
    f = fetcher(fake_exchange, time_budget_seconds=budget)
    got = f.fetch_many(items, max_workers=4)
    done = [r for r in got.values() if r.error is None]
    out = [r for r in got.values() if r.error is not None]
    assert done and out  # the budget ran out part-way
    assert all(r.source == "binance" for r in done)
    assert all(r.error.startswith(f"run time budget of {budget:g} s exhausted") for r in out)
    assert all(r.at <= wall_deadline + 0.5 for r in fake_exchange.requests())  # none started late
    assert sum(r.requests for r in got.values()) == fake_exchange.count()


# ------------------------------------------------------------------------------------------- speed
def test_four_workers_take_well_under_half_the_sequential_time(fake_exchange):
    """16 symbol-days of 2 requests × 50 ms. The ideal ratio is 1/4; the GIL-bound part of a
    symbol-day (JSON, pandas validation: ~25-50 ms, in this process the fake server's work too) does
    not overlap, so expect ~0.3-0.4. Best of two interleaved rounds each, to damp machine noise."""
    fake_exchange.latency = 0.05
    items = [("BTCUSDT", d) for d in MARCH[:16]]
    sequential, concurrent = [], []
    for _ in range(2):
        t0 = time.perf_counter()
        want = fetcher(fake_exchange, "binance", http=PATIENT).fetch_days("BTCUSDT", [d for _, d in items])
        sequential.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        got = fetcher(fake_exchange, "binance", http=PATIENT).fetch_many(items, max_workers=4)
        concurrent.append(time.perf_counter() - t0)
        for w in want:
            assert_same(got[("BTCUSDT", w.day)], w)
    assert fake_exchange.count() == 2 * 2 * 2 * len(items)
    ratio = min(concurrent) / min(sequential)
    print(f"sequential {min(sequential):.2f} s, 4 workers {min(concurrent):.2f} s, ratio {ratio:.2f}")
    assert ratio < 0.65, (sequential, concurrent)


# ------------------------------------------------------------------------------------ API and edges
class Recording:
    """A source that needs no server and records the threads it was called on."""

    name = "recording"
    requests_made = 0

    def __init__(self) -> None:
        self.calls: list[tuple[str, dt.date, str]] = []

    def fetch_bars(self, instrument, start, end):
        self.calls.append((instrument, start.date(), threading.current_thread().name))
        if instrument == "BADUSDT":
            raise PriceSourceError("recording: no such thing")
        return empty_bars()


def test_one_worker_is_the_sequential_loop_on_the_calling_thread():
    src = Recording()
    f = PriceFetcher([src], now=lambda: NOW)
    items = [("BTCUSDT", D(2024, 3, 1)), ("BADUSDT", D(2024, 3, 2)), ("ETHUSDT", D(2024, 3, 3))]
    got = f.fetch_many(items, max_workers=1)
    me = threading.current_thread().name
    assert src.calls == [(i, d, me) for i, d in items]
    want = PriceFetcher([Recording()], now=lambda: NOW)
    for (i, d), r in got.items():
        assert_same(r, want.fetch_day(i, d))
    assert f.consecutive_failures["recording"] == 1


def test_fetch_many_keys_duplicates_and_arguments():
    src = Recording()
    f = PriceFetcher([src], now=lambda: NOW)
    items = [
        ("BTCUSDT", D(2024, 3, 1)),
        ("BTCUSDT", dt.datetime(2024, 3, 1, 12)),  # the same day
        ("ETHUSDT", D(2024, 3, 1)),
    ]
    got = f.fetch_many(items, max_workers=3)
    assert list(got) == [("BTCUSDT", D(2024, 3, 1)), ("ETHUSDT", D(2024, 3, 1))]
    assert len(src.calls) == 2
    assert f.fetch_many([]) == {}
    assert DEFAULT_MAX_WORKERS == 4
    for bad in (0, -1, 1.5, True, "4"):
        with pytest.raises(ValueError, match="max_workers"):
            f.fetch_many(items, max_workers=bad)
    days = [D(2024, 3, 3), D(2024, 3, 1), D(2024, 3, 3)]
    assert [r.day for r in f.fetch_days("BTCUSDT", days, max_workers=2)] == days
    assert [r.day for r in f.fetch_days("BTCUSDT", days)] == days


def test_a_crash_of_fetch_day_is_raised_in_item_order(monkeypatch):
    f = PriceFetcher([Recording()], now=lambda: NOW)
    real = f.fetch_day

    def flaky(instrument, day):
        if day.day in (2, 4):
            raise RuntimeError(f"bug on {day}")
        return real(instrument, day)

    monkeypatch.setattr(f, "fetch_day", flaky)
    with pytest.raises(RuntimeError, match="bug on 2024-03-02"):
        f.fetch_many([("BTCUSDT", D(2024, 3, d)) for d in range(1, 6)], max_workers=3)


def test_each_thread_has_its_own_session_and_ended_threads_release_theirs(fake_exchange):
    client = JsonHttpClient("binance", **FAST)
    main = client.session
    assert client.session is main
    seen: list = []
    barrier = threading.Barrier(3)

    def use() -> None:
        barrier.wait()
        seen.append(client.session)
        assert client.session is seen[-1]

    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in [main, *seen]}) == 4
    assert client.release_idle_sessions() == 3  # the main thread's is alive and kept
    assert client.session is main
    client.close()
    assert client.session is not main  # a new one after close


def test_fetch_many_releases_its_workers_sessions(fake_exchange):
    f = fetcher(fake_exchange, "binance")
    f.fetch_many([("BTCUSDT", d) for d in MARCH[:4]], max_workers=4)
    assert f.sources[0].release_idle_sessions() == 0  # already closed by fetch_many
    assert f.sources[0].http._sessions == {}


def test_logged_request_timestamps_are_wall_clock(fake_exchange):
    """The ban and budget tests compare LoggedRequest.at with time.time()."""
    before = time.time()
    fetcher(fake_exchange, "binance").fetch_day("BTCUSDT", MARCH[0])
    reqs: list[LoggedRequest] = fake_exchange.requests()
    assert reqs and all(before <= r.at <= time.time() for r in reqs)
