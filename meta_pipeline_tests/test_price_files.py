"""FileSource and read_kline_csv on the real collector file and the real daily dumps."""

from __future__ import annotations

import datetime as dt
import re
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
    read_kline_csv_checked,
    read_kline_rows,
)
from meta_pipeline.prices.model import empty_bars, epoch_to_ns, make_bars, validate_bars
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


# ------------------------------------------------------------------- the pyarrow reader against the old one
_OLD_NUMBER = re.compile(r"^\s*[-+]?\d+(\.\d*)?([eE][-+]?\d+)?\s*$")
_OLD_DUMP_NAME = re.compile(r"^([A-Z0-9]+)-1m-\d{4}-\d{2}-\d{2}")


def old_read_kline_rows(path, *, instrument=None, source="files") -> pd.DataFrame:
    """The reference: ``read_kline_rows`` as it was before the pyarrow reader (pandas.read_csv), verbatim."""
    path = Path(path)
    if instrument is None:
        m = _OLD_DUMP_NAME.match(path.name)
        instrument = m.group(1) if m else ""
    if path.stat().st_size == 0:
        return empty_bars()
    with path.open("r", encoding="utf-8-sig") as fh:
        first = fh.readline()
        header = bool(first.strip()) and not _OLD_NUMBER.match(first.split(",", 1)[0])
        data = fh.readline() if header else first
    n_fields = len(data.split(",")) if data.strip() else 0
    with_trades = n_fields > 8
    cols = list(range(6)) + ([8] if with_trades else [])
    try:
        raw = pd.read_csv(
            path,
            header=None,
            skiprows=1 if header else 0,
            usecols=cols,
            dtype={0: np.int64, **{i: np.float64 for i in cols[1:]}},
            encoding="utf-8-sig",
        )
    except pd.errors.EmptyDataError:
        return empty_bars()
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a Binance kline CSV ({exc})") from exc
    return make_bars(
        instrument,
        epoch_to_ns(raw[0].to_numpy()),
        *(raw[i].to_numpy() for i in range(1, 6)),
        source=source,
        trades=raw[8].to_numpy() if with_trades else np.full(len(raw), np.nan),
    )


def old_read_kline_csv_checked(path, *, instrument=None, source="files", start=None, end=None):
    return validate_bars(
        old_read_kline_rows(path, instrument=instrument, source=source), start, end, duplicates="last"
    )


def outcome(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # the same exception, with the same message, is the same behaviour
        return exc


def assert_same_outcome(got, want) -> None:
    if isinstance(want, Exception) or isinstance(got, Exception):
        assert type(got) is type(want) and str(got) == str(want), (got, want)
        return
    if isinstance(want, tuple):
        pd.testing.assert_frame_equal(got[0], want[0], check_exact=True)
        assert got[1] == want[1]
    else:
        pd.testing.assert_frame_equal(got, want, check_exact=True)


def assert_reads_like_before(path: Path, **kwargs) -> None:
    """Rows, checked bars, reject counts and errors exactly as the pandas reader + validate_bars gave,
    whole file and with bounds (one that cuts the file, one around a single minute, one past its end)."""
    want_rows = outcome(old_read_kline_rows, path, **kwargs)
    assert_same_outcome(outcome(read_kline_rows, path, **kwargs), want_rows)
    bounds = [(None, None), (ts("2030-01-01"), None), (None, ts("2000-01-01"))]
    if not isinstance(want_rows, Exception) and len(want_rows):
        t = want_rows["open_time"].sort_values().reset_index(drop=True)
        mid = t[len(t) // 2]
        bounds += [
            (mid, None),
            (None, mid),
            (t[0], t[0] + pd.Timedelta(minutes=1)),
            (mid.floor("h"), mid.ceil("h")),
        ]
    for start, end in bounds:
        assert_same_outcome(
            outcome(read_kline_csv_checked, path, start=start, end=end, **kwargs),
            outcome(old_read_kline_csv_checked, path, start=start, end=end, **kwargs),
        )
    want = outcome(old_read_kline_csv_checked, path, **kwargs)
    assert_same_outcome(
        outcome(read_kline_csv, path, **kwargs), want if isinstance(want, Exception) else want[0]
    )


COMMITTED = sorted(MARKET_DATA_DIR.glob("*/*-1m-*.csv"))


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_committed_day_files_read_exactly_as_before(path):
    assert_reads_like_before(path)
    assert_reads_like_before(path, instrument="XUSDT", source="mirror")


def test_collector_files_read_exactly_as_before(collector_dir):
    """Header rows, page-boundary duplicates and re-written candles (the later row wins)."""
    assert_reads_like_before(RAW, instrument="BTCUSDT")
    for path in sorted((collector_dir / "BTCUSDT").glob("*.csv")):
        assert_reads_like_before(path)


DAY = (MARKET_DATA_DIR / "BTCUSDT" / "BTCUSDT-1m-2025-10-30.csv").read_text().splitlines()  # 12 columns
DAY7 = (MARKET_DATA_DIR / "BTCUSDT" / "BTCUSDT-1m-2024-03-02.csv").read_text().splitlines()  # 7 columns
HEADER = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,tbq,ignore"


def _field(line: str, i: int, value: str) -> str:
    f = line.split(",")
    f[i] = value
    return ",".join(f)


def _micro(line: str) -> str:
    return _field(line, 0, str(int(line.split(",", 1)[0]) * 1000))


VARIANTS: dict[str, str | bytes] = {
    "plain": "\n".join(DAY) + "\n",
    "seven_columns": "\n".join(DAY7) + "\n",
    "header": "\n".join([HEADER, *DAY]) + "\n",
    "header_seven_columns": "\n".join([HEADER, *DAY7]) + "\n",
    "bom_header": ("\ufeff" + "\n".join([HEADER, *DAY[:50]]) + "\n").encode("utf-8"),
    "bom_no_header": ("\ufeff" + "\n".join(DAY[:50]) + "\n").encode("utf-8"),
    "crlf": "\r\n".join(DAY[:50]) + "\r\n",
    "no_final_newline": "\n".join(DAY[:50]),
    "blank_lines": "\n" + "\n\n".join(DAY[:50]) + "\n\n\n",
    "microseconds": "\n".join(_micro(x) for x in DAY) + "\n",
    "mixed_ms_us": "\n".join(_micro(x) if i % 2 else x for i, x in enumerate(DAY[:50])) + "\n",
    "reversed": "\n".join(reversed(DAY[:50])) + "\n",
    "rewritten_minute": "\n".join([*DAY[:50], _field(DAY[10], 4, "1.0"), DAY[20]]) + "\n",
    "zero_trades": "\n".join([*DAY[:20], _field(DAY[20], 8, "0"), *DAY[21:50]]) + "\n",
    "zero_volume": "\n".join([*DAY7[:20], _field(DAY7[20], 5, "0"), *DAY7[21:50]]) + "\n",
    "negative_volume": "\n".join([*DAY7[:20], _field(DAY7[20], 5, "-1"), *DAY7[21:50]]) + "\n",
    "high_below_close": "\n".join([*DAY[:20], _field(DAY[20], 2, "1.0"), *DAY[21:50]]) + "\n",
    "low_above_high": "\n".join([*DAY[:20], _field(DAY[20], 3, "1e8"), *DAY[21:50]]) + "\n",
    "too_large": "\n".join([*DAY[:20], _field(_field(DAY[20], 2, "2e9"), 1, "2e9"), *DAY[21:50]]) + "\n",
    "non_positive": "\n".join([*DAY[:20], _field(DAY[20], 3, "0"), *DAY[21:50]]) + "\n",
    "off_minute": "\n".join(
        [*DAY[:20], _field(DAY[20], 0, str(int(DAY[20].split(",")[0]) + 14_800)), *DAY[21:50]]
    )
    + "\n",
    "empty_price": "\n".join([*DAY[:20], _field(DAY[20], 4, ""), *DAY[21:50]]) + "\n",
    "empty_trades": "\n".join([*DAY[:20], _field(DAY[20], 8, ""), *DAY[21:50]]) + "\n",
    "na_price": "\n".join([*DAY[:20], _field(DAY[20], 4, "NA"), *DAY[21:50]]) + "\n",
    "nan_price": "\n".join([*DAY[:20], _field(DAY[20], 4, "nan"), *DAY[21:50]]) + "\n",
    "inf_price": "\n".join([*DAY[:20], _field(DAY[20], 2, "inf"), *DAY[21:50]]) + "\n",
    "infinity_price": "\n".join([*DAY[:20], _field(DAY[20], 2, "Infinity"), *DAY[21:50]]) + "\n",
    "exponent_price": "\n".join([*DAY[:20], _field(DAY[20], 5, "1.5e2"), *DAY[21:50]]) + "\n",
    "plus_sign": "\n".join([*DAY[:20], _field(DAY[20], 0, "+" + DAY[20].split(",")[0]), *DAY[21:50]]) + "\n",
    "spaces": "\n".join([*DAY[:20], _field(DAY[20], 1, " " + DAY[20].split(",")[1] + " "), *DAY[21:50]])
    + "\n",
    "quoted": "\n".join([*DAY[:20], _field(DAY[20], 1, '"' + DAY[20].split(",")[1] + '"'), *DAY[21:50]])
    + "\n",
    "float_open_time": "\n".join([*DAY[:20], _field(DAY[20], 0, DAY[20].split(",")[0] + ".0"), *DAY[21:50]])
    + "\n",
    "empty_open_time": "\n".join([*DAY[:20], _field(DAY[20], 0, ""), *DAY[21:50]]) + "\n",
    "text_in_data": "\n".join([*DAY[:20], _field(DAY[20], 3, "oops"), *DAY[21:50]]) + "\n",
    "short_row": "\n".join([*DAY[:20], ",".join(DAY[20].split(",")[:7]), *DAY[21:50]]) + "\n",
    "long_row": "\n".join([*DAY7[:20], DAY7[20] + ",1,2,3,4,5", *DAY7[21:50]]) + "\n",
    "truncated_last_row": "\n".join([*DAY[:50], DAY[50][:20]]) + "\n",
    "three_columns": "1709251200000,1,2\n",
    "six_columns": "\n".join(",".join(x.split(",")[:6]) for x in DAY7[:50]) + "\n",
    "eight_columns": "\n".join(",".join(x.split(",")[:8]) for x in DAY[:50]) + "\n",
    "nine_columns": "\n".join(",".join(x.split(",")[:9]) for x in DAY[:50]) + "\n",
    "one_row": DAY[0] + "\n",
    "header_only": HEADER + "\n",
    "blank_only": "\n\n",
    "spaces_only": "   \n",
    "empty": "",
    "not_csv": "<html><body>404 Not Found</body></html>\n",
    "json": '{"code": -1121, "msg": "Invalid symbol."}\n',
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_file_variants_read_exactly_as_before(tmp_path, name):
    path = tmp_path / "BTCUSDT-1m-2025-10-30.csv"
    text = VARIANTS[name]
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    assert_reads_like_before(path)


def test_not_klines_names_the_path(tmp_path):
    path = tmp_path / "BTCUSDT-1m-2025-10-30.csv"
    for text in ("1709251200000,1,2\n", DAY[0] + "\n" + _field(DAY[1], 3, "x"), "a,b\n1,2\n"):
        path.write_text(text)
        with pytest.raises(ValueError, match=re.escape(str(path))):
            read_kline_csv(path)


def test_clean_day_files_take_the_fast_path(monkeypatch):
    """A clean dump is read by pyarrow and built without pandas.read_csv or validate_bars (the speed)."""
    import meta_pipeline.prices.files as files

    def refuse(*args, **kwargs):
        raise AssertionError("slow path taken")

    monkeypatch.setattr(files, "validate_bars", refuse)
    monkeypatch.setattr(files.pd, "read_csv", refuse)
    for path in COMMITTED:
        bars, counts = read_kline_csv_checked(path)
        assert counts == {} and len(bars) == len(read_kline_rows(path))


def test_frames_can_be_written_to_like_before():
    """pyarrow hands out read-only buffers; the frames must not be (callers edit them in place)."""
    path = MARKET_DATA_DIR / "ETHUSDT" / "ETHUSDT-1m-2025-10-30.csv"
    for df in (
        read_kline_rows(path),
        read_kline_csv(path),
        read_kline_csv_checked(path, start=ts("2025-10-30 01:00"))[0],
    ):
        df.loc[0, "open"] = 1.0
        df.iloc[1, df.columns.get_loc("high")] = 2.0
        df["volume"] *= 2
        df.loc[2, "open_time"] = ts("2020-01-01")
        df.loc[3, "instrument"] = "X"
        assert df.loc[0, "open"] == 1.0 and df.loc[3, "instrument"] == "X"


def test_float_parsing_matches_pandas(tmp_path):
    """pyarrow and pandas turn the same decimal text into the same float64 (random prices/volumes)."""
    rng = np.random.default_rng(7)
    n = 20_000
    digits = rng.integers(1, 18, n)
    mantissa = [str(int(rng.integers(1, 10**17)))[: int(d)] for d in digits]
    point = rng.integers(0, 18, n)
    values = [
        m if p >= len(m) else (m[:p] or "0") + "." + m[p:] for m, p in zip(mantissa, point, strict=True)
    ]
    base = int(DAY[0].split(",", 1)[0])
    lines = [f"{base + i * 60_000},{v},{v},{v},{v},{v},0" for i, v in enumerate(values)]
    path = tmp_path / "BTCUSDT-1m-2025-10-30.csv"
    path.write_text("\n".join(lines) + "\n")
    assert_reads_like_before(path)
