"""Benchmark of the significance statistics (not a test): ``significance_by_agent`` and
``bias_timing_split`` on a large synthetic trades frame.

    python benchmarks/bench_significance.py [--trades 1000000] [--agents 10000] [--days 365] [--repeat 3]
    python benchmarks/bench_significance.py --categorical      # agent / run_id / instrument as categories

Matured 24 h trades of ``--agents`` agents over ``--days`` UTC days: signal times on the 30-minute grid
(so an agent sometimes has two runs at one instant, which exercises the run_id tie-break), 8
instruments, random directions, gross returns of 3 %/day volatility, net = gross − 10 bps. By default
``agent``, ``run_id`` and ``instrument`` are plain strings, the slowest case; ``--categorical`` gives
them as pandas categories, as a Parquet read of dictionary-encoded columns does.

Prints the wall time of each function, best and median of ``--repeat``, their sum, and the process's
CPU time for the same runs (steadier on a shared machine); then the process's RSS holding the frame,
its peak RSS (ru_maxrss) after building the frame and after the runs, and the peak memory one run
allocates (tracemalloc, numpy buffers included). The product goal is ≤ 2 s for the
whole supervisor on 2 cores; this part should take well under 1 s.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from meta_pipeline.supervisor.significance import bias_timing_split, significance_by_agent  # noqa: E402

INSTRUMENTS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "AVAXUSDT"]
SLOT = 30 * 60 * 10**9  # ns, the agents' signal cadence
DAY = 86_400 * 10**9


def maxrss_mb() -> float:
    """Peak resident set size of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """Current resident set size of this process (MB)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def synthetic_trades(
    n: int, agents: int, days: int, *, categorical: bool = False, seed: int = 7
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2025-01-01", tz="UTC").value
    agent = rng.integers(0, agents, n)
    ts = start + rng.integers(0, days * 86_400 * 10**9 // SLOT, n) * SLOT
    instrument = rng.integers(0, len(INSTRUMENTS), n)
    long = rng.random(n) < 0.55
    gross = rng.normal(0.0, 300.0, n)  # 3 %/day
    agent_names = np.array([f"agent_{i:05d}" for i in range(agents)], dtype=object)
    run_names = pd.Series(np.arange(n)).astype(str).radd("run-").to_numpy(dtype=object)
    if categorical:
        agent_col = pd.Categorical.from_codes(agent, agent_names)
        run_col = pd.Categorical(run_names)
        instrument_col = pd.Categorical.from_codes(instrument, INSTRUMENTS)
        direction_col = pd.Categorical.from_codes(long.astype(np.int8), ["SHORT", "LONG"])
    else:
        agent_col = agent_names[agent]
        run_col = run_names
        instrument_col = np.array(INSTRUMENTS, dtype=object)[instrument]
        direction_col = np.where(long, "LONG", "SHORT").astype(object)
    ts_col = pd.Series(pd.DatetimeIndex(ts.astype("datetime64[ns]")).tz_localize("UTC"))
    return pd.DataFrame(
        {
            "agent": agent_col,
            "run_id": run_col,
            "instrument": instrument_col,
            "ts": ts_col,
            "exit_ts": ts_col + pd.Timedelta(hours=24),
            "direction": direction_col,
            "gross_bps": gross,
            "net_bps": gross - 10.0,
            "regime": None,
            "confidence": np.nan,
        }
    )


def timed(repeat: int, func) -> tuple[list[float], list[float], object]:
    """Wall and CPU seconds of each of ``repeat`` calls, and the last result."""
    wall, cpu, result = [], [], None
    for _ in range(repeat):
        began, began_cpu = time.perf_counter(), time.process_time()
        result = func()
        wall.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
    return wall, cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--categorical", action="store_true", help="agent, run_id, instrument as categories")
    args = parser.parse_args()

    rss_start = rss_mb()
    trades = synthetic_trades(args.trades, args.agents, args.days, categorical=args.categorical)
    rss_frame, peak_built = rss_mb(), maxrss_mb()
    kind = "categorical" if args.categorical else "string"
    print(f"{len(trades):,} trades, {args.agents:,} agents, {args.days} days ({kind} columns)")

    sig_t, sig_cpu, table = timed(args.repeat, lambda: significance_by_agent(trades))
    split_t, split_cpu, _ = timed(args.repeat, lambda: bias_timing_split(trades))
    total = [a + b for a, b in zip(sig_t, split_t, strict=True)]
    total_cpu = [a + b for a, b in zip(sig_cpu, split_cpu, strict=True)]
    for name, t, c in (
        ("significance_by_agent", sig_t, sig_cpu),
        ("bias_timing_split", split_t, split_cpu),
        ("total", total, total_cpu),
    ):
        print(
            f"{name:<22} wall best {min(t):.3f} s, median {statistics.median(t):.3f} s   "
            f"CPU best {min(c):.3f} s, median {statistics.median(c):.3f} s"
        )
    chain = table["chain_trades"]
    print(f"chain trades: {int(chain.sum()):,} (median {chain.median():.0f} per agent)")
    tracemalloc.start()  # one more run, untimed: the peak of what it allocates (numpy included)
    significance_by_agent(trades)
    bias_timing_split(trades)
    working = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(
        f"RSS: {rss_start:,.0f} MB at start, {rss_frame:,.0f} MB holding the frame "
        f"(peak {peak_built:,.0f} MB while building it); peak RSS after the runs {maxrss_mb():,.0f} MB; "
        f"peak allocated by one run (tracemalloc): {working:,.0f} MB"
    )


if __name__ == "__main__":
    main()
