"""Benchmark of the reconciliation kernel (not a test).

1 000 000 signals × 3 horizons on 10 symbols × 30 days of synthetic 1-minute bars. Prints the
kernel's wall time (best of ``--repeat``) and the process's peak memory before/after the kernel.

    python benchmarks/bench_reconcile.py [--signals 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pandas as pd

from meta_pipeline.reconcile import reconcile


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def synthetic_bars(symbols: list[str], start: pd.Timestamp, days: int, rng) -> pd.DataFrame:
    minutes = days * 1440
    times = start + pd.to_timedelta(np.arange(minutes), unit="min")
    frames = []
    for symbol in symbols:
        log_returns = rng.normal(0.0, 0.0009, minutes)
        opens = 100.0 * np.exp(np.cumsum(log_returns))
        frames.append(pd.DataFrame({"instrument": symbol, "open_time": times, "open": opens}))
    return pd.concat(frames, ignore_index=True)


def synthetic_signals(n: int, symbols: list[str], start: pd.Timestamp, days: int, rng) -> pd.DataFrame:
    span_ns = (days - 1) * 86_400 * 10**9  # leave the last day for 24h exits
    ts = start + pd.to_timedelta(np.sort(rng.integers(0, span_ns, n)), unit="ns")
    return pd.DataFrame(
        {
            "date": ts.strftime("%Y-%m-%d"),
            "ts": ts,
            "agent": rng.choice([f"agent_{i:02d}" for i in range(40)], n),
            "run_id": pd.Series(np.arange(n)).astype(str).radd("run-"),
            "symbol": rng.choice(symbols, n),
            "direction": rng.choice(["LONG", "SHORT"], n),
            "regime": rng.choice(["trend", "range", "high_vol"], n),
            "confidence": rng.random(n),
            "score_final": rng.normal(0, 1, n),
        }
    ).assign(instrument=lambda f: f["symbol"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--signals", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(42)
    start = pd.Timestamp("2025-01-01", tz="UTC")
    symbols = [f"SYM{i}USDT" for i in range(args.symbols)]
    bars = synthetic_bars(symbols, start, args.days, rng)
    signals = synthetic_signals(args.signals, symbols, start, args.days, rng)
    as_of = start + pd.Timedelta(days=args.days)
    before = peak_rss_mib()

    timings = []
    for _ in range(args.repeat):
        began = time.perf_counter()
        out = reconcile(signals, bars, [1, 4, 24], as_of=as_of)
        timings.append(time.perf_counter() - began)
        del out
    after = peak_rss_mib()
    out = reconcile(signals, bars, [1, 4, 24], as_of=as_of)
    print(
        f"signals={args.signals:,} horizons=3 rows={len(out):,} symbols={args.symbols} "
        f"bars={len(bars):,} ({args.days} days)"
    )
    print(f"status counts: {out['status'].value_counts().to_dict()}")
    print(
        f"kernel wall time: best {min(timings):.2f} s, median {sorted(timings)[len(timings) // 2]:.2f} s "
        f"over {args.repeat} runs"
    )
    print(
        f"peak RSS: {before:,.0f} MiB with inputs loaded, {after:,.0f} MiB after the kernel "
        f"(kernel adds {after - before:,.0f} MiB)"
    )


if __name__ == "__main__":
    main()
