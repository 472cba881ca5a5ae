"""Impossible bars, off-minute bars, duplicate minutes and no-trade bars are dropped on arrival by every
source (binance, coinbase, files), counted on DayFetch, and their minutes are gaps; off-minute bars at
a Binance page boundary do not make the next real bar disappear."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meta_pipeline.prices import (
    BAR_COLUMNS,
    INVALID_REASONS,
    MAX_PRICE,
    NO_TRADE,
    REJECT_REASONS,
    BinanceSource,
    DayFetch,
    FileSource,
    PriceFetcher,
    build_sources,
    normalize_bars,
    read_kline_csv,
    read_kline_csv_checked,
    validate_bars,
)
from meta_pipeline.prices.model import MINUTE_NS, make_bars
from meta_pipeline_tests.bars_reference import reference_normalize_bars, reference_validate_bars
from meta_pipeline_tests.fake_exchange import MARKET_DATA_DIR, FakeExchange

FAST = {
    "timeout": (1.0, 0.5),
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


def fetch(fx: FakeExchange, names: str, instrument: str, day: dt.date, bars_dir=MARKET_DATA_DIR) -> DayFetch:
    sources = build_sources(
        names, binance_base_url=fx.binance_url, coinbase_base_url=fx.coinbase_url, bars_dir=bars_dir, **FAST
    )
    return PriceFetcher(sources, now=lambda: ts("2026-01-01")).fetch_day(instrument, day)


# ------------------------------------------------------------------------------ the bad bars of a day
BAD_MINUTES = [f"2024-03-05 10:{m:02d}" for m in range(10)]  # 10:00 … 10:09, one fault each
WANT_REJECTED = {
    "not_finite": 2,  # inf high, NaN open
    "non_positive": 2,  # open 0, negative low
    "too_large": 1,  # close 1e300
    "low_above_high": 1,
    "high_below_open_close": 1,
    "low_above_open_close": 1,
    "off_minute": 1,  # 10:08 stamped 10:08:14.8
    "duplicate_minute": 2,  # two different bars for 10:09
}


def corrupted_day() -> pd.DataFrame:
    """2024-03-05 with 10:00–10:09 broken in every way an exchange can break a bar."""
    df = day_file("BTCUSDT", "2024-03-05").copy()
    at = {t: df.index[df["open_time"] == ts(t)][0] for t in BAD_MINUTES}
    df.loc[at["2024-03-05 10:00"], "open"] = 0.0
    df.loc[at["2024-03-05 10:01"], "low"] = -1.0
    df.loc[at["2024-03-05 10:02"], ["close", "high"]] = 1e300
    df.loc[at["2024-03-05 10:03"], "high"] = np.inf
    df.loc[at["2024-03-05 10:04"], "open"] = np.nan
    r = at["2024-03-05 10:05"]
    df.loc[r, "high"] = max(df.loc[r, "open"], df.loc[r, "close"]) - 1.0  # high < max(open, close)
    r = at["2024-03-05 10:06"]
    df.loc[r, "low"] = min(df.loc[r, "open"], df.loc[r, "close"]) + 1.0  # low > min(open, close)
    r = at["2024-03-05 10:07"]
    df.loc[r, ["low", "high"]] = [df.loc[r, "high"] + 5.0, df.loc[r, "low"]]  # low > high
    df.loc[at["2024-03-05 10:08"], "open_time"] = ts("2024-03-05 10:08:14.8")
    twin = df.loc[[at["2024-03-05 10:09"]]].copy()
    twin[["open", "high", "low", "close"]] += 3.0  # a second, different bar for 10:09
    return pd.concat([df, twin], ignore_index=True).sort_values("open_time", kind="stable", ignore_index=True)


def assert_bad_minutes_are_a_gap(res: DayFetch, source: str) -> None:
    assert res.source == source and res.error is None, res.attempts
    assert res.rejected_bars == WANT_REJECTED
    assert res.no_trade_bars == 0
    assert res.present_bars == 1430 and not res.complete
    assert res.gaps == [(ts("2024-03-05 10:00"), ts("2024-03-05 10:10"))]
    prices = res.bars[["open", "high", "low", "close"]].to_numpy()
    assert np.isfinite(prices).all() and (prices > 0).all() and (prices <= MAX_PRICE).all()
    clean = day_file("BTCUSDT", "2024-03-05")
    clean = clean[~clean["open_time"].between(ts("2024-03-05 10:00"), ts("2024-03-05 10:09"))]
    pd.testing.assert_frame_equal(res.bars[OHLCV].reset_index(drop=True), clean[OHLCV].reset_index(drop=True))
    summary = res.summary()
    assert summary["rejected_bars"] == 11 and summary["no_trade_bars"] == 0
    assert "duplicate_minute 2" in summary["rejected_by_reason"]
    assert res.attempts == [f"{source}: ok, 1430 bars (dropped: {summary['rejected_by_reason']})"]


def test_binance_drops_and_counts_impossible_bars(fake_exchange):
    fake_exchange.add_bars(corrupted_day(), keep_duplicates=True)
    res = fetch(fake_exchange, "binance", "BTCUSDT", D(2024, 3, 5))
    assert_bad_minutes_are_a_gap(res, "binance")
    assert res.requests == 2


def test_coinbase_drops_and_counts_impossible_bars(fake_exchange):
    fake_exchange.add_bars(corrupted_day(), keep_duplicates=True)
    res = fetch(fake_exchange, "coinbase", "BTCUSDT", D(2024, 3, 5))
    assert_bad_minutes_are_a_gap(res, "coinbase")


def _write_dump(path, bars: pd.DataFrame, trades: np.ndarray | None = None) -> None:
    """A Binance-style dump: 12 columns when ``trades`` is given, else 7."""
    ms = bars["open_time"].astype("datetime64[ns, UTC]").astype("int64") // 1_000_000
    lines = []
    for i, (t, o, h, lo, c, v) in enumerate(
        zip(ms, bars["open"], bars["high"], bars["low"], bars["close"], bars["volume"], strict=True)
    ):
        row = [str(t), repr(o), repr(h), repr(lo), repr(c), repr(v), str(t + 59_999)]
        if trades is not None:
            row += ["0", str(int(trades[i])), "0", "0", "0"]
        lines.append(",".join(row))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def test_files_drop_and_count_impossible_bars_but_a_rewritten_minute_keeps_the_later_row(tmp_path):
    bars = corrupted_day()
    # the files source's own rule for a minute written twice: the later row wins, nothing is counted
    twin = bars.index[bars["open_time"] == ts("2024-03-05 10:09")]
    bars = bars.drop(twin[0]).reset_index(drop=True)
    forming = bars[bars["open_time"] == ts("2024-03-05 12:00")].copy()
    forming["high"] = forming["close"] = forming["open"]  # the forming candle, written first
    bars = pd.concat([forming, bars], ignore_index=True)
    _write_dump(tmp_path / "BTCUSDT" / "BTCUSDT-1m-2024-03-05.csv", bars)
    res = PriceFetcher([FileSource(tmp_path)], now=lambda: ts("2026-01-01")).fetch_day(
        "BTCUSDT", D(2024, 3, 5)
    )
    want = {**WANT_REJECTED}
    del want["duplicate_minute"]
    assert res.source == "files" and res.rejected_bars == want
    assert res.present_bars == 1431  # 10:09 (later row) is kept
    assert res.gaps == [(ts("2024-03-05 10:00"), ts("2024-03-05 10:09"))]
    final = day_file("BTCUSDT", "2024-03-05").set_index("open_time")
    got = res.bars.set_index("open_time")
    assert got.loc[ts("2024-03-05 12:00"), "close"] == final.loc[ts("2024-03-05 12:00"), "close"]
    assert got.loc[ts("2024-03-05 10:09"), "close"] == final.loc[ts("2024-03-05 10:09"), "close"] + 3.0


# ------------------------------------------------------------------------------------- no-trade bars
def idle_day(minutes: list[str], *, zero_volume: bool = True) -> pd.DataFrame:
    """2025-10-30 (real trade counts) with ``minutes`` idle, as Binance serves them: open = high = low =
    close = the last trade's price, volume 0, 0 trades (or only the trade count 0)."""
    df = day_file("BTCUSDT", "2025-10-30").copy()
    raw = pd.read_csv(MARKET_DATA_DIR / "BTCUSDT" / "BTCUSDT-1m-2025-10-30.csv", header=None)
    df["trades"] = raw[8].to_numpy(dtype=np.float64)
    assert (df["trades"] > 0).all()
    for t in minutes:
        r = df.index[df["open_time"] == ts(t)][0]
        last = df.loc[r - 1, "close"]
        if zero_volume:
            df.loc[r, ["open", "high", "low", "close", "volume"]] = [last, last, last, last, 0.0]
        df.loc[r, "trades"] = 0.0
    return df


IDLE = ["2025-10-30 03:00", "2025-10-30 03:01", "2025-10-30 17:30"]


def test_binance_idle_minutes_are_absent_not_prices(fake_exchange):
    fake_exchange.add_bars(idle_day(IDLE))
    res = fetch(fake_exchange, "binance", "BTCUSDT", D(2025, 10, 30))
    assert res.source == "binance" and res.no_trade_bars == 3 and res.rejected_bars == {}
    assert res.present_bars == 1437 and not res.complete
    assert res.gaps == [
        (ts("2025-10-30 03:00"), ts("2025-10-30 03:02")),
        (ts("2025-10-30 17:30"), ts("2025-10-30 17:31")),
    ]
    assert res.summary()["no_trade_bars"] == 3 and res.summary()["rejected_bars"] == 0
    assert res.attempts == ["binance: ok, 1437 bars (dropped: no_trade 3)"]


def test_binance_zero_trade_count_alone_means_no_trade(fake_exchange):
    fake_exchange.add_bars(idle_day(IDLE[:1], zero_volume=False))
    res = fetch(fake_exchange, "binance", "BTCUSDT", D(2025, 10, 30))
    assert res.no_trade_bars == 1 and res.present_bars == 1439


def test_a_day_of_idle_bars_is_not_a_day_of_prices(fake_exchange):
    all_minutes = [str(t) for t in pd.date_range(ts("2025-10-30"), periods=1440, freq="min")][1:]
    fake_exchange.add_bars(idle_day(all_minutes))
    res = fetch(fake_exchange, "binance", "BTCUSDT", D(2025, 10, 30))
    assert res.present_bars == 1 and res.no_trade_bars == 1439 and not res.complete


def test_coinbase_zero_volume_is_no_trade(fake_exchange):
    fake_exchange.add_bars(idle_day(IDLE))
    res = fetch(fake_exchange, "coinbase", "BTCUSDT", D(2025, 10, 30))
    assert res.source == "coinbase" and res.no_trade_bars == 3 and res.present_bars == 1437


def test_files_no_trade_rows_from_the_trade_count_and_the_volume(tmp_path):
    day = idle_day(IDLE[:2])
    day.loc[day["open_time"] == ts("2025-10-30 17:30"), "trades"] = 0.0  # volume, but 0 trades
    _write_dump(tmp_path / "BTCUSDT" / "BTCUSDT-1m-2025-10-30.csv", day, trades=day["trades"].to_numpy())
    bars, counts = read_kline_csv_checked(tmp_path / "BTCUSDT" / "BTCUSDT-1m-2025-10-30.csv")
    assert counts == {NO_TRADE: 3} and len(bars) == 1437 and list(bars.columns) == BAR_COLUMNS
    # a 7-column dump has no trade count: volume 0 alone says it
    _write_dump(tmp_path / "X" / "BTCUSDT" / "BTCUSDT-1m-2025-10-30.csv", day)
    res = PriceFetcher([FileSource(tmp_path / "X")], now=lambda: ts("2026-01-01")).fetch_day(
        "BTCUSDT", D(2025, 10, 30)
    )
    assert res.no_trade_bars == 2 and res.present_bars == 1438 and not res.complete


# ------------------------------------------------------------------------------- the page boundary
def test_off_minute_bars_at_a_page_boundary_do_not_hide_the_next_real_bar(fake_exchange):
    """16:00–16:39 stamped 14.8 s late: page 1 (1000 bars) ends at 16:39:14.8. Paging on from the last
    open + 1 min asked for 16:40:14.8 onwards and never saw the real 16:40:00 bar."""
    df = day_file("BTCUSDT", "2024-03-05").copy()
    late = df["open_time"].between(ts("2024-03-05 16:00"), ts("2024-03-05 16:39"))
    df.loc[late, "open_time"] += pd.Timedelta(milliseconds=14_800)
    fake_exchange.add_bars(df)
    res = fetch(fake_exchange, "binance", "BTCUSDT", D(2024, 3, 5))
    assert res.source == "binance"
    assert ts("2024-03-05 16:40") in set(res.bars["open_time"])
    assert res.gaps == [(ts("2024-03-05 16:00"), ts("2024-03-05 16:40"))]
    assert res.rejected_bars == {"off_minute": 40} and res.present_bars == 1400
    assert res.requests == 2
    starts = [int(r.params["startTime"]) for r in fake_exchange.requests("binance")]
    assert starts[1] == ts("2024-03-05 16:39:14.8").value // 1_000_000 + 1


@pytest.mark.parametrize("limit", [7, 60, 1000])
def test_off_minute_bars_straddling_many_page_boundaries(fake_exchange, limit):
    df = day_file("BTCUSDT", "2024-03-05").copy()
    late = df["open_time"].dt.minute % 5 == 4  # every fifth bar stamped 30 s late
    df.loc[late, "open_time"] += pd.Timedelta(seconds=30)
    fake_exchange.add_bars(df)
    src = BinanceSource(fake_exchange.binance_url, limit=limit, **FAST)
    bars, counts = src.fetch_validated("BTCUSDT", ts("2024-03-05"), ts("2024-03-06"))
    assert counts == {"off_minute": int(late.sum())}
    want = day_file("BTCUSDT", "2024-03-05")
    want = want[want["open_time"].dt.minute % 5 != 4]
    pd.testing.assert_frame_equal(bars[OHLCV].reset_index(drop=True), want[OHLCV].reset_index(drop=True))
    assert src.requests_made == -(-1440 // limit)


# ------------------------------------------------------------------------------------ validate_bars
def _one(open_=10.0, high=12.0, low=9.0, close=11.0, volume=1.0, t="2024-03-05 00:00", trades=None):
    ns = np.array([ts(t).value], dtype=np.int64)
    tr = None if trades is None else np.array([trades], dtype=np.float64)
    return make_bars("BTCUSDT", ns, [open_], [high], [low], [close], [volume], source="binance", trades=tr)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"open_": 0.0}, "non_positive"),
        ({"low": -9.0}, "non_positive"),
        ({"close": 1e300, "high": 1e300}, "too_large"),
        ({"high": MAX_PRICE * 1.01}, "too_large"),
        ({"high": np.inf}, "not_finite"),
        ({"close": np.nan}, "not_finite"),
        ({"low": -np.inf}, "not_finite"),
        ({"volume": np.nan}, "bad_volume"),
        ({"volume": -1.0}, "bad_volume"),
        ({"high": 10.5}, "high_below_open_close"),
        ({"low": 10.5}, "low_above_open_close"),
        ({"low": 13.0}, "low_above_high"),
        ({"t": "2024-03-05 16:00:14.8"}, "off_minute"),
        ({"t": "2024-03-05 16:00:00.001"}, "off_minute"),
        ({"volume": 0.0}, NO_TRADE),
        ({"trades": 0}, NO_TRADE),
    ],
)
def test_validate_bars_each_reason(kwargs, reason):
    good, counts = validate_bars(_one(**kwargs))
    assert good.empty and list(good.columns) == BAR_COLUMNS
    assert counts == {reason: 1}
    assert reason in REJECT_REASONS and (reason == NO_TRADE) != (reason in INVALID_REASONS)


def test_validate_bars_keeps_good_bars_and_handles_duplicates():
    ok, counts = validate_bars(_one(trades=5))
    assert len(ok) == 1 and counts == {} and list(ok.columns) == BAR_COLUMNS
    flat, counts = validate_bars(_one(10, 10, 10, 10, 0.5, trades=1))  # open = high = low = close, traded
    assert len(flat) == 1 and counts == {}
    pair = pd.concat([_one(), _one(close=11.5)], ignore_index=True)
    dropped, counts = validate_bars(pair)  # an API response: which one is right? neither
    assert dropped.empty and counts == {"duplicate_minute": 2}
    last, counts = validate_bars(pair, duplicates="last")  # a collector's file: the later row
    assert last["close"].tolist() == [11.5] and counts == {}
    bad_later = pd.concat([_one(), _one(open_=0.0)], ignore_index=True)
    gone, counts = validate_bars(bad_later, duplicates="last")  # the final row is broken: a gap
    assert gone.empty and counts == {"non_positive": 1}
    outside, counts = validate_bars(_one(open_=0.0), start=ts("2024-03-05 00:01"))
    assert outside.empty and counts == {}  # out of range: dropped without being counted
    with pytest.raises(ValueError, match="duplicates"):
        validate_bars(_one(), duplicates="first")


def test_a_source_without_its_own_checks_is_checked_by_the_fetcher():
    class Plain:
        name = "plain"
        requests_made = 0

        def fetch_bars(self, instrument, start, end):
            return pd.concat([_one(), _one(open_=-1.0, t="2024-03-05 00:01")], ignore_index=True)

    res = PriceFetcher([Plain()], now=lambda: ts("2026-01-01")).fetch_day("BTCUSDT", D(2024, 3, 5))
    assert res.source == "plain" and res.present_bars == 1 and res.rejected_bars == {"non_positive": 1}


def test_a_source_sending_only_impossible_bars_hands_over(fake_exchange):
    df = day_file("BTCUSDT", "2024-03-05").copy()
    df["open"] = 0.0
    fake_exchange.add_bars(df)
    fake_exchange.delist("BTCUSDT", api="coinbase")
    res = fetch(fake_exchange, "binance,coinbase,files", "BTCUSDT", D(2024, 3, 5))
    assert res.attempts[0] == "binance: no bars (dropped: non_positive 1440)"
    assert res.source == "files" and res.complete and res.rejected_bars == {}


# ------------------------------------------------ the column-pass implementation equals the pandas one
_T0 = pd.Timestamp("2024-03-01", tz="UTC").value


@st.composite
def _bar_frames(draw):
    n = draw(st.integers(1, 40))
    price = st.one_of(
        st.floats(1.0, 2.0), st.sampled_from([0.0, -1.0, np.nan, np.inf, 2e9]), st.floats(0.5, 3.0)
    )
    minutes = draw(st.lists(st.integers(0, 12), min_size=n, max_size=n))
    off = draw(st.lists(st.sampled_from([0, 0, 0, 0, 14_800_000_000]), min_size=n, max_size=n))
    cols = {k: draw(st.lists(price, min_size=n, max_size=n)) for k in ("open", "high", "low", "close")}
    volume = draw(st.lists(st.sampled_from([0.0, 1.0, 2.5, -1.0, np.nan]), min_size=n, max_size=n))
    df = pd.DataFrame(
        {
            "instrument": pd.Series(
                draw(st.lists(st.sampled_from(["BTCUSDT", "ETHUSDT", "AAVEUSDT"]), min_size=n, max_size=n))
                if draw(st.booleans())
                else ["BTCUSDT"] * n,
                dtype=str,
            ),
            "open_time": pd.to_datetime(
                [_T0 + m * MINUTE_NS + o for m, o in zip(minutes, off, strict=True)], unit="ns", utc=True
            ),
            **cols,
            "volume": volume,
            "source": pd.Series(
                draw(st.lists(st.sampled_from(["binance", "files"]), min_size=n, max_size=n)), dtype=str
            ),
        }
    )
    if draw(st.booleans()):
        df["trades"] = draw(st.lists(st.sampled_from([np.nan, 0.0, 3.0]), min_size=n, max_size=n))
    if draw(st.booleans()):  # a frame with a non-default index, as a filtered frame has
        df.index = df.index * 3 + 7
    return df


_window = st.sampled_from(
    [None, pd.Timestamp(_T0 + 2 * MINUTE_NS, tz="UTC"), pd.Timestamp(_T0 + 9 * MINUTE_NS + 1, tz="UTC")]
)


@settings(max_examples=400, deadline=None)
@given(df=_bar_frames(), start=_window, end=_window, duplicates=st.sampled_from(["drop", "last"]))
def test_validate_bars_matches_the_pandas_reference(df, start, end, duplicates):
    got, got_counts = validate_bars(df, start, end, duplicates=duplicates)
    want, want_counts = reference_validate_bars(df, start, end, duplicates=duplicates)
    assert got_counts == want_counts
    pd.testing.assert_frame_equal(got, want)


@settings(max_examples=400, deadline=None)
@given(df=_bar_frames(), start=_window, end=_window)
def test_normalize_bars_matches_the_pandas_reference(df, start, end):
    pd.testing.assert_frame_equal(normalize_bars(df, start, end), reference_normalize_bars(df, start, end))
