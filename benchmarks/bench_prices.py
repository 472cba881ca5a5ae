#!/usr/bin/env python
"""Price-fetching benchmark against the loopback fake exchange (no internet).

    python benchmarks/bench_prices.py [--latency 0.05] [--signals 800] [--naive-sample 40]

Setup: 800 signals on 4 symbols over 5 UTC days, horizons 1/4/24 h, every request to the fake
exchange delayed by ``--latency`` (50 ms). The bars are real Binance BTCUSDT klines of 2024-03,
relabelled: symbol k gets the bars of day d+k shifted onto day d and rescaled, so the four price paths
differ.

(a) naive  — one small klines request per price: entry and exit for every signal × horizon
             (6 requests a signal), as a per-signal pricer would. Run on ``--naive-sample`` signals and
             extrapolated linearly to all signals (the output says so).
(b) cold   — the real pipeline, one Dagster run over the range: `signals` → `price_bars` (one
             `PriceFetcher.fetch_day` per symbol-day: the signal days and the days exits reach)
             → `reconciled_trades` (the vectorised kernel).
(c) warm   — the same run again: complete past days are read back from the warehouse, 0 requests.

The naive and pipeline prices are compared on the sample (they must agree exactly).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import requests

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import dagster as dg  # noqa: E402

from meta_pipeline.defs.ingestion import signals as signals_asset  # noqa: E402
from meta_pipeline.defs.partitions import REACH_DAYS  # noqa: E402
from meta_pipeline.defs.prices import price_bars  # noqa: E402
from meta_pipeline.defs.reconciliation import reconciled_trades  # noqa: E402
from meta_pipeline.defs.resources import DataRoot, PriceSources, ReconciliationPolicy  # noqa: E402
from meta_pipeline.prices import read_kline_csv  # noqa: E402
from meta_pipeline.prices.model import normalize_bars  # noqa: E402
from meta_pipeline_tests.fake_exchange import MARKET_DATA_DIR, FakeExchange  # noqa: E402

SYMBOLS = {"BTCUSDT": 1.0, "ETHUSDT": 0.055, "SOLUSDT": 0.0021, "BNBUSDT": 0.0065}
FIRST_DAY = dt.date(2024, 3, 1)
SIGNAL_DAYS = 5
LAST_BAR_DAY = FIRST_DAY + dt.timedelta(days=SIGNAL_DAYS - 1 + REACH_DAYS)  # the days 24 h exits reach
HORIZONS_H = (1, 4, 24)
MAX_STALENESS = pd.Timedelta(minutes=5)
MAX_STALENESS_NS = MAX_STALENESS.value


# ------------------------------------------------------------------------------------------- data
def synthetic_bars() -> pd.DataFrame:
    """4 symbols × (5 signal days + the days their exits reach) of relabelled real 1-minute bars."""
    frames = []
    for k, (symbol, scale) in enumerate(SYMBOLS.items()):
        for d in range((LAST_BAR_DAY - FIRST_DAY).days + 1):
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


def run_pipeline(fx: FakeExchange, root: Path) -> tuple[pd.DataFrame, int, float]:
    """The real thing: materialize signals → price_bars → reconciled_trades over the whole range in
    one run, against the fake exchange. Returns the reconciled rows, requests made, wall time."""
    before = fx.count()
    began = time.perf_counter()
    result = dg.materialize(
        [signals_asset, price_bars, reconciled_trades],
        instance=dg.DagsterInstance.ephemeral(),
        resources={
            "data_root": DataRoot(root=str(root)),
            "price_sources": PriceSources(
                sources=["binance"],
                binance_base_url=fx.binance_url,
                coinbase_base_url=fx.coinbase_url,
                bars_dir=str(root / "bars"),
            ),
            "reconciliation_policy": ReconciliationPolicy(),
        },
        tags={
            "dagster/asset_partition_range_start": FIRST_DAY.isoformat(),
            "dagster/asset_partition_range_end": LAST_BAR_DAY.isoformat(),
        },
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    elapsed = time.perf_counter() - began
    assert result.success
    rows = pd.concat(
        [pd.read_parquet(p) for p in sorted((root / "warehouse" / "reconciled_trades").glob("*.parquet"))]
    )
    return rows, fx.count() - before, elapsed


def write_signals(root: Path, signals: pd.DataFrame) -> None:
    (root / "alpha").mkdir(parents=True)
    with (root / "alpha" / "events.jsonl").open("w") as handle:
        for i, row in enumerate(signals.itertuples(index=False)):
            handle.write(
                json.dumps(
                    {
                        "ts": row.ts.isoformat(),
                        "agent": "bench",
                        "run_id": f"run-{i:05d}",
                        "symbol": row.symbol,
                        "direction": row.direction,
                    }
                )
                + "\n"
            )


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
    warnings.filterwarnings("ignore", category=dg.BetaWarning)

    bars = synthetic_bars()
    signals = synthetic_signals(args.signals, args.seed)
    legs = price_times(signals)
    n_symbol_days = len(SYMBOLS) * ((LAST_BAR_DAY - FIRST_DAY).days + 1)
    sample = min(args.naive_sample, args.signals)
    sample_legs = legs[legs["signal"] < sample]

    with FakeExchange(bars, latency=args.latency) as fx, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_signals(root, signals)
        naive, naive_req, naive_s = run_naive(fx, sample_legs)
        bulk, bulk_req, bulk_s = run_pipeline(fx, root)
        warm, warm_req, warm_s = run_pipeline(fx, root)

    scale = args.signals / sample
    cols = ["entry_price", "exit_price"]
    key = ["run_id", "horizon_hours"]
    bulk = bulk.sort_values(key, ignore_index=True)
    warm = warm.sort_values(key, ignore_index=True)
    sample_ids = {f"run-{i:05d}" for i in range(sample)}
    naive_prices = naive.sort_values(["signal", "horizon_h"])[cols].to_numpy()
    bulk_prices = bulk[bulk["run_id"].isin(sample_ids)][cols].to_numpy()
    agree = np.array_equal(bulk_prices, naive_prices, equal_nan=True)
    same_warm = bulk.equals(warm)
    priced = int((bulk["status"] == "matured").sum())

    print(
        f"{args.signals} signals × {len(HORIZONS_H)} horizons {HORIZONS_H} h on {len(SYMBOLS)} symbols over "
        f"{SIGNAL_DAYS} days; {n_symbol_days} symbol-days needed; latency {args.latency * 1000:.0f} ms/request; "
        f"loopback fake exchange"
    )
    print(f"(signal, horizon) rows matured: {priced}/{len(bulk)}")
    print()
    header = f"{'approach':<44} {'requests':>9} {'req/symbol-day':>15} {'wall time':>10}"
    print(header)
    print("-" * len(header))
    rows = [
        (f"(a) naive, measured on {sample} signals", naive_req, naive_s),
        (f"(a) naive, extrapolated ×{scale:g} to {args.signals}", naive_req * scale, naive_s * scale),
        ("(b) cold: price_bars + reconciled_trades", bulk_req, bulk_s),
        ("(c) warm: same run again, bars from storage", warm_req, warm_s),
    ]
    for name, n_req, secs in rows:
        print(f"{name:<44} {n_req:>9.0f} {n_req / n_symbol_days:>15.2f} {secs:>9.2f}s")
    print()
    print(f"naive vs pipeline prices on the {sample}-signal sample: {'identical' if agree else 'DIFFERENT'}")
    print(f"cold vs warm reconciled rows: {'identical' if same_warm else 'DIFFERENT'}")
    print(f"speed-up cold pipeline vs naive (extrapolated): ×{naive_s * scale / bulk_s:.0f}")
    return 0 if agree and same_warm else 1


if __name__ == "__main__":
    raise SystemExit(main())
