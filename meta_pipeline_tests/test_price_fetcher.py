"""PriceFetcher: per symbol-day fallback, bans, unpriceable symbols, today/future days, DayFetch."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from meta_pipeline.prices import (
    DEFAULT_BINANCE_BASE_URL,
    DEFAULT_COINBASE_BASE_URL,
    SOURCE_NAMES,
    BinanceSource,
    CoinbaseSource,
    DayFetch,
    FileSource,
    PriceFetcher,
    PriceSource,
    build_sources,
    empty_bars,
    parse_source_names,
    read_kline_csv,
)
from meta_pipeline.prices.model import make_bars
from meta_pipeline_tests.fake_exchange import MARKET_DATA_DIR, FakeExchange

FAST = {
    "timeout": (1.0, 0.25),
    "max_retries": 2,
    "backoff_factor": 0.001,
    "backoff_max": 0.01,
    "max_retry_after": 1.0,
}
OHLCV = ["open_time", "open", "high", "low", "close", "volume"]
D = dt.date


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def day_file(symbol: str, day: str) -> pd.DataFrame:
    return read_kline_csv(MARKET_DATA_DIR / symbol / f"{symbol}-1m-{day}.csv", instrument=symbol)


def same_bars(got: pd.DataFrame, want: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got[OHLCV].reset_index(drop=True), want[OHLCV].reset_index(drop=True))


def fetcher(fx: FakeExchange, names=("binance", "coinbase", "files"), bars_dir=MARKET_DATA_DIR, now=None):
    sources = build_sources(
        names, binance_base_url=fx.binance_url, coinbase_base_url=fx.coinbase_url, bars_dir=bars_dir, **FAST
    )
    return PriceFetcher(sources, now=now or (lambda: ts("2026-01-01")))


# ----------------------------------------------------------------------------------------- fallback
def test_binance_supplies_a_complete_past_day(fake_exchange):
    res = fetcher(fake_exchange).fetch_day("BTCUSDT", D(2024, 3, 5))
    assert res.source == "binance" and res.error is None and res.unpriceable is None
    assert res.requests == 2
    assert res.attempts == ["binance: ok, 1440 bars"]
    assert res.complete and res.expected_bars == res.present_bars == 1440 and res.gaps == []
    same_bars(res.bars, day_file("BTCUSDT", "2024-03-05"))
    assert fake_exchange.count("coinbase") == 0


def test_fallback_binance_not_listed_then_coinbase(fake_exchange):
    fake_exchange.delist("BTCUSDT", api="binance")
    res = fetcher(fake_exchange).fetch_day("BTCUSDT", D(2024, 3, 5))
    assert res.source == "coinbase"
    assert res.attempts[0] == "binance: SymbolNotListed: Invalid symbol. (-1121)"
    assert res.attempts[1] == "coinbase: ok, 1440 bars"
    assert res.requests == 1 + 5
    assert res.complete and res.unpriceable is None and res.error is None
    same_bars(res.bars, day_file("BTCUSDT", "2024-03-05"))
    assert set(res.bars["source"]) == {"coinbase"}


def test_fallback_binance_failing_then_coinbase(fake_exchange):
    fake_exchange.inject("503", api="binance", times=10)
    res = fetcher(fake_exchange).fetch_day("BTCUSDT", D(2024, 3, 5))
    assert res.source == "coinbase"
    assert res.attempts[0].startswith("binance: PriceSourceError: binance: HTTP 503 after 2 retries")
    assert res.requests == 3 + 5  # retries are counted


def test_fallback_to_files_when_both_exchanges_fail(fake_exchange):
    fake_exchange.inject("500", api="binance", times=10)
    fake_exchange.delist("BTCUSDT", api="coinbase")
    res = fetcher(fake_exchange).fetch_day("BTCUSDT", D(2024, 3, 5))
    assert res.source == "files"
    assert [a.split(":")[0] for a in res.attempts] == ["binance", "coinbase", "files"]
    assert res.attempts[-1] == "files: ok, 1440 bars"
    assert res.requests == 3 + 1
    same_bars(res.bars, day_file("BTCUSDT", "2024-03-05"))


def test_a_source_with_no_bars_hands_over(fake_exchange):
    """A listed symbol with no bars at all that day (Binance: empty page asked twice) falls back."""
    fake_exchange.inject("empty", api="binance", times=2)
    res = fetcher(fake_exchange).fetch_day("BTCUSDT", D(2024, 3, 5))
    assert res.attempts[0] == "binance: no bars"
    assert res.source == "coinbase" and res.requests == 2 + 5


def test_partial_day_is_a_success_and_not_filled_from_another_source(fake_exchange):
    full = day_file("BTCUSDT", "2024-03-05")
    holes = full["open_time"].between(ts("2024-03-05 10:00"), ts("2024-03-05 10:14"))
    holes |= full["open_time"] == ts("2024-03-05 23:59")
    fake_exchange.add_bars(full[~holes])
    res = fetcher(fake_exchange).fetch_day("BTCUSDT", D(2024, 3, 5))
    assert res.source == "binance" and res.error is None
    assert fake_exchange.count("coinbase") == 0
    assert res.present_bars == 1440 - 16 and res.expected_bars == 1440
    assert res.gaps == [
        (ts("2024-03-05 10:00"), ts("2024-03-05 10:15")),
        (ts("2024-03-05 23:59"), ts("2024-03-06 00:00")),
    ]
    assert not res.complete


def test_every_source_not_listed_is_unpriceable(fake_exchange, tmp_path):
    res = fetcher(fake_exchange, bars_dir=tmp_path).fetch_day("XRPUSDT", D(2024, 3, 5))
    assert res.source is None and res.error is None
    assert res.unpriceable is not None
    assert "binance: SymbolNotListed: Invalid symbol. (-1121)" in res.unpriceable
    assert "coinbase: SymbolNotListed: NotFound (HTTP 404)" in res.unpriceable
    assert "files: SymbolNotListed: no directory" in res.unpriceable
    assert res.requests == 2
    assert res.bars.empty and list(res.bars.columns) == list(empty_bars().columns)


def test_all_failed_is_an_error_not_unpriceable(fake_exchange, tmp_path):
    fake_exchange.inject("500", times=100)
    res = fetcher(fake_exchange, bars_dir=tmp_path).fetch_day("XRPUSDT", D(2024, 3, 5))
    assert res.unpriceable is None
    assert res.error is not None and "HTTP 500" in res.error and "files: SymbolNotListed" in res.error
    assert res.requests == 3 + 3


def test_418_bans_binance_for_the_rest_of_the_run(fake_exchange, caplog):
    fake_exchange.inject("418", api="binance")
    f = fetcher(fake_exchange)
    with caplog.at_level("ERROR"):
        first = f.fetch_day("BTCUSDT", D(2024, 3, 5))
    assert any("418" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    assert first.source == "coinbase"
    assert first.attempts[0].startswith("binance: SourceBanned")
    assert first.requests == 1 + 5
    second = f.fetch_day("ETHUSDT", D(2025, 10, 30))
    assert second.source == "coinbase"
    assert second.attempts[0].startswith("binance: skipped, banned earlier")
    assert second.requests == 5
    assert fake_exchange.count("binance") == 1  # never called again
    assert "binance" in f.banned


def test_failure_in_one_day_does_not_stick(fake_exchange):
    f = fetcher(fake_exchange)
    fake_exchange.inject("500", api="binance", times=3)
    assert f.fetch_day("BTCUSDT", D(2024, 3, 5)).source == "coinbase"
    assert f.fetch_day("BTCUSDT", D(2024, 3, 6)).source == "binance"


# ---------------------------------------------------------------------------------- today and future
def test_today_is_fetched_up_to_now_only(fake_exchange):
    now = ts("2025-10-31 12:34:56")
    res = fetcher(fake_exchange, now=lambda: now).fetch_day("BTCUSDT", D(2025, 10, 31))
    assert res.source == "binance"
    assert res.expected_bars == res.present_bars == 12 * 60 + 35  # 00:00 … 12:34 (the forming bar's open)
    assert res.bars["open_time"].iloc[-1] == ts("2025-10-31 12:34")
    assert res.gaps == [] and not res.complete
    assert res.requests == 1
    (req,) = fake_exchange.requests("binance")
    assert int(req.params["endTime"]) == ts("2025-10-31 12:35").value // 1_000_000 - 1
    assert res.fetched_at == now


def test_future_day_makes_no_request(fake_exchange):
    res = fetcher(fake_exchange, now=lambda: ts("2025-10-30 23:59:59")).fetch_day("BTCUSDT", D(2025, 10, 31))
    assert fake_exchange.count() == 0 and res.requests == 0
    assert res.source is None and res.error is None and res.unpriceable is None
    assert res.expected_bars == 0 and res.present_bars == 0 and res.gaps == [] and not res.complete


def test_first_day_of_the_data_reports_the_leading_gap(fake_exchange):
    res = fetcher(fake_exchange).fetch_day("BTCUSDT", D(2025, 10, 29))
    assert res.source == "binance" and res.present_bars == 1178
    assert res.gaps == [(ts("2025-10-29 00:00"), ts("2025-10-29 04:22"))]
    assert not res.complete


# ------------------------------------------------------------------------------------------ DayFetch
def _bars(times: list[str]) -> pd.DataFrame:
    ns = pd.DatetimeIndex([ts(t) for t in times]).as_unit("ns").asi8
    one = [1.0] * len(times)
    return make_bars("BTCUSDT", ns, one, one, one, one, one, source="binance")


def test_dayfetch_properties():
    day = D(2024, 3, 5)
    past = DayFetch(
        "BTCUSDT",
        day,
        _bars(["2024-03-05 00:01", "2024-03-05 00:02"]),
        "binance",
        fetched_at=ts("2024-03-07"),
    )
    assert past.expected_bars == 1440 and past.present_bars == 2 and not past.complete
    assert past.gaps == [
        (ts("2024-03-05 00:00"), ts("2024-03-05 00:01")),
        (ts("2024-03-05 00:03"), ts("2024-03-06")),
    ]

    today = DayFetch(
        "BTCUSDT",
        day,
        _bars(["2024-03-05 00:00", "2024-03-05 00:01", "2024-03-05 00:02"]),
        "binance",
        fetched_at=ts("2024-03-05 00:02:10"),
    )
    assert today.expected_bars == 3 and today.present_bars == 3 and today.gaps == []
    assert not today.complete  # the day has not ended

    at_midnight = DayFetch("BTCUSDT", day, empty_bars(), None, fetched_at=ts("2024-03-05 00:00"))
    assert at_midnight.expected_bars == 1
    assert at_midnight.gaps == [(ts("2024-03-05 00:00"), ts("2024-03-05 00:01"))]

    full_times = [str(t) for t in pd.date_range(ts("2024-03-05"), periods=1440, freq="min")]
    full = DayFetch("BTCUSDT", day, _bars(full_times), "binance", fetched_at=ts("2024-03-06"))
    assert full.complete and full.gaps == [] and full.missing_bars == 0
    assert full.summary()["complete"] is True


def test_dayfetch_naive_fetched_at_is_utc():
    res = DayFetch("BTCUSDT", D(2024, 3, 5), fetched_at=pd.Timestamp("2024-03-05 06:00"))
    assert str(res.fetched_at.tz) == "UTC" and res.expected_bars == 361


# ------------------------------------------------------------------------------------- build_sources
def test_build_sources(tmp_path):
    srcs = build_sources(
        ["files", "coinbase", "binance"],
        binance_base_url="http://127.0.0.1:9/b",
        coinbase_base_url="http://127.0.0.1:9/c",
        bars_dir=tmp_path,
        max_retries=1,
    )
    assert [s.name for s in srcs] == ["files", "coinbase", "binance"]
    assert isinstance(srcs[0], FileSource) and isinstance(srcs[1], CoinbaseSource)
    assert isinstance(srcs[2], BinanceSource) and srcs[2].base_url == "http://127.0.0.1:9/b"
    assert all(s.requests_made == 0 for s in srcs)
    assert all(isinstance(s, PriceSource) for s in srcs)
    assert [
        s.name
        for s in build_sources(
            " Binance, coinbase ", binance_base_url="http://x", coinbase_base_url="http://y"
        )
    ] == [
        "binance",
        "coinbase",
    ]
    with pytest.raises(ValueError, match="kraken"):
        build_sources(["binance", "kraken"])
    with pytest.raises(ValueError, match="bars_dir"):
        build_sources(["files"])
    with pytest.raises(ValueError, match="repeated"):
        build_sources(["binance", "binance"])


def test_build_sources_does_not_read_the_environment(monkeypatch):
    """Configuration is read once, in meta_pipeline.settings; build_sources takes what it is given."""
    monkeypatch.setenv("BINANCE_BASE_URL", "http://127.0.0.1:1/binance")
    monkeypatch.setenv("COINBASE_BASE_URL", "http://127.0.0.1:1/coinbase/")
    b, c = build_sources(["binance", "coinbase"])
    assert b.base_url == DEFAULT_BINANCE_BASE_URL == "https://api.binance.com"
    assert c.base_url == DEFAULT_COINBASE_BASE_URL == "https://api.exchange.coinbase.com"
    b, c = build_sources("binance,coinbase", binance_base_url=None, coinbase_base_url=None)
    assert (b.base_url, c.base_url) == (DEFAULT_BINANCE_BASE_URL, DEFAULT_COINBASE_BASE_URL)
    b, c = build_sources("binance,coinbase", binance_base_url="http://b/", coinbase_base_url="http://c")
    assert (b.base_url, c.base_url) == ("http://b", "http://c")


def test_build_sources_source_has_no_environ_lookup():
    import inspect

    from meta_pipeline.prices import fetcher as fetcher_module

    text = inspect.getsource(fetcher_module)
    assert "os.environ" not in text and "getenv" not in text and "import os" not in text


def test_parse_source_names():
    assert parse_source_names(" Binance, COINBASE ,files") == ("binance", "coinbase", "files")
    assert parse_source_names(["coinbase", " binance "]) == ("coinbase", "binance")
    assert parse_source_names("binance,") == ("binance",)  # a trailing comma is harmless
    assert SOURCE_NAMES == ("binance", "coinbase", "files")
    with pytest.raises(
        ValueError, match=r"unknown price source name\(s\) \['kraken', 'ftx'\].*binance, coinbase, files"
    ):
        parse_source_names("binance,kraken,ftx")
    with pytest.raises(ValueError, match=r"repeated.*\['binance'\]"):
        parse_source_names(["binance", "Binance"])
    with pytest.raises(ValueError, match="no price source named.*binance, coinbase, files"):
        parse_source_names(" , ")
    with pytest.raises(ValueError, match="no price source named"):
        parse_source_names([])
    with pytest.raises(ValueError, match="must be strings"):
        parse_source_names(["binance", None])
