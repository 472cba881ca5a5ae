"""Benchmark of the whole supervisor's pure functions (not a test): the confidence fold, agent
statistics with significance, decisions, allocation and the portfolio with its breakdowns, on one
large synthetic history.

    python benchmarks/bench_supervisor.py [--trades 1000000] [--agents 10000] [--days 365] [--repeat 3]

The trades are :func:`bench_significance.synthetic_trades` (24 h trades on the 30-minute grid, 8
instruments, as a Parquet read gives them: categorical text columns); the telemetry has one run per
trade plus 20 % runs without a signal, 3 % of them erroring. Prints each stage's wall time and the
process's CPU time for it (best and median of ``--repeat``; the CPU time is steadier on a shared
machine), the totals, and the process's peak RSS. Goal on 2 cores: ≤ 2 s and ≤ 1 GB.

    python benchmarks/bench_supervisor.py --profile 30   # cProfile of one more run, top 30 by own time
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_significance import synthetic_trades  # noqa: E402

from meta_pipeline.supervisor import allocation, confidence, decisions, portfolio  # noqa: E402
from meta_pipeline.supervisor.policy import SupervisorPolicy  # noqa: E402
from meta_pipeline.supervisor.stats import agent_stats  # noqa: E402


def synthetic_runs(trades: pd.DataFrame, seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    extra = len(trades) // 5
    agents = np.concatenate(
        [trades["agent"].astype(str).to_numpy(), rng.choice(trades["agent"].astype(str).unique(), extra)]
    )
    ts = np.concatenate([trades["ts"].to_numpy(), rng.choice(trades["ts"].to_numpy(), extra)])
    n = len(agents)
    return pd.DataFrame(
        {
            "agent": pd.Categorical(agents),
            "run_id": pd.Categorical(np.char.add("r", np.arange(n).astype(str))),
            "ts": pd.to_datetime(ts, utc=True),
            "latency_ms": rng.lognormal(6.3, 0.4, n),
            "errors": (rng.random(n) < 0.03).astype("float64"),
            "cost_usd": rng.uniform(0.001, 0.05, n),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="profile one more run, top N")
    args = parser.parse_args()

    trades = synthetic_trades(args.trades, args.agents, args.days, categorical=True)
    runs = synthetic_runs(trades)
    policy = SupervisorPolicy()
    print(f"{len(trades):,} trades, {len(runs):,} runs, {args.agents:,} agents, {args.days} days")

    stages: dict[str, list[tuple[float, float]]] = {}

    def timed(name, fn):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        stages.setdefault(name, []).append((time.perf_counter() - start, time.process_time() - start_cpu))
        return out

    def run() -> None:
        state = timed("confidence fold", lambda: confidence.fold_confidence(trades))
        stats = timed("agent stats + significance", lambda: agent_stats(trades, runs, n_trials=args.agents))
        verdicts = timed("decisions", partial(decisions.decide, stats, policy, killed=()))
        combined = stats.join(verdicts)[["pnl_sum_bps", "hit_rate", "error_rate", "decision"]]
        timed("allocation", partial(allocation.allocation_weights, combined, state["mult"]))
        timed(
            "portfolio + breakdowns",
            lambda: (portfolio.portfolio_figures(trades), portfolio.equity_curve(trades)),
        )

    for _ in range(args.repeat):
        run()
    totals = [
        (sum(t[i][0] for t in stages.values()), sum(t[i][1] for t in stages.values()))
        for i in range(args.repeat)
    ]

    def line(name: str, times: list[tuple[float, float]]) -> str:
        wall, cpu = [t[0] for t in times], [t[1] for t in times]
        return (
            f"  {name:<28} wall best {min(wall):6.3f} s  median {statistics.median(wall):6.3f} s"
            f"   cpu best {min(cpu):6.3f} s  median {statistics.median(cpu):6.3f} s"
        )

    for name, times in stages.items():
        print(line(name, times))
    print(line("total", totals))
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)


if __name__ == "__main__":
    main()
