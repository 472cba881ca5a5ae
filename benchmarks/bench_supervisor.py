"""Benchmark of the whole supervisor's pure functions (not a test): the confidence fold, agent
statistics with significance, decisions, allocation and the portfolio with its breakdowns, on one
large synthetic history.

    python benchmarks/bench_supervisor.py [--trades 1000000] [--agents 10000] [--days 365] [--repeat 3]

The trades are :func:`bench_significance.synthetic_trades` (24 h trades on the 30-minute grid, 8
instruments, as a Parquet read gives them: categorical text columns); the telemetry has one run per
trade plus 20 % runs without a signal, 3 % of them erroring. Prints each stage's wall time (best and
median of ``--repeat``), the total, and the process's peak RSS. Goal on 2 cores: ≤ 2 s and ≤ 1 GB.
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()

    trades = synthetic_trades(args.trades, args.agents, args.days, categorical=True)
    runs = synthetic_runs(trades)
    policy = SupervisorPolicy()
    print(f"{len(trades):,} trades, {len(runs):,} runs, {args.agents:,} agents, {args.days} days")

    stages: dict[str, list[float]] = {}

    def timed(name, fn):
        start = time.perf_counter()
        out = fn()
        stages.setdefault(name, []).append(time.perf_counter() - start)
        return out

    for _ in range(args.repeat):
        state = timed("confidence fold", lambda: confidence.fold_confidence(trades))
        stats = timed("agent stats + significance", lambda: agent_stats(trades, runs, n_trials=args.agents))
        verdicts = timed("decisions", partial(decisions.decide, stats, policy, killed=()))
        combined = stats.join(verdicts)[["pnl_sum_bps", "hit_rate", "error_rate", "decision"]]
        timed("allocation", partial(allocation.allocation_weights, combined, state["mult"]))
        timed(
            "portfolio + breakdowns",
            lambda: (portfolio.portfolio_figures(trades), portfolio.equity_curve(trades)),
        )
    totals = [sum(times[i] for times in stages.values()) for i in range(args.repeat)]
    for name, times in stages.items():
        print(f"  {name:<28} best {min(times):6.3f} s   median {statistics.median(times):6.3f} s")
    print(f"  {'total':<28} best {min(totals):6.3f} s   median {statistics.median(totals):6.3f} s")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()
