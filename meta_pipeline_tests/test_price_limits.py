"""A slow or failing exchange cannot hold a run for long: the per-source circuit breaker and the
per-run time budget of PriceFetcher, and the budget's reach into a single HTTP call."""

from __future__ import annotations

import datetime as dt
import time

import pandas as pd
import pytest

from meta_pipeline.prices import (
    BinanceSource,
    JsonHttpClient,
    PriceFetcher,
    PriceSourceError,
    TimeBudgetExhausted,
    build_sources,
    empty_bars,
)
from meta_pipeline_tests.fake_exchange import FakeExchange

FAST = {
    "timeout": (1.0, 0.5),
    "max_retries": 1,
    "backoff_factor": 0.001,
    "backoff_max": 0.01,
    "max_retry_after": 1.0,
}
D = dt.date
DAYS = [D(2024, 3, d) for d in range(5, 10)]


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def fetcher(fx: FakeExchange, names="binance,coinbase", http=None, **kw) -> PriceFetcher:
    sources = build_sources(
        names, binance_base_url=fx.binance_url, coinbase_base_url=fx.coinbase_url, **(http or FAST)
    )
    return PriceFetcher(sources, now=lambda: ts("2026-01-01"), **kw)


# ---------------------------------------------------------------------------------- circuit breaker
def test_circuit_opens_after_three_consecutive_failed_symbol_days(fake_exchange):
    fake_exchange.inject("500", api="binance", times=1000)
    f = fetcher(fake_exchange)
    results = f.fetch_days("BTCUSDT", DAYS)
    assert [r.source for r in results] == ["coinbase"] * 5
    assert fake_exchange.count("binance") == 3 * 2  # 3 symbol-days × (1 + 1 retry), then never again
    for r in results[:3]:
        assert r.attempts[0].startswith("binance: PriceSourceError: binance: HTTP 500 after 1 retries")
    skipped = (
        "binance: skipped, circuit open after 3 consecutive failed symbol-days (last: PriceSourceError: "
    )
    for r in results[3:]:
        assert r.attempts[0].startswith(skipped), r.attempts
        assert r.requests == 5  # coinbase only
    assert "binance" in f.circuit_open and f.consecutive_failures["binance"] == 3
    # other instruments are skipped too: the source is out for the rest of the run
    eth = f.fetch_day("ETHUSDT", D(2025, 10, 30))
    assert eth.attempts[0].startswith(skipped) and fake_exchange.count("binance") == 6


def test_circuit_open_on_the_only_source_is_the_days_error(fake_exchange):
    fake_exchange.inject("503", api="binance", times=1000)
    f = fetcher(fake_exchange, "binance", max_consecutive_failures=1)
    first, second = f.fetch_days("BTCUSDT", DAYS[:2])
    assert "HTTP 503" in first.error
    assert second.error.startswith(
        "no source supplied bars: binance: skipped, circuit open after 1 consecutive"
    )
    assert second.requests == 0 and fake_exchange.count("binance") == 2


def test_a_success_resets_the_count(fake_exchange):
    f = fetcher(fake_exchange)
    fake_exchange.inject("500", api="binance", times=4)  # two symbol-days of 2 attempts each
    assert [r.source for r in f.fetch_days("BTCUSDT", DAYS[:3])] == ["coinbase", "coinbase", "binance"]
    assert f.consecutive_failures["binance"] == 0
    fake_exchange.inject("500", api="binance", times=4)
    assert [r.source for r in f.fetch_days("BTCUSDT", DAYS[:3])] == ["coinbase", "coinbase", "binance"]
    assert f.circuit_open == {}


def test_not_listed_is_not_a_failure(fake_exchange):
    fake_exchange.delist("BTCUSDT", api="binance")
    f = fetcher(fake_exchange)
    assert [r.source for r in f.fetch_days("BTCUSDT", DAYS)] == ["coinbase"] * 5
    assert fake_exchange.count("binance") == 5 and f.circuit_open == {}


def test_circuit_breaker_can_be_disabled_and_rejects_nonsense(fake_exchange):
    fake_exchange.inject("500", api="binance", times=1000)
    f = fetcher(fake_exchange, max_consecutive_failures=None)
    f.fetch_days("BTCUSDT", DAYS)
    assert fake_exchange.count("binance") == 10 and f.circuit_open == {}
    with pytest.raises(ValueError, match="max_consecutive_failures"):
        fetcher(fake_exchange, max_consecutive_failures=0)
    with pytest.raises(ValueError, match="time_budget_seconds"):
        fetcher(fake_exchange, time_budget_seconds=0)


# -------------------------------------------------------------------------------------- time budget
def test_budget_spent_means_no_request_and_an_error(fake_exchange):
    clock = FakeClock()
    f = fetcher(fake_exchange, time_budget_seconds=10, clock=clock)
    assert f.fetch_day("BTCUSDT", DAYS[0]).source == "binance"
    clock.t += 9.9
    assert f.fetch_day("BTCUSDT", DAYS[1]).source == "binance"
    n = fake_exchange.count()
    clock.t += 0.1
    res = f.fetch_day("BTCUSDT", DAYS[2])
    assert res.error == "run time budget of 10 s exhausted"
    assert res.attempts == ["run time budget of 10 s exhausted: no source tried"]
    assert res.source is None and res.requests == 0 and res.bars.empty
    assert fake_exchange.count() == n  # not a single request more
    assert f.budget_exhausted and f.time_left() == 0


def test_budget_spent_during_a_day_stops_before_the_next_source(fake_exchange):
    clock = FakeClock()

    class Slow:
        name = "slow"
        requests_made = 0

        def fetch_bars(self, instrument, start, end):
            clock.t += 30  # a source that took 30 s and failed
            raise PriceSourceError("slow: timed out")

    sources = [Slow(), *build_sources("binance", binance_base_url=fake_exchange.binance_url, **FAST)]
    f = PriceFetcher(sources, now=lambda: ts("2026-01-01"), time_budget_seconds=20, clock=clock)
    res = f.fetch_day("BTCUSDT", DAYS[0])
    assert fake_exchange.count() == 0
    assert res.error.startswith("run time budget of 20 s exhausted: slow: PriceSourceError: slow: timed out")
    assert res.attempts[-1] == "run time budget of 20 s exhausted: no further source tried"


def test_budget_is_unlimited_when_none(fake_exchange):
    clock = FakeClock()
    f = fetcher(fake_exchange, time_budget_seconds=None, clock=clock)
    clock.t += 1e9
    assert f.fetch_day("BTCUSDT", DAYS[0]).source == "binance" and f.time_left() is None


def test_future_day_is_not_an_error_even_without_budget(fake_exchange):
    clock = FakeClock()
    f = fetcher(fake_exchange, time_budget_seconds=1, clock=clock)
    clock.t += 5
    res = f.fetch_day("BTCUSDT", D(2030, 1, 1))
    assert res.error is None and res.attempts == ["future day: nothing to fetch yet"]


PROD_LIKE = {  # the production retry settings (5 retries, Retry-After honoured up to 60 s)
    "timeout": (1.0, 10.0),
    "max_retries": 5,
    "backoff_factor": 0.001,
    "backoff_max": 0.01,
    "max_retry_after": 60.0,
}


def test_a_429_storm_is_cut_at_the_budget(fake_exchange):
    """Retry-After: 10 on every answer used to cost 5 × 10 s per symbol-day, for every symbol-day."""
    fake_exchange.inject("429", retry_after=10, times=1000)
    f = fetcher(fake_exchange, http=PROD_LIKE, time_budget_seconds=0.6)
    t0 = time.monotonic()
    first = f.fetch_day("BTCUSDT", DAYS[0])
    second = f.fetch_day("BTCUSDT", DAYS[1])
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0
    assert first.error.startswith("run time budget of 0.6 s exhausted: binance: TimeBudgetExhausted")
    assert fake_exchange.count("coinbase") == 0  # no other source tried once the budget is spent
    assert first.requests == fake_exchange.count("binance") == 1  # the Retry-After sleep ate the budget
    assert second.error == "run time budget of 0.6 s exhausted" and second.requests == 0
    assert fake_exchange.count() == 1


def test_a_server_sleeping_past_the_timeout_is_cut_at_the_budget(fake_exchange):
    """A read timeout of 10 s and 5 retries used to cost 60 s per symbol-day."""
    fake_exchange.inject("timeout", api="binance", delay=2.0, times=1000)
    f = fetcher(fake_exchange, http=PROD_LIKE, time_budget_seconds=0.5)
    t0 = time.monotonic()
    res = f.fetch_day("BTCUSDT", DAYS[0])
    assert time.monotonic() - t0 < 4.0  # vs 60 s without the budget
    assert res.error.startswith("run time budget of 0.5 s exhausted: binance: TimeBudgetExhausted")
    assert res.requests == fake_exchange.count("binance") >= 1


def test_one_http_call_honours_the_deadline(fake_exchange):
    fake_exchange.inject("429", api="binance", retry_after=10, times=1000)
    client = JsonHttpClient("binance", **PROD_LIKE)
    client.set_deadline(time.monotonic() + 0.3)
    t0 = time.monotonic()
    with pytest.raises(TimeBudgetExhausted, match="budget exhausted"):
        client.get_json(f"{fake_exchange.binance_url}/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1m"})
    assert time.monotonic() - t0 < 4.0  # vs 10 s of Retry-After
    assert client.requests_made == fake_exchange.count("binance")
    with pytest.raises(TimeBudgetExhausted, match="no request made"):
        client.get_json(f"{fake_exchange.binance_url}/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1m"})
    assert client.requests_made == fake_exchange.count("binance")
    client.set_deadline(None)  # lifted: the call goes through the remaining faults' retries as before
    fake_exchange.reset()
    src = BinanceSource(fake_exchange.binance_url, **PROD_LIKE)
    src.set_deadline(time.monotonic() + 60)
    assert len(src.fetch_bars("BTCUSDT", ts("2024-03-05"), ts("2024-03-06"))) == 1440


def test_the_budget_leaves_normal_fetches_alone(fake_exchange):
    fake_exchange.inject("503", api="binance", times=2)
    f = fetcher(fake_exchange, http={**FAST, "max_retries": 3}, time_budget_seconds=60)
    res = f.fetch_day("BTCUSDT", DAYS[0])
    assert res.source == "binance" and res.requests == 4 and res.complete


def test_budget_defaults():
    f = PriceFetcher(build_sources("binance"), now=lambda: ts("2026-01-01"))
    assert f.time_budget_seconds == 600 and f.max_consecutive_failures == 3
    assert 599 < f.time_left() <= 600
    assert empty_bars().empty
