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
