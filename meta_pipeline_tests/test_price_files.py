"""FileSource and read_kline_csv on the real collector file and the real daily dumps."""

from __future__ import annotations

import datetime as dt
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from meta_pipeline.prices import (
    BAR_COLUMNS,
    FileSource,
    PriceFetcher,
    PriceSourceError,
    SymbolNotListed,
    read_kline_csv,
)
from meta_pipeline_tests.fake_exchange import MARKET_DATA_DIR

RAW = MARKET_DATA_DIR / "raw_BTCUSDT-1m-2024-03-01_2024-03-22_as_collected.csv"
OHLCV = ["open_time", "open", "high", "low", "close", "volume"]


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def same_bars(got: pd.DataFrame, want: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got[OHLCV].reset_index(drop=True), want[OHLCV].reset_index(drop=True))


@pytest.fixture(scope="module")
def collector_dir(tmp_path_factory) -> Path:
    """The raw collector file split per UTC day as daily dumps, header kept on every file, duplicates and
    re-written candles kept in their original order."""
    root = tmp_path_factory.mktemp("bars")
    lines = RAW.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    by_day: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        day = pd.Timestamp(int(row.split(",", 1)[0]), unit="ms", tz="UTC").strftime("%Y-%m-%d")
        by_day[day].append(row)
    (root / "BTCUSDT").mkdir()
    for day, day_rows in by_day.items():
        (root / "BTCUSDT" / f"BTCUSDT-1m-{day}.csv").write_text("\n".join([header, *day_rows]) + "\n")
    return root


def test_collector_layout_really_has_the_faults(collector_dir):
    text = (collector_dir / "BTCUSDT" / "BTCUSDT-1m-2024-03-01.csv").read_text().splitlines()
    assert text[0].startswith("timestamp,")
    times = [r.split(",", 1)[0] for r in text[1:]]
    assert len(times) > len(set(times)) == 1440  # page-boundary duplicates are in there


def test_file_source_equals_deduplicated_daily_files(collector_dir):
    src = FileSource(collector_dir)
    fetcher = PriceFetcher([src], now=lambda: ts("2024-03-23"))
    for day in pd.date_range("2024-03-01", "2024-03-21", freq="D").date:
        res = fetcher.fetch_day("BTCUSDT", day)
        want = read_kline_csv(MARKET_DATA_DIR / "BTCUSDT" / f"BTCUSDT-1m-{day:%Y-%m-%d}.csv")
        assert res.source == "files" and res.complete, (day, res.attempts)
        same_bars(res.bars, want)
    assert src.requests_made == 0


def test_later_row_wins_for_rewritten_candles(collector_dir):
    raw = pd.read_csv(RAW)
    dup = raw[raw.duplicated("timestamp", keep=False)]
    rewritten = dup.groupby("timestamp").filter(lambda g: len(g.drop_duplicates()) > 1)
    assert rewritten["timestamp"].nunique() == 24
    last = rewritten.drop_duplicates("timestamp", keep="last").set_index("timestamp")
    got = FileSource(collector_dir).fetch_bars("BTCUSDT", ts("2024-03-01"), ts("2024-03-23"))
    got = got.set_index(got["open_time"].astype("datetime64[ns, UTC]").astype("int64") // 1_000_000)
    for t, row in last.iterrows():
        assert (
            got.loc[t, ["open", "high", "low", "close", "volume"]].tolist()
            == row[["open", "high", "low", "close", "volume"]].tolist()
        )


def test_read_kline_csv_handles_header_and_extra_columns(tmp_path):
    src = MARKET_DATA_DIR / "BTCUSDT" / "BTCUSDT-1m-2025-10-30.csv"  # 12 columns, no header
    plain = read_kline_csv(src)
    assert list(plain.columns) == BAR_COLUMNS
    assert plain["instrument"].iloc[0] == "BTCUSDT" and len(plain) == 1440
    with_header = tmp_path / "x.csv"
    with_header.write_text(
        "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
        "taker_buy_quote_volume,ignore\n" + src.read_text()
    )
    same_bars(read_kline_csv(with_header, instrument="BTCUSDT"), plain)


def test_microsecond_timestamps(tmp_path):
    src = MARKET_DATA_DIR / "ETHUSDT" / "ETHUSDT-1m-2025-10-30.csv"
    rows = []
    for line in src.read_text().splitlines():
        f = line.split(",")
        f[0] = str(int(f[0]) * 1000)
        f[6] = str(int(f[6]) * 1000 + 999)
        rows.append(",".join(f))
    (tmp_path / "ETHUSDT").mkdir()
    (tmp_path / "ETHUSDT" / "ETHUSDT-1m-2025-10-30.csv").write_text("\n".join(rows) + "\n")
    got = FileSource(tmp_path).fetch_bars("ETHUSDT", ts("2025-10-30"), ts("2025-10-31"))
    same_bars(got, read_kline_csv(src))
    assert got["open_time"].iloc[0] == ts("2025-10-30") and len(got) == 1440


def test_missing_day_and_missing_symbol(tmp_path):
    (tmp_path / "BTCUSDT").mkdir()
    shutil.copy(MARKET_DATA_DIR / "BTCUSDT" / "BTCUSDT-1m-2024-03-02.csv", tmp_path / "BTCUSDT")
    src = FileSource(tmp_path)
    with pytest.raises(PriceSourceError, match="no day file") as info:
        src.fetch_bars("BTCUSDT", ts("2024-03-01"), ts("2024-03-02"))
    assert not isinstance(info.value, SymbolNotListed)
    with pytest.raises(SymbolNotListed):
        src.fetch_bars("ETHUSDT", ts("2024-03-01"), ts("2024-03-02"))
    # a range over several days returns the days that exist
    got = src.fetch_bars("BTCUSDT", ts("2024-03-01 12:00"), ts("2024-03-03"))
    assert len(got) == 1440 and got["open_time"].dt.date.unique().tolist() == [dt.date(2024, 3, 2)]


def test_unreadable_file_is_a_source_error(tmp_path):
    (tmp_path / "BTCUSDT").mkdir()
    (tmp_path / "BTCUSDT" / "BTCUSDT-1m-2024-03-01.csv").write_text("1709251200000,1,2\n")
    with pytest.raises(PriceSourceError, match="cannot read"):
        FileSource(tmp_path).fetch_bars("BTCUSDT", ts("2024-03-01"), ts("2024-03-02"))


def test_empty_file_means_no_bars(tmp_path):
    (tmp_path / "BTCUSDT").mkdir()
    (tmp_path / "BTCUSDT" / "BTCUSDT-1m-2024-03-01.csv").write_text("")
    res = PriceFetcher([FileSource(tmp_path)], now=lambda: ts("2024-04-01")).fetch_day(
        "BTCUSDT", dt.date(2024, 3, 1)
    )
    assert res.source is None and res.error == "no source supplied bars: files: no bars"


def test_read_all_committed_daily_files_are_clean():
    for path in sorted(MARKET_DATA_DIR.glob("*/*-1m-*.csv")):
        df = read_kline_csv(path)
        n_lines = sum(1 for _ in path.open())
        assert len(df) == n_lines, path
        assert (np.diff(df["open_time"].astype("int64")) == 60_000_000_000).all(), path
