#!/usr/bin/env python
"""Price-fetching benchmark against the loopback fake exchange (no internet).

    python benchmarks/bench_prices.py [--latency 0.05] [--signals 800] [--naive-sample 40]

Setup: 800 signals on 4 symbols over 5 UTC days, horizons 1/4/24 h, every request to the fake
exchange delayed by ``--latency`` (50 ms). The bars are real Binance BTCUSDT klines of 2024-03,
relabelled: symbol k gets the bars of day d+k shifted onto day d and rescaled, so the four price paths
differ.

(a) naive  — one small klines request per price: entry and exit for every signal × horizon
             (6 requests a signal), as the old patch plan did. Run on ``--naive-sample`` signals and
             extrapolated linearly to all signals (the output says so).
(b) bulk   — ``PriceFetcher.fetch_day`` once per needed symbol-day (signal days, the days exits reach,
             and the day a price 5 minutes later may come from), then every price by a vectorised
             lookup: price at t = OPEN of the first 1-minute bar with open_time >= t, missing if that
             bar opens more than 5 minutes after t (numpy.searchsorted).
(c) warm   — the same run again, the days read back from a Parquet cache written by (b): 0 requests.

The naive and bulk prices are compared on the sample (they must agree exactly).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import requests

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from meta_pipeline.prices import PriceFetcher, build_sources, read_kline_csv  # noqa: E402
from meta_pipeline.prices.model import DayFetch, normalize_bars, times_ns  # noqa: E402
from meta_pipeline_tests.fake_exchange import MARKET_DATA_DIR, FakeExchange  # noqa: E402

SYMBOLS = {"BTCUSDT": 1.0, "ETHUSDT": 0.055, "SOLUSDT": 0.0021, "BNBUSDT": 0.0065}
FIRST_DAY = dt.date(2024, 3, 1)
SIGNAL_DAYS = 5
HORIZONS_H = (1, 4, 24)
MAX_STALENESS = pd.Timedelta(minutes=5)
MAX_STALENESS_NS = MAX_STALENESS.value


# ------------------------------------------------------------------------------------------- data
def synthetic_bars() -> pd.DataFrame:
    """4 symbols × (5 signal days + 1 exit day) of relabelled real 1-minute bars."""
    frames = []
    for k, (symbol, scale) in enumerate(SYMBOLS.items()):
        for d in range(SIGNAL_DAYS + 1):
            src_day = FIRST_DAY + dt.timedelta(days=d + 3 * k)
            df = read_kline_csv(MARKET_DATA_DIR / "BTCUSDT" / f"BTCUSDT-1m-{src_day:%Y-%m-%d}.csv")
            df["open_time"] = df["open_time"] - pd.Timedelta(days=3 * k)
            for col in ("open", "high", "low", "close"):
                df[col] = (df[col] * scale).round(6)
            df["instrument"] = symbol
            frames.append(df)
    return normalize_bars(pd.concat(frames, ignore_index=True))


def synthetic_signals(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp(FIRST_DAY, tz="UTC")
    offsets = rng.integers(0, SIGNAL_DAYS * 86_400, size=n)  # seconds, not minute-aligned on purpose
    return pd.DataFrame(
        {
            "ts": start + pd.to_timedelta(np.sort(offsets), unit="s"),
            "symbol": rng.choice(list(SYMBOLS), size=n),
            "direction": rng.choice(["LONG", "SHORT"], size=n),
        }
    )


def price_times(signals: pd.DataFrame) -> pd.DataFrame:
    """One row per (signal, horizon): entry time and exit time."""
    rows = []
    for h in HORIZONS_H:
        part = signals.assign(
            horizon_h=h, entry_t=signals["ts"], exit_t=signals["ts"] + pd.Timedelta(hours=h)
        )
        rows.append(part.reset_index(names="signal"))
    return pd.concat(rows, ignore_index=True)


# ----------------------------------------------------------------------------------------- pricing
def price_at(open_ns: np.ndarray, opens: np.ndarray, t_ns: np.ndarray) -> np.ndarray:
    """OPEN of the first bar with open_time >= t; NaN if that bar opens more than 5 min after t."""
    out = np.full(len(t_ns), np.nan)
    if len(open_ns) == 0:
        return out
    idx = np.searchsorted(open_ns, t_ns, side="left")
    safe = np.minimum(idx, len(open_ns) - 1)
    ok = (idx < len(open_ns)) & (open_ns[safe] - t_ns <= MAX_STALENESS_NS)
    out[ok] = opens[safe[ok]]
    return out


def price_all(legs: pd.DataFrame, bars_by_symbol: dict[str, pd.DataFrame]) -> pd.DataFrame:
    legs = legs.copy()
    legs["entry_price"] = np.nan
    legs["exit_price"] = np.nan
    for symbol, idx in legs.groupby("symbol").groups.items():
        bars = bars_by_symbol.get(symbol)
        if bars is None or bars.empty:
            continue
        open_ns = times_ns(bars["open_time"])
        opens = bars["open"].to_numpy()
        sub = legs.loc[idx]
        legs.loc[idx, "entry_price"] = price_at(open_ns, opens, times_ns(sub["entry_t"]))
        legs.loc[idx, "exit_price"] = price_at(open_ns, opens, times_ns(sub["exit_t"]))
    return legs


def needed_days(legs: pd.DataFrame) -> list[tuple[str, dt.date]]:
    """Symbol-days holding the bar that prices any entry or exit (t or up to 5 minutes after t)."""
    keys: set[tuple[str, dt.date]] = set()
    for col in ("entry_t", "exit_t"):
        for shift in (pd.Timedelta(0), MAX_STALENESS):
            days = (legs[col] + shift).dt.date
            keys.update(zip(legs["symbol"], days, strict=True))
    return sorted(keys)


# ---------------------------------------------------------------------------------------- approaches
def run_naive(fx: FakeExchange, legs: pd.DataFrame) -> tuple[pd.DataFrame, int, float]:
    """One klines request per price (limit=1 from t), entry and exit for every leg."""
    session = requests.Session()
    url = f"{fx.binance_url}/api/v3/klines"
    n_requests = 0
    t0 = time.perf_counter()
    entry, exit_ = [], []
    for row in legs.itertuples(index=False):
        for t, out in ((row.entry_t, entry), (row.exit_t, exit_)):
            t_ms = t.value // 1_000_000
            params = {"symbol": row.symbol, "interval": "1m", "startTime": t_ms, "limit": 1}
            k = session.get(url, params=params, timeout=10).json()
            n_requests += 1
            ok = bool(k) and k[0][0] - t_ms <= MAX_STALENESS_NS // 1_000_000
            out.append(float(k[0][1]) if ok else np.nan)
    elapsed = time.perf_counter() - t0
    session.close()
    return legs.assign(entry_price=entry, exit_price=exit_), n_requests, elapsed


def run_bulk(
    fx: FakeExchange, legs: pd.DataFrame, cache_dir: Path | None
) -> tuple[pd.DataFrame, int, float, list[DayFetch]]:
    sources = build_sources(["binance"], binance_base_url=fx.binance_url)
    fetcher = PriceFetcher(sources)
    t0 = time.perf_counter()
    fetched = [fetcher.fetch_day(symbol, day) for symbol, day in needed_days(legs)]
    by_symbol = {
        s: pd.concat([f.bars for f in fetched if f.instrument == s and not f.bars.empty], ignore_index=True)
        for s in {f.instrument for f in fetched}
    }
    priced = price_all(legs, by_symbol)
    elapsed = time.perf_counter() - t0
    if cache_dir is not None:
        for f in fetched:
            if f.complete:  # only a complete past day can never change
                f.bars.to_parquet(cache_dir / f"{f.instrument}_{f.day:%Y-%m-%d}.parquet", index=False)
    return priced, sum(f.requests for f in fetched), elapsed, fetched


def run_warm(fx: FakeExchange, legs: pd.DataFrame, cache_dir: Path) -> tuple[pd.DataFrame, int, float]:
    sources = build_sources(["binance"], binance_base_url=fx.binance_url)
    fetcher = PriceFetcher(sources)
    t0 = time.perf_counter()
    frames: dict[str, list[pd.DataFrame]] = {}
    n_requests = 0
    for symbol, day in needed_days(legs):
        path = cache_dir / f"{symbol}_{day:%Y-%m-%d}.parquet"
        if path.is_file():
            frames.setdefault(symbol, []).append(pd.read_parquet(path))
        else:  # not cached (incomplete or failed day): fetch it again
            f = fetcher.fetch_day(symbol, day)
            n_requests += f.requests
            frames.setdefault(symbol, []).append(f.bars)
    by_symbol = {s: pd.concat(v, ignore_index=True) for s, v in frames.items()}
    priced = price_all(legs, by_symbol)
    return priced, n_requests, time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--latency", type=float, default=0.05, help="seconds added to every request (default 0.05)"
    )
    ap.add_argument("--signals", type=int, default=800)
    ap.add_argument(
        "--naive-sample", type=int, default=40, help="signals priced the naive way (extrapolated)"
    )
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    bars = synthetic_bars()
    signals = synthetic_signals(args.signals, args.seed)
    legs = price_times(signals)
    days = needed_days(legs)
    n_symbol_days = len(days)
    sample = min(args.naive_sample, args.signals)
    sample_legs = legs[legs["signal"] < sample]

    with FakeExchange(bars, latency=args.latency) as fx, tempfile.TemporaryDirectory() as tmp:
        cache_dir = Path(tmp)
        naive, naive_req, naive_s = run_naive(fx, sample_legs)
        fx.reset()
        bulk, bulk_req, bulk_s, fetched = run_bulk(fx, legs, cache_dir)
        assert bulk_req == fx.count(), (bulk_req, fx.count())
        fx.reset()
        warm, warm_req, warm_s = run_warm(fx, legs, cache_dir)
        assert fx.count() == warm_req

    scale = args.signals / sample
    cols = ["entry_price", "exit_price"]
    cmp_bulk = bulk.loc[sample_legs.index, cols].to_numpy()
    agree = np.array_equal(cmp_bulk, naive[cols].to_numpy(), equal_nan=True)
    same_warm = np.array_equal(bulk[cols].to_numpy(), warm[cols].to_numpy(), equal_nan=True)
    priced = int(bulk[cols].notna().all(axis=1).sum())

    print(
        f"{args.signals} signals × {len(HORIZONS_H)} horizons {HORIZONS_H} h on {len(SYMBOLS)} symbols over "
        f"{SIGNAL_DAYS} days; {n_symbol_days} symbol-days needed; latency {args.latency * 1000:.0f} ms/request; "
        f"loopback fake exchange"
    )
    print(f"legs priced (entry and exit present): {priced}/{len(bulk)}")
    print()
    header = f"{'approach':<44} {'requests':>9} {'req/symbol-day':>15} {'wall time':>10}"
    print(header)
    print("-" * len(header))
    rows = [
        (f"(a) naive, measured on {sample} signals", naive_req, naive_s),
        (f"(a) naive, extrapolated ×{scale:g} to {args.signals}", naive_req * scale, naive_s * scale),
        ("(b) bulk: fetch_day per symbol-day + lookup", bulk_req, bulk_s),
        ("(c) warm: days from the Parquet cache", warm_req, warm_s),
    ]
    for name, n_req, secs in rows:
        print(f"{name:<44} {n_req:>9.0f} {n_req / n_symbol_days:>15.2f} {secs:>9.2f}s")
    print()
    print(f"naive vs bulk prices on the {sample}-signal sample: {'identical' if agree else 'DIFFERENT'}")
    print(f"bulk vs warm prices on all signals: {'identical' if same_warm else 'DIFFERENT'}")
    print(f"speed-up bulk vs naive (extrapolated): ×{naive_s * scale / bulk_s:.0f}")
    incomplete = [f"{f.instrument} {f.day}" for f in fetched if not f.complete]
    if incomplete:
        print(f"incomplete days (not cached): {', '.join(incomplete)}")
    return 0 if agree and same_warm else 1


if __name__ == "__main__":
    raise SystemExit(main())
