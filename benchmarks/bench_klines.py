#!/usr/bin/env python
"""Kline dump reading benchmark: every committed day file under meta_pipeline_tests/klines, read 20 times.

    python benchmarks/bench_klines.py [--rounds 20] [--repeats 5]

Prints milliseconds per day file for
- ``pyarrow.csv.read_csv`` on the file (all columns, defaults): the floor;
- ``read_kline_csv`` (read + de-duplicate + validate, what ``FileSource`` does per day) and
  ``read_kline_rows`` (read only), each before (the pandas implementation, copied below as it was)
  and after (``meta_pipeline.prices.files``).

Each figure is the best of 5 interleaved repeats (the least disturbed by other load on the machine).
The before and after frames are compared on every file first (they must be equal).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.csv as pa_csv

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from meta_pipeline.prices.files import read_kline_csv, read_kline_rows  # noqa: E402
from meta_pipeline.prices.model import empty_bars, epoch_to_ns, make_bars, validate_bars  # noqa: E402

KLINES = ROOT / "meta_pipeline_tests" / "klines"


# ------------------------------------------------- the implementation before (pandas.read_csv), verbatim
_NUMBER = re.compile(r"^\s*[-+]?\d+(\.\d*)?([eE][-+]?\d+)?\s*$")
_DUMP_NAME = re.compile(r"^([A-Z0-9]+)-1m-\d{4}-\d{2}-\d{2}")
TRADE_COUNT_FIELD = 8


def _old_layout(path: Path) -> tuple[bool, int]:
    with path.open("r", encoding="utf-8-sig") as fh:
        first = fh.readline()
        header = bool(first.strip()) and not _NUMBER.match(first.split(",", 1)[0])
        data = fh.readline() if header else first
    return header, len(data.split(",")) if data.strip() else 0


def old_read_kline_rows(
    path: str | Path, *, instrument: str | None = None, source: str = "files"
) -> pd.DataFrame:
    path = Path(path)
    if instrument is None:
        m = _DUMP_NAME.match(path.name)
        instrument = m.group(1) if m else ""
    if path.stat().st_size == 0:
        return empty_bars()
    header, n_fields = _old_layout(path)
    with_trades = n_fields > TRADE_COUNT_FIELD
    cols = list(range(6)) + ([TRADE_COUNT_FIELD] if with_trades else [])
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
        trades=raw[TRADE_COUNT_FIELD].to_numpy() if with_trades else np.full(len(raw), np.nan),
    )


def old_read_kline_csv(
    path: str | Path, *, instrument: str | None = None, source: str = "files"
) -> pd.DataFrame:
    rows = old_read_kline_rows(path, instrument=instrument, source=source)
    return validate_bars(rows, None, None, duplicates="last")[0]


# ------------------------------------------------------------------------------------------- benchmark
def timed(fn: Callable[[Path], object], files: list[Path], rounds: int) -> float:
    """Milliseconds per file for ``rounds`` reads of every file."""
    t0 = time.perf_counter()
    for _ in range(rounds):
        for path in files:
            fn(path)
    return (time.perf_counter() - t0) / (rounds * len(files)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="reads of every file per repeat (20)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats, the best one counts (5)")
    args = parser.parse_args()
    files = sorted(KLINES.glob("*/*-1m-*.csv"))
    rows = sum(len(old_read_kline_rows(p)) for p in files)
    print(
        f"{len(files)} day files, {rows} rows; every file read {args.rounds} times, best of {args.repeats} repeats"
    )

    for path in files:  # the frames must not change
        pd.testing.assert_frame_equal(read_kline_rows(path), old_read_kline_rows(path), check_exact=True)
        pd.testing.assert_frame_equal(read_kline_csv(path), old_read_kline_csv(path), check_exact=True)

    cases = {
        "floor": pa_csv.read_csv,
        "read_kline_csv before": old_read_kline_csv,
        "read_kline_csv after": read_kline_csv,
        "read_kline_rows before": old_read_kline_rows,
        "read_kline_rows after": read_kline_rows,
    }
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(args.repeats):  # interleaved, so that load on the machine hits every case alike
        for name, fn in cases.items():
            best[name] = min(best[name], timed(fn, files, args.rounds))
    floor = best["floor"]
    print(f"{'pyarrow.csv.read_csv (floor)':32s} {floor:7.3f} ms/file")
    for name in ("read_kline_csv", "read_kline_rows"):
        b, a = best[f"{name} before"], best[f"{name} after"]
        print(
            f"{name:32s} before {b:7.3f}  after {a:7.3f} ms/file  ({b / a:4.1f}x faster, {a / floor:4.2f}x the floor)"
        )


if __name__ == "__main__":
    main()
