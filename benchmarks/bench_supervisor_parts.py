#!/usr/bin/env python
"""Benchmark of the supervisor's Dagster-free parts (not a test): the confidence fold, the allocation
and the portfolio figures, on a synthetic trades frame.

    python benchmarks/bench_supervisor_parts.py [--trades 1000000] [--agents 10000] [--days 365] [--repeat 3]

The trades frame (fixed seed): ``--trades`` matured 24 h trades of ``--agents`` agents whose signal
times are spread uniformly over ``--days`` UTC days at whole seconds (so some trades of different
agents share their times and the tie-breaks run), ``exit_ts = ts + 24 h``, 4 instruments, LONG/SHORT,
a regime missing on 5 % of the rows, ``net_bps`` ~ N(0, 80), rows shuffled (not in time order).
``agent``, ``instrument``, ``direction`` and ``regime`` are categoricals, ``run_id`` a string column;
``--object-strings`` makes them all plain strings instead.

Timed, best and median of ``--repeat``:

* ``fold_confidence`` over the whole history (≈ one update per agent and day with a trade);
* the resume a tick does: ``fold_confidence(today's trades, initial=snapshot through yesterday)``;
* ``allocation_weights`` for every agent (stats from the breakdown by agent, random error rates and
  decisions, the fold's multipliers);
* ``portfolio_summary`` and ``portfolio_breakdown`` by agent, instrument and regime, each on its own
  (each sorts the trades), and ``portfolio_figures``: the summary and the three breakdowns with one
  sort, as the supervisor's report calls them;
* the total of the fold, the allocation and ``portfolio_figures``.

Each figure is given as wall time and as the process's CPU time (steadier on a shared machine; the
load average is printed at the end).

It prints the process's peak RSS (ru_maxrss) after building the data and at the end. The supervisor
as a whole aims at ≤ 2 s on 2 cores; these parts at ≤ ~0.8 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from meta_pipeline.supervisor.allocation import allocation_weights  # noqa: E402
from meta_pipeline.supervisor.confidence import fold_confidence  # noqa: E402
from meta_pipeline.supervisor.portfolio import (  # noqa: E402
    portfolio_breakdown,
    portfolio_figures,
    portfolio_summary,
)

DAY = pd.Timedelta(days=1)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def synthetic_trades(n: int, agents: int, days: int, *, object_strings: bool, seed: int = 15) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2025-01-01", tz="UTC")
    seconds = rng.integers(0, days * 86_400, n)
    ts = start + pd.to_timedelta(seconds, unit="s")
    regimes = np.array(["trend", "range", "high_vol"], dtype=object)
    regime = regimes[rng.integers(0, 3, n)]
    regime[rng.random(n) < 0.05] = None
    frame = pd.DataFrame(
        {
            "agent": pd.Categorical.from_codes(
                rng.integers(0, agents, n), [f"agent_{i:05d}" for i in range(agents)]
            ),
            "run_id": pd.Series(np.arange(n)).astype(str).radd("run-"),
            "instrument": pd.Categorical.from_codes(
                rng.integers(0, 4, n), ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"]
            ),
            "ts": ts,
            "exit_ts": ts + DAY,
            "direction": pd.Categorical.from_codes(rng.integers(0, 2, n), ["LONG", "SHORT"]),
            "gross_bps": rng.normal(0.0, 80.0, n),
            "regime": pd.Categorical(regime),
            "confidence": rng.random(n),
        }
    )
    frame["net_bps"] = frame["gross_bps"]
    if object_strings:
        for column in ("agent", "instrument", "direction", "regime"):
            frame[column] = frame[column].astype(object)
    return frame


def timed(repeat: int, fn) -> tuple[list[tuple[float, float]], object]:
    """(wall s, CPU s of this process) of each of ``repeat`` calls, and the last result."""
    runs, out = [], None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    return runs, out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--object-strings", action="store_true")
    args = parser.parse_args()

    trades = synthetic_trades(args.trades, args.agents, args.days, object_strings=args.object_strings)
    print(
        f"{len(trades):,} trades, {trades['agent'].nunique():,} agents, {args.days} days "
        f"({'object' if args.object_strings else 'categorical'} strings); "
        f"peak RSS after building: {peak_rss_mib():,.0f} MiB"
    )

    results: dict[str, list[tuple[float, float]]] = {}
    results["fold_confidence"], state = timed(args.repeat, lambda: fold_confidence(trades))

    last_day = trades["exit_ts"].max().floor("D")
    snapshot = fold_confidence(trades, through_day=last_day - DAY)
    today = trades[trades["exit_ts"] >= last_day]
    results["fold_confidence resume (last day)"], resumed = timed(
        args.repeat, lambda: fold_confidence(today, initial=snapshot)
    )
    pd.testing.assert_frame_equal(resumed, state)  # the resume is exact

    by_agent = portfolio_breakdown(trades, "agent")
    rng = np.random.default_rng(1)
    stats = pd.DataFrame(
        {
            "pnl_sum_bps": by_agent["pnl_bps"],
            "hit_rate": by_agent["hit_rate"],
            "error_rate": rng.choice([0.0, 0.01, 0.05, 0.1], len(by_agent)),
            "decision": rng.choice(["HOLD", "PROMOTE", "WATCH", "KILL", "RETIRE", "KILLED"], len(by_agent)),
        },
        index=by_agent.index,
    )
    results["allocation_weights"], weights = timed(
        args.repeat, lambda: allocation_weights(stats, state["mult"])
    )
    results["allocation_weights cap=0.01"], _ = timed(
        args.repeat, lambda: allocation_weights(stats, state["mult"], cap=0.01)
    )
    results["portfolio_summary"], summary = timed(args.repeat, lambda: portfolio_summary(trades))
    for by in ("agent", "instrument", "regime"):
        results[f"portfolio_breakdown({by})"], _ = timed(
            args.repeat, lambda by=by: portfolio_breakdown(trades, by)
        )
    results["portfolio_figures (summary + 3 breakdowns, one sort)"], (fleet, _) = timed(
        args.repeat, lambda: portfolio_figures(trades)
    )
    assert fleet == summary
    parts = ["fold_confidence", "allocation_weights", "portfolio_figures (summary + 3 breakdowns, one sort)"]
    results["TOTAL fold + allocation + portfolio_figures"] = [
        (sum(results[p][i][0] for p in parts), sum(results[p][i][1] for p in parts))
        for i in range(args.repeat)
    ]

    width = max(map(len, results))
    print(f"{'':{width}}  {'wall best':>9}  {'median':>7}  {'CPU best':>8}  {'median':>7}   (seconds)")
    for name, runs in results.items():
        wall, cpu = [r[0] for r in runs], [r[1] for r in runs]
        print(
            f"{name:{width}}  {min(wall):9.3f}  {statistics.median(wall):7.3f}  "
            f"{min(cpu):8.3f}  {statistics.median(cpu):7.3f}"
        )
    print(
        f"{len(state):,} agents folded, {int(state['updates'].sum()):,} updates; "
        f"{len(weights):,} agents weighted; portfolio {summary['pnl_bps']:.1f} bps, "
        f"max drawdown {summary['max_drawdown_bps']:.1f} bps"
    )
    print(
        f"peak RSS at the end: {peak_rss_mib():,.0f} MiB; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
