"""When a stored symbol-day is settled, and what the reconciliation may assume about stored bars."""

from datetime import date

import pandas as pd
import pytest

from meta_pipeline import price_store

DAY = date(2024, 3, 5)
END = pd.Timestamp("2024-03-06", tz="UTC")


def entry(fetched_at, *, complete=False, source="binance", error=None, unpriceable=None):
    return {
        "cache_version": price_store.CACHE_VERSION,
        "fetched_at": pd.Timestamp(fetched_at, tz="UTC").isoformat(),
        "complete": complete,
        "source": source,
        "error": error,
        "unpriceable": unpriceable,
    }


@pytest.mark.parametrize(
    ("stored", "final"),
    [
        (None, False),
        (entry("2024-03-06 00:00:01", complete=True), True),
        (entry("2024-03-05 12:00", complete=False), False),  # fetched during the day
        (entry("2024-03-06 01:00", complete=False), False),  # gap, too soon to accept it
        (entry("2024-03-07 00:00", complete=False), True),  # gap still there 24h after the day ended
        (entry("2024-03-09", source=None, error="HTTP 500"), False),  # failures are always retried
        (entry("2024-03-06 00:10", source=None, unpriceable="Invalid symbol"), True),
        (entry("2024-03-05 10:00", source=None, unpriceable="Invalid symbol"), False),  # listed later today?
    ],
)
def test_is_final(stored, final):
    assert price_store.is_final(stored, DAY) is final


def test_an_entry_of_an_older_cache_version_or_with_missing_bars_is_not_final():
    settled = entry("2024-03-06 00:00:01", complete=True) | {"present_bars": 1440}
    assert price_store.is_final(settled, DAY, stored_rows=1440)
    assert not price_store.is_final(settled, DAY, stored_rows=0)  # the record says 1440, none stored
    assert not price_store.is_final(settled | {"cache_version": 1}, DAY, stored_rows=1440)
    assert not price_store.is_final({k: v for k, v in settled.items() if k != "cache_version"}, DAY)


def test_coverage_walks_consecutive_days_until_the_first_not_fully_known():
    days = price_store.window(DAY, 2)
    sidecars = {
        days[0]: {
            "BTCUSDT": entry("2024-03-08", complete=True),
            "ETHUSDT": entry("2024-03-08", complete=True),
            "FOOUSDT": entry("2024-03-08", source=None, unpriceable="Invalid symbol (-1121)"),
        },
        days[1]: {
            "BTCUSDT": entry("2024-03-06 13:30"),
            "ETHUSDT": entry("2024-03-08", source=None, error="HTTP 503"),
        },
        days[2]: None,
    }
    cover = price_store.coverage(["BTCUSDT", "ETHUSDT", "FOOUSDT", "SOLUSDT"], days, sidecars)
    assert cover.known_until["BTCUSDT"] == pd.Timestamp("2024-03-06 13:30", tz="UTC")  # fetched mid-day
    assert cover.known_until["ETHUSDT"] == END  # day 2 failed: known through day 1 only
    assert cover.blocked["ETHUSDT"][1].startswith("price source failure on 2024-03-06: HTTP 503")
    assert cover.unpriceable == {"FOOUSDT": "unknown symbol: Invalid symbol (-1121)"}
    assert cover.known_until["SOLUSDT"] == pd.Timestamp(DAY.isoformat(), tz="UTC")
    assert "has no SOLUSDT bars yet" in cover.blocked["SOLUSDT"][1]
    assert "BTCUSDT" not in cover.blocked


def test_coverage_of_a_day_never_materialized():
    days = price_store.window(DAY, 1)
    cover = price_store.coverage(
        ["BTCUSDT"], days, {days[0]: {"BTCUSDT": entry("2024-03-08", complete=True)}}
    )
    assert cover.known_until["BTCUSDT"] == END
    assert cover.blocked["BTCUSDT"][1] == "price_bars for 2024-03-06 not materialized yet"


# --------------------------------------------------------------------------- refresh_day, without Dagster


def _fetch(bars_by_instrument, *, error=None, fetched_at="2024-03-07"):
    from meta_pipeline.prices.model import DayFetch

    calls = []

    def fetch_day(instrument, day):
        calls.append(instrument)
        bars = bars_by_instrument.get(instrument)
        return DayFetch(
            instrument,
            day,
            bars=bars if bars is not None and not error else DayFetch(instrument, day).bars,
            source=None if error else "binance",
            error=error,
            fetched_at=pd.Timestamp(fetched_at, tz="UTC"),
        )

    return fetch_day, calls


def _day_bars(instrument, minutes=1440):
    from meta_pipeline.prices.model import make_bars

    times = pd.date_range(DAY.isoformat(), periods=minutes, freq="min", tz="UTC").as_unit("ns").asi8
    ones = [1.0] * minutes
    return make_bars(instrument, times, ones, ones, ones, ones, ones, source="binance")


def test_refresh_day_fetches_what_is_not_settled_and_keeps_what_is():
    fetch_day, calls = _fetch({"BTCUSDT": _day_bars("BTCUSDT"), "ETHUSDT": _day_bars("ETHUSDT")})
    first = price_store.refresh_day(DAY, ["BTCUSDT", "ETHUSDT"], None, None, fetch_day)
    assert calls == ["BTCUSDT", "ETHUSDT"] and len(first.bars) == 2880
    assert all(
        e["complete"] and e["cache_version"] == price_store.CACHE_VERSION for e in first.sidecar.values()
    )

    again = price_store.refresh_day(DAY, ["BTCUSDT", "ETHUSDT"], first.bars, first.sidecar, fetch_day)
    assert calls == ["BTCUSDT", "ETHUSDT"]  # both settled: no new fetch
    assert [r["action"] for r in again.report] == [price_store.CACHED] * 2


def test_refresh_day_keeps_stored_bars_when_the_refetch_fails_and_carries_unrequested_instruments():
    fetch_day, _ = _fetch({"BTCUSDT": _day_bars("BTCUSDT", 720)}, fetched_at="2024-03-05T12:00")
    partial = price_store.refresh_day(DAY, ["BTCUSDT", "ETHUSDT"], None, None, fetch_day)
    failing, calls = _fetch({}, error="HTTP 500")
    kept = price_store.refresh_day(DAY, ["BTCUSDT"], partial.bars, partial.sidecar, failing)
    assert calls == ["BTCUSDT"]
    assert kept.report[0]["action"] == price_store.KEPT and kept.report[0]["problem"] == "HTTP 500"
    assert len(kept.bars) == 720 and kept.sidecar["BTCUSDT"] == partial.sidecar["BTCUSDT"]
    assert kept.sidecar["ETHUSDT"] == partial.sidecar["ETHUSDT"]  # not asked for now, still stored
