"""Benchmark of the JSON Lines export encoders (not a test).

Synthetic reconciled rows shaped like ``export.matured_rows`` (signal-level fields repeated once per
horizon, as ``reconcile`` writes them; 1 000 000 rows, 10 agents, 4 symbols,
unique run_ids, 3 horizons, signal times with sub-second fractions, bar-aligned entry/exit times,
exchange prices with 2 decimals, full-precision PnL / scores). Prints rows/s — best and median of
``--repeat`` runs, by wall-clock time and by this process's CPU time (``time.process_time()``: on a
machine shared with other work the wall clock also counts time spent waiting for a core) — for
``jsonl_oracle.to_jsonl(rows).encode()`` and ``jsonl.encode_rows(rows, EXPORT_FIELDS)`` and checks the two
outputs are byte-identical.

    python benchmarks/bench_encode.py [--rows 1000000] [--repeat 5] [--full-precision-prices] [--skip-reference]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from meta_pipeline.export import EXPORT_FIELDS  # noqa: E402
from meta_pipeline.jsonl import encode_rows  # noqa: E402
from meta_pipeline_tests.jsonl_oracle import to_jsonl  # noqa: E402


def _utc(ns: np.ndarray) -> pd.Series:
    return pd.Series(ns.view("datetime64[ns]")).dt.tz_localize("UTC")


def synthetic_rows(n: int, *, full_precision_prices: bool = False, seed: int = 42) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    horizons = np.array([1, 4, 24])
    signals = -(-n // len(horizons))
    start = pd.Timestamp("2025-01-01", tz="UTC").value
    ts = np.repeat(np.sort(start + rng.integers(0, 29 * 86_400 * 10**9, signals)), len(horizons))[:n]
    horizon = np.tile(horizons, signals)[:n]
    minute = 60 * 10**9
    entry = -(-ts // minute) * minute  # the first bar opening at or after ts
    exit_ = entry + horizon * 3_600 * 10**9
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
    symbol = np.repeat(rng.integers(0, len(symbols), signals), len(horizons))[:n]
    base = np.array([65_000.0, 3_400.0, 150.0, 0.6])[symbol]
    per_signal = np.arange(n) // len(horizons)  # signal-level fields repeat once per horizon
    entry_price = base * np.exp(rng.normal(0, 0.05, signals)[per_signal])
    exit_price = entry_price * np.exp(rng.normal(0, 0.01, n))
    if not full_precision_prices:
        entry_price, exit_price = entry_price.round(2), exit_price.round(2)
    long = np.repeat(rng.random(signals) < 0.5, len(horizons))[:n]
    gross = np.where(long, exit_price / entry_price - 1, 1 - exit_price / entry_price) * 1e4
    return pd.DataFrame(
        {
            "ts": _utc(ts),
            "agent": pd.Categorical.from_codes(
                np.repeat(rng.integers(0, 10, signals), len(horizons))[:n],
                [f"agent_{i:02d}" for i in range(10)],
            ),
            "run_id": pd.Series(np.arange(n) // len(horizons)).astype(str).radd("run-"),
            "symbol": pd.Categorical.from_codes(symbol, symbols),
            "direction": pd.Categorical.from_codes(long.astype(int), ["SHORT", "LONG"]),
            "entry_price": entry_price,
            "exit_price": exit_price,
            "horizon_hours": horizon.astype("int64"),
            "realized_pnl_bps": gross,
            "regime": pd.Categorical.from_codes(
                np.repeat(rng.integers(0, 3, signals), len(horizons))[:n], ["trend", "range", "high_vol"]
            ),
            "confidence": rng.random(signals).round(2)[per_signal],
            "score_final": rng.normal(0, 1, signals)[per_signal],
            "instrument": pd.Categorical.from_codes(symbol, symbols),
            "entry_time": _utc(entry),
            "exit_time": _utc(exit_),
            "net_pnl_bps": gross - 10.0,
            "status": pd.Categorical.from_codes(np.zeros(n, dtype=int), ["matured", "pending", "unpriced"]),
        }
    )[EXPORT_FIELDS]


class Timings:
    """Wall-clock and CPU seconds of each run."""

    def __init__(self):
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def report(self, name: str, rows: int) -> str:
        def rate(seconds: float) -> str:
            return f"{rows / seconds:>11,.0f}"

        return (
            f"{name:<12} rows/s  wall: best {rate(min(self.wall))}  median {rate(statistics.median(self.wall))}"
            f"   cpu: best {rate(min(self.cpu))}  median {rate(statistics.median(self.cpu))}"
            f"   ({min(self.wall):.3f} s wall, {min(self.cpu):.3f} s cpu, best)"
        )


def timed(repeat: int, func) -> tuple[Timings, object]:
    timings, result = Timings(), None
    for _ in range(repeat):
        result = None  # the previous result is freed before the next run, as a caller would
        wall, cpu = time.perf_counter(), time.process_time()
        result = func()
        timings.cpu.append(time.process_time() - cpu)
        timings.wall.append(time.perf_counter() - wall)
    return timings, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5, help="runs of encode_rows (of to_jsonl: at most 3)")
    parser.add_argument("--full-precision-prices", action="store_true", help="17-digit prices")
    parser.add_argument("--skip-reference", action="store_true", help="time encode_rows only")
    args = parser.parse_args()

    rows = synthetic_rows(args.rows, full_precision_prices=args.full_precision_prices)
    encode_rows(rows.head(10_000), EXPORT_FIELDS)  # warm-up: lazy imports and cached digit tables
    fast_timings, fast = timed(args.repeat, lambda: encode_rows(rows, EXPORT_FIELDS))
    print(fast_timings.report("encode_rows", args.rows) + f"  {len(fast) / 2**20:,.0f} MiB")
    if args.skip_reference:
        return
    slow_timings, slow = timed(min(args.repeat, 3), lambda: to_jsonl(rows).encode("utf-8"))
    print(slow_timings.report("to_jsonl", args.rows))
    print(
        f"speed-up {min(slow_timings.cpu) / min(fast_timings.cpu):.0f}x (cpu, best), byte-identical: {fast == slow}"
    )
    if fast != slow:
        raise SystemExit("outputs differ")


if __name__ == "__main__":
    main()
