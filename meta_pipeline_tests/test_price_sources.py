"""Binance and Coinbase clients against the loopback fake exchange serving the real klines."""

from __future__ import annotations

import socket
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meta_pipeline.prices import (
    BAR_COLUMNS,
    BinanceSource,
    CoinbaseSource,
    PriceSourceError,
    SourceBanned,
    SymbolNotListed,
    read_kline_csv,
)
from meta_pipeline_tests.fake_exchange import MARKET_DATA_DIR, FakeExchange

FAST = {
    "timeout": (1.0, 0.25),
    "max_retries": 3,
    "backoff_factor": 0.001,
    "backoff_max": 0.01,
    "max_retry_after": 1.0,
}
OHLCV = ["open_time", "open", "high", "low", "close", "volume"]


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def day_file(symbol: str, day: str) -> pd.DataFrame:
    return read_kline_csv(MARKET_DATA_DIR / symbol / f"{symbol}-1m-{day}.csv", instrument=symbol)


def same_bars(got: pd.DataFrame, want: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got[OHLCV].reset_index(drop=True), want[OHLCV].reset_index(drop=True))


def assert_bars_frame(df: pd.DataFrame, source: str) -> None:
    assert list(df.columns) == BAR_COLUMNS
    assert str(df["open_time"].dtype) == "datetime64[ns, UTC]"
    assert df["open_time"].is_monotonic_increasing and df["open_time"].is_unique
    assert all(df[c].dtype == np.float64 for c in ["open", "high", "low", "close", "volume"])
    assert set(df["source"]) <= {source}


def binance(fx: FakeExchange, **kw) -> BinanceSource:
    return BinanceSource(fx.binance_url, **{**FAST, **kw})


def coinbase(fx: FakeExchange, **kw) -> CoinbaseSource:
    return CoinbaseSource(fx.coinbase_url, **{**FAST, **kw})


# ------------------------------------------------------------------------------------------- Binance
def test_binance_full_day_is_two_requests_without_duplicate_or_missing_minute(fake_exchange):
    src = binance(fake_exchange)
    got = src.fetch_bars("BTCUSDT", ts("2024-03-05"), ts("2024-03-06"))
    assert_bars_frame(got, "binance")
    assert len(got) == 1440
    assert (got["open_time"].diff().dropna() == pd.Timedelta(minutes=1)).all()
    same_bars(got, day_file("BTCUSDT", "2024-03-05"))
    assert src.requests_made == 2 == fake_exchange.count("binance")
    starts = [int(r.params["startTime"]) for r in fake_exchange.requests("binance")]
    day_ms = ts("2024-03-05").value // 1_000_000
    # last open + 1 ms: neither the last open again (a repeated bar) nor + 1 min (can skip a real bar)
    assert starts == [day_ms, day_ms + 999 * 60_000 + 1]
    assert {r.params["endTime"] for r in fake_exchange.requests("binance")} == {str(day_ms + 86_400_000 - 1)}
    assert {r.params["limit"] for r in fake_exchange.requests("binance")} == {"1000"}


def test_binance_paginates_several_days_across_page_boundaries(fake_exchange):
    src = binance(fake_exchange)
    got = src.fetch_bars("BTCUSDT", ts("2024-03-01"), ts("2024-03-04"))
    want = pd.concat([day_file("BTCUSDT", d) for d in ("2024-03-01", "2024-03-02", "2024-03-03")])
    assert len(got) == 3 * 1440
    same_bars(got, want)
    assert src.requests_made == 5  # 1000 × 4 + 320


def test_binance_partial_day_from_the_file(fake_exchange):
    src = binance(fake_exchange)
    got = src.fetch_bars("ETHUSDT", ts("2025-10-29"), ts("2025-10-30"))
    want = day_file("ETHUSDT", "2025-10-29")
    assert len(want) == 1178
    same_bars(got, want)
    assert src.requests_made == 2


def test_binance_keeps_only_start_inclusive_end_exclusive(fake_exchange):
    src = binance(fake_exchange, limit=7)
    got = src.fetch_bars("BTCUSDT", ts("2024-03-05 12:00:30"), ts("2024-03-05 12:30"))
    assert got["open_time"].iloc[0] == ts("2024-03-05 12:01")
    assert got["open_time"].iloc[-1] == ts("2024-03-05 12:29")
    assert len(got) == 29
    assert src.requests_made == 5  # 7+7+7+7+1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    start_min=st.integers(0, 3 * 1440),
    length=st.integers(1, 2500),
    limit=st.integers(50, 1000),
)
def test_binance_pagination_property(fake_exchange, start_min, length, limit):
    """Any range, any page size: exactly the file's bars in [start, end), no duplicate, no request wasted."""
    fake_exchange.reset()
    all_bars = pd.concat([day_file("BTCUSDT", f"2024-03-{d:02d}") for d in range(1, 6)], ignore_index=True)
    start = ts("2024-03-01") + pd.Timedelta(minutes=start_min)
    end = start + pd.Timedelta(minutes=length)
    want = all_bars[(all_bars["open_time"] >= start) & (all_bars["open_time"] < end)]
    src = binance(fake_exchange, limit=limit)
    got = src.fetch_bars("BTCUSDT", start, end)
    same_bars(got, want)
    assert src.requests_made == -(-len(want) // limit)  # ceil: a page ending at the range end is the last


def test_binance_empty_page_mid_range_is_asked_again(fake_exchange):
    fake_exchange.inject("empty", api="binance", skip=1)
    src = binance(fake_exchange)
    got = src.fetch_bars("BTCUSDT", ts("2024-03-05"), ts("2024-03-06"))
    same_bars(got, day_file("BTCUSDT", "2024-03-05"))
    assert src.requests_made == 3 == fake_exchange.count("binance")
    assert [r.fault for r in fake_exchange.requests("binance")] == [None, "empty", None]


def test_binance_empty_page_twice_is_a_real_gap(fake_exchange):
    fake_exchange.inject("empty", api="binance", skip=1, times=2)
    src = binance(fake_exchange)
    got = src.fetch_bars("BTCUSDT", ts("2024-03-05"), ts("2024-03-06"))
    assert len(got) == 1000
    same_bars(got, day_file("BTCUSDT", "2024-03-05").iloc[:1000])
    assert src.requests_made == 3


def test_binance_invalid_symbol(fake_exchange):
    src = binance(fake_exchange)
    with pytest.raises(SymbolNotListed, match="-1121"):
        src.fetch_bars("XRPUSDT", ts("2024-03-05"), ts("2024-03-06"))
    assert src.requests_made == 1  # a 400 is not retried


@pytest.mark.parametrize("api", ["binance", "coinbase"])
def test_injected_invalid_symbol_fault(fake_exchange, api):
    fake_exchange.inject("invalid_symbol", api=api, symbol="ETHUSDT")
    src = binance(fake_exchange) if api == "binance" else coinbase(fake_exchange)
    assert (
        len(src.fetch_bars("BTCUSDT", ts("2024-03-05"), ts("2024-03-05 01:00"))) == 60
    )  # other symbol: no fault
    with pytest.raises(SymbolNotListed):
        src.fetch_bars("ETHUSDT", ts("2025-10-30"), ts("2025-10-31"))
    assert src.requests_made == 2 == fake_exchange.count(api)


@pytest.mark.parametrize("status", ["500", "502", "503", "504"])
def test_binance_5xx_then_success(fake_exchange, status):
    fake_exchange.inject(status, api="binance", times=2)
    src = binance(fake_exchange)
    got = src.fetch_bars("BTCUSDT", ts("2024-03-05"), ts("2024-03-06"))
    same_bars(got, day_file("BTCUSDT", "2024-03-05"))
    assert src.requests_made == 4 == fake_exchange.count("binance")


def test_binance_429_honours_retry_after(fake_exchange):
    fake_exchange.inject("429", api="binance", retry_after=1)
    src = binance(fake_exchange, max_retry_after=5.0)
    t0 = time.monotonic()
    got = src.fetch_bars("BTCUSDT", ts("2024-03-05"), ts("2024-03-06"))
    elapsed = time.monotonic() - t0
    assert len(got) == 1440
    assert 0.9 <= elapsed < 3.0
    assert src.requests_made == 3 == fake_exchange.count("binance")


def test_retry_after_sleep_is_capped(fake_exchange):
    fake_exchange.inject("429", api="binance", retry_after=60)
    src = binance(fake_exchange, max_retry_after=0.1)
    t0 = time.monotonic()
    assert len(src.fetch_bars("BTCUSDT", ts("2024-03-05"), ts("2024-03-06"))) == 1440
    assert time.monotonic() - t0 < 5.0  # vs the 60 s Retry-After


def test_binance_read_timeout_then_success(fake_exchange):
    fake_exchange.inject("timeout", api="binance", delay=0.6)
    src = binance(fake_exchange)
    got = src.fetch_bars("BTCUSDT", ts("2024-03-05"), ts("2024-03-06"))
    same_bars(got, day_file("BTCUSDT", "2024-03-05"))
    assert src.requests_made == 3 == fake_exchange.count("binance")


@pytest.mark.parametrize("fault", ["truncated", "short_read", "wrong_shape"])
def test_binance_bad_payload_then_success(fake_exchange, fault):
    fake_exchange.inject(fault, api="binance", skip=1)  # the second page is the broken one
    src = binance(fake_exchange)
    got = src.fetch_bars("BTCUSDT", ts("2024-03-05"), ts("2024-03-06"))
    same_bars(got, day_file("BTCUSDT", "2024-03-05"))
    assert src.requests_made == 3 == fake_exchange.count("binance")


@pytest.mark.parametrize("fault", ["500", "truncated"])
def test_binance_gives_up_after_bounded_retries(fake_exchange, fault):
    fake_exchange.inject(fault, api="binance", times=100)
    src = binance(fake_exchange, max_retries=2)
    with pytest.raises(PriceSourceError) as info:
        src.fetch_bars("BTCUSDT", ts("2024-03-05"), ts("2024-03-06"))
    assert not isinstance(info.value, SymbolNotListed | SourceBanned)
    assert src.requests_made == 3 == fake_exchange.count("binance")


def test_connection_refused_counts_every_attempt():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = BinanceSource(f"http://127.0.0.1:{port}", **{**FAST, "max_retries": 2})
    with pytest.raises(PriceSourceError, match="request failed after retries"):
        src.fetch_bars("BTCUSDT", ts("2024-03-05"), ts("2024-03-06"))
    assert src.requests_made == 3


def test_binance_418_bans_the_source(fake_exchange):
    fake_exchange.inject("418", api="binance", retry_after=5)
    src = binance(fake_exchange)
    with pytest.raises(SourceBanned):
        src.fetch_bars("BTCUSDT", ts("2024-03-05"), ts("2024-03-06"))
    assert src.requests_made == 1  # 418 is never retried
    with pytest.raises(SourceBanned):
        src.fetch_bars("BTCUSDT", ts("2024-03-07"), ts("2024-03-08"))
    assert src.requests_made == 1 == fake_exchange.count("binance")
    assert src.banned


# ------------------------------------------------------------------------------------------ Coinbase
def test_coinbase_full_day_is_five_windows_newest_first_on_the_wire(fake_exchange):
    src = coinbase(fake_exchange)
    got = src.fetch_bars("BTCUSDT", ts("2024-03-05"), ts("2024-03-06"))
    assert_bars_frame(got, "coinbase")
    same_bars(got, day_file("BTCUSDT", "2024-03-05"))
    reqs = fake_exchange.requests("coinbase")
    assert src.requests_made == 5 == len(reqs)
    assert {r.path for r in reqs} == {"/coinbase/products/BTC-USD/candles"}
    windows = [(ts(r.params["start"]), ts(r.params["end"])) for r in reqs]
    assert windows[0] == (ts("2024-03-05 00:00"), ts("2024-03-05 04:59"))
    assert windows[-1] == (ts("2024-03-05 20:00"), ts("2024-03-05 23:59"))
    for (_, prev_end), (nxt_start, _) in zip(windows, windows[1:], strict=False):
        assert nxt_start == prev_end + pd.Timedelta(minutes=1)
    assert all(r.params["granularity"] == "60" for r in reqs)


def test_coinbase_wire_order_is_newest_first(fake_exchange):
    import requests

    body = requests.get(
        f"{fake_exchange.coinbase_url}/products/BTC-USD/candles",
        params={"granularity": 60, "start": "2024-03-05T00:00:00Z", "end": "2024-03-05T00:09:00Z"},
        timeout=5,
    ).json()
    times = [c[0] for c in body]
    assert times == sorted(times, reverse=True) and len(times) == 10
    first = day_file("BTCUSDT", "2024-03-05").iloc[0]
    t, low, high, open_, close, volume = body[-1]
    assert (low, high, open_, close, volume) == (
        first["low"],
        first["high"],
        first["open"],
        first["close"],
        first["volume"],
    )


def test_coinbase_absent_minutes_stay_absent(fake_exchange):
    want = day_file("BTCUSDT", "2024-03-05")
    dropped_ts = list(want["open_time"].sample(40, random_state=7))
    dropped_ts += list(pd.date_range(ts("2024-03-05 04:55"), periods=10, freq="min"))  # across a window edge
    fake_exchange.drop_coinbase_minutes("BTCUSDT", dropped_ts)
    got = coinbase(fake_exchange).fetch_bars("BTCUSDT", ts("2024-03-05"), ts("2024-03-06"))
    keep = ~want["open_time"].isin(pd.DatetimeIndex(dropped_ts))
    assert len(got) == int(keep.sum()) < 1440
    same_bars(got, want[keep])


def test_coinbase_not_found(fake_exchange):
    src = coinbase(fake_exchange)
    with pytest.raises(SymbolNotListed, match="NotFound"):
        src.fetch_bars("XRPUSDT", ts("2024-03-05"), ts("2024-03-06"))
    assert src.requests_made == 1


def test_coinbase_429_and_truncated_then_success(fake_exchange):
    fake_exchange.inject("429", api="coinbase", retry_after=0)
    fake_exchange.inject("truncated", api="coinbase", skip=2)
    src = coinbase(fake_exchange)
    got = src.fetch_bars("BTCUSDT", ts("2024-03-05"), ts("2024-03-06"))
    same_bars(got, day_file("BTCUSDT", "2024-03-05"))
    assert src.requests_made == 7 == fake_exchange.count("coinbase")


def test_coinbase_window_limit_is_enforced_by_the_fake(fake_exchange):
    import requests

    r = requests.get(
        f"{fake_exchange.coinbase_url}/products/BTC-USD/candles",
        params={"granularity": 60, "start": "2024-03-05T00:00:00Z", "end": "2024-03-05T05:00:00Z"},
        timeout=5,
    )
    assert r.status_code == 400 and "300" in r.json()["message"]
