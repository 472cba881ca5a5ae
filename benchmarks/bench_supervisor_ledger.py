"""Benchmark of the supervisor's bounded reads (not a test): the agent table from every stored day
(what the ``agent_stats`` asset does today) against a tick through the ledger
(:mod:`meta_pipeline.supervisor.ledger`), on a year of synthetic history in a temp warehouse.

    python benchmarks/bench_supervisor_ledger.py [--trades 1000000] [--agents 10000] [--days 365]

The history is :func:`bench_significance.synthetic_trades` (24 h trades on the 30-minute grid, 8
instruments) written as ``reconciled_trades`` partitions, one per signal day, with one telemetry run
per trade (integer-ms latencies, 3 % erroring). Each phase runs in its own Python process, so its
peak RSS (``resource.getrusage``) is its own:

* ``full``: ``history.matured_trades`` + ``history.telemetry_runs`` + ``stats.agent_stats`` of all days;
* ``build``: the ledger's first call (reads every day once, writes the day summaries);
* ``tick``: one new day appended (its trades and runs), then the ledger's call;
* ``tick+rewrite``: another new day appended and the day before rewritten (its trades maturing),
  then the ledger's call;
* ``noop``: a call with nothing changed.

After the last phase the ledger's table is compared with the full computation (rtol 1e-9).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_significance import synthetic_trades  # noqa: E402

from meta_pipeline import names  # noqa: E402
from meta_pipeline.storage import Warehouse  # noqa: E402
from meta_pipeline.supervisor import history, ledger, stats  # noqa: E402


def _rows(trades: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``reconciled_trades`` and ``telemetry`` rows of a trades frame (text as pandas' str dtype)."""
    rng = np.random.default_rng(seed)
    n = len(trades)
    reconciled = pd.DataFrame(
        {
            "ts": trades["ts"],
            "agent": trades["agent"].astype("str"),
            "run_id": trades["run_id"].astype("str"),
            "instrument": trades["instrument"].astype("str"),
            "direction": trades["direction"].astype("str"),
            "horizon_hours": np.full(n, 24, dtype=np.int64),
            "realized_pnl_bps": trades["gross_bps"],
            "net_pnl_bps": trades["net_bps"],
            "status": pd.Series(["matured"] * n, dtype="str"),
            "regime": pd.Series(["trend"] * n, dtype="str"),
            "confidence": np.full(n, 0.5),
        }
    )
    runs = pd.DataFrame(
        {
            "agent": reconciled["agent"],
            "run_id": reconciled["run_id"],
            "ts": trades["ts"],
            "latency_ms": rng.integers(100, 3000, n).astype(np.float64),
            "errors": (rng.random(n) < 0.03).astype(np.float64),
            "cost_usd": rng.integers(0, 100, n) / 1000.0,
            "tokens_in": np.full(n, 1000.0),
            "tokens_out": np.full(n, 100.0),
        }
    )
    return reconciled, runs


def _write(warehouse: Warehouse, reconciled: pd.DataFrame, runs: pd.DataFrame) -> None:
    day = reconciled["ts"].dt.strftime("%Y-%m-%d")
    for key, index in reconciled.groupby(day, sort=True).groups.items():
        warehouse.write_partition(names.RECONCILED_TRADES, key, reconciled.loc[index].reset_index(drop=True))
        warehouse.write_partition(names.TELEMETRY, key, runs.loc[index].reset_index(drop=True))


def _day(args, day: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One more signal day of the same fleet: ``trades / days`` trades on day ``day``."""
    trades = synthetic_trades(args.trades // args.days, args.agents, 1, seed=seed)
    shift = pd.Timedelta(days=day)
    trades["ts"] += shift
    trades["exit_ts"] += shift
    trades["run_id"] = trades["run_id"].astype(str) + f"-d{day}"
    return _rows(trades, seed)


def build(args, root: Path) -> None:
    trades = synthetic_trades(args.trades, args.agents, args.days)
    _write(Warehouse(root / "warehouse"), *_rows(trades, 1))


def phase(args, root: Path, name: str) -> dict:
    warehouse = Warehouse(root / "warehouse")
    began = time.perf_counter()
    result: dict = {}
    if name == "full":
        table = stats.agent_stats(history.matured_trades(warehouse), history.telemetry_runs(warehouse))
        result["agents"] = len(table)
    else:
        if name == "tick":
            _write(warehouse, *_day(args, args.days, 101))
        elif name == "tick+rewrite":
            _write(warehouse, *_day(args, args.days + 1, 102))
            key = warehouse.stored_keys(names.RECONCILED_TRADES)[-2]
            old = warehouse.read_partition(names.RECONCILED_TRADES, key)
            warehouse.write_partition(
                names.RECONCILED_TRADES, key, old.assign(net_pnl_bps=old["net_pnl_bps"] - 1)
            )
        began = time.perf_counter()  # the writes above are the pipeline's, not the supervisor's
        table, report = ledger.ledger_agent_stats(root / "ledger", warehouse)
        result.update(report.as_metadata())
        if name == "check":
            expected = stats.agent_stats(history.matured_trades(warehouse), history.telemetry_runs(warehouse))
            pd.testing.assert_index_equal(table.index, expected.index)
            for column in table.columns:
                if column == "psr_reason":
                    assert table[column].equals(expected[column])
                else:
                    np.testing.assert_allclose(
                        table[column].to_numpy(float), expected[column].to_numpy(float), rtol=1e-9, atol=1e-9
                    )
            result["check"] = "ledger == full (rtol 1e-9)"
    result["seconds"] = round(time.perf_counter() - began, 3)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--root", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:  # a child: one phase, its figures as JSON
        root = Path(args.root)
        if args.phase == "build-history":
            build(args, root)
        else:
            print(json.dumps(phase(args, root, args.phase)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        common = [sys.executable, __file__, "--trades", str(args.trades), "--agents", str(args.agents)]
        common += ["--days", str(args.days), "--root", tmp]
        began = time.perf_counter()
        subprocess.run([*common, "--phase", "build-history"], check=True)
        print(
            f"history: {args.trades:,} trades, {args.agents:,} agents, {args.days} days "
            f"written in {time.perf_counter() - began:.1f} s"
        )
        for name in ("full", "build", "noop", "tick", "tick+rewrite", "check"):
            out = subprocess.run([*common, "--phase", name], check=True, capture_output=True, text=True)
            figures = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{name:>13}: {figures.pop('seconds'):7.3f} s  peak RSS {figures.pop('peak_rss_mb'):7.1f} MB  {figures}"
            )


if __name__ == "__main__":
    main()
