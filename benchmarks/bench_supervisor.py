"""Benchmark of the whole supervisor's pure functions (not a test): the confidence fold, agent
statistics with significance, decisions, allocation and the portfolio with its breakdowns, on one
large synthetic history.

    python benchmarks/bench_supervisor.py [--trades 1000000] [--agents 10000] [--days 365] [--repeat 3]

The trades are :func:`bench_significance.synthetic_trades` (24 h trades on the 30-minute grid, 8
instruments, as a Parquet read gives them: categorical text columns; ``--strings`` gives them as
pandas' Arrow-backed ``str`` instead, as the supervisor's history reader does); the telemetry has one
run per trade plus 20 % runs without a signal, 3 % of them erroring. The portfolio stage sorts the
trades once (:func:`meta_pipeline.supervisor.portfolio.time_order`) and passes the order to the
figures and the equity curve.

Prints each stage's wall time and the process's CPU time for it (best and median of ``--repeat``;
the CPU time is steadier on a shared machine), the totals, the RSS holding the data, and the peak
RSS after building the data and after the runs (the peak is the process's high-water mark: when it
does not move, the supervisor stayed below what building the data took). Goal on 2 cores: ≤ 2 s
and ≤ 1 GB.

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
import pyarrow as pa
import pyarrow.compute as pc

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_significance import synthetic_trades  # noqa: E402

from meta_pipeline.supervisor import allocation, confidence, decisions, portfolio  # noqa: E402
from meta_pipeline.supervisor.policy import SupervisorPolicy  # noqa: E402
from meta_pipeline.supervisor.stats import agent_stats  # noqa: E402


def synthetic_runs(trades: pd.DataFrame, seed: int = 11) -> pd.DataFrame:
    """Telemetry of the trades: one run per trade, plus 20 % runs (of agents and at times drawn from
    the trades) without a signal; ``agent`` and ``run_id`` categorical, as a Parquet read gives them.

    Built from codes and Arrow strings: 1.2 million Python strings for the run ids would take more
    memory than the whole supervisor does (the values are those of ``pd.Categorical`` of the text).
    """
    rng = np.random.default_rng(seed)
    extra = len(trades) // 5
    agent = trades["agent"]
    if not isinstance(agent.dtype, pd.CategoricalDtype):
        agent = agent.astype(str).astype("category")
    codes = agent.cat.codes.to_numpy()
    seen = pd.unique(codes)  # the agents in order of appearance, as ``.unique()`` gives them
    codes = np.concatenate([codes, seen[rng.choice(len(seen), extra)]])
    used = np.unique(codes)  # categories of the runs: the agents present, sorted by name
    names = agent.cat.categories[used]
    by_name = np.argsort(np.asarray(names, dtype=object))
    code_of_used = np.empty(len(used), dtype=np.int64)
    code_of_used[by_name] = np.arange(len(used))
    agents = pd.Categorical.from_codes(code_of_used[np.searchsorted(used, codes)], categories=names[by_name])
    ts = np.concatenate([trades["ts"].to_numpy(), rng.choice(trades["ts"].to_numpy(), extra)])
    n = len(codes)
    run_ids = pc.binary_join_element_wise(
        pa.scalar("r", pa.large_string()),
        pc.cast(pa.array(np.arange(n)), pa.large_string()),
        pa.scalar("", pa.large_string()),
    )
    sorted_ids = pc.array_sort_indices(run_ids)
    run_codes = np.empty(n, dtype=np.int32 if n < 2**31 else np.int64)
    run_codes[sorted_ids.to_numpy()] = np.arange(n)
    run_categories = pd.Index(pd.array(run_ids.take(sorted_ids), dtype="str"))
    return pd.DataFrame(
        {
            "agent": agents,
            "run_id": pd.Categorical.from_codes(run_codes, categories=run_categories),
            "ts": pd.to_datetime(ts, utc=True),
            "latency_ms": rng.lognormal(6.3, 0.4, n),
            "errors": (rng.random(n) < 0.03).astype("float64"),
            "cost_usd": rng.uniform(0.001, 0.05, n),
        }
    )


def portfolio_report(trades: pd.DataFrame) -> tuple:
    """The portfolio's figures, breakdowns and equity curve, sorting the trades once."""
    order = portfolio.time_order(trades)
    return portfolio.portfolio_figures(trades, order=order), portfolio.equity_curve(trades, order=order)


def rss_mb() -> tuple[float, float]:
    """Current and peak resident set size of this process (MB)."""
    current = float("nan")
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) / 1024
    return current, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="profile one more run, top N")
    parser.add_argument("--strings", action="store_true", help="text columns as str, not categories")
    args = parser.parse_args()

    trades = synthetic_trades(args.trades, args.agents, args.days, categorical=not args.strings)
    runs = synthetic_runs(trades)
    if args.strings:
        runs = runs.astype({"agent": "str", "run_id": "str"})
    policy = SupervisorPolicy()
    kind = "str" if args.strings else "categorical"
    print(
        f"{len(trades):,} trades, {len(runs):,} runs, {args.agents:,} agents, {args.days} days ({kind} text)"
    )
    holding, built = rss_mb()

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
        timed("portfolio + breakdowns", lambda: portfolio_report(trades))

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
    print(
        f"RSS holding the data {holding:,.0f} MB; peak RSS after building it {built:,.0f} MB,"
        f" after the runs {rss_mb()[1]:,.0f} MB"
    )
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)


if __name__ == "__main__":
    main()
