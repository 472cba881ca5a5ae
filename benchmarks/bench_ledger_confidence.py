"""Benchmark of the incremental confidence fold (not a test): ``fold_confidence`` over every stored day
(what the ``confidence_state`` asset does today) against a tick through
:func:`meta_pipeline.supervisor.ledger_confidence.ledger_confidence`, on a year of synthetic history.

    python benchmarks/bench_ledger_confidence.py [--trades 1000000] [--agents 10000] [--days 365]

The history is :func:`bench_significance.synthetic_trades` written as ``reconciled_trades``
partitions, one per signal day (as ``bench_supervisor_ledger.py`` writes them). Each phase runs in its
own Python process, so its peak RSS (``resource.getrusage``) is its own:

* ``full``: ``history.matured_trades`` + ``fold_confidence`` of all days;
* ``build``: the ledger's first call (reads every day, writes the day files and checkpoints);
* ``noop``: a call with nothing changed;
* ``tick``: one new signal day appended, then the call;
* ``tick+rewrite``: another day appended and the day before rewritten (its trades maturing);
* ``late``: a late trade in a day 200 days back, then the call (resumes from there);
* ``check``: a call with nothing changed, compared bit for bit with the full fold.
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

import pandas as pd

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_significance import synthetic_trades  # noqa: E402
from bench_supervisor_ledger import _rows  # noqa: E402

from meta_pipeline import names  # noqa: E402
from meta_pipeline.storage import Warehouse  # noqa: E402
from meta_pipeline.supervisor import history  # noqa: E402
from meta_pipeline.supervisor.confidence import confidence_json, fold_confidence  # noqa: E402
from meta_pipeline.supervisor.ledger_confidence import ledger_confidence  # noqa: E402


def _write(warehouse: Warehouse, reconciled: pd.DataFrame) -> None:
    day = reconciled["ts"].dt.strftime("%Y-%m-%d")
    for key, index in reconciled.groupby(day, sort=True).groups.items():
        warehouse.write_partition(names.RECONCILED_TRADES, key, reconciled.loc[index].reset_index(drop=True))


def _day(args, day: int, seed: int) -> pd.DataFrame:
    trades = synthetic_trades(args.trades // args.days, args.agents, 1, seed=seed)
    shift = pd.Timedelta(days=day)
    trades["ts"] += shift
    trades["exit_ts"] += shift
    trades["run_id"] = trades["run_id"].astype(str) + f"-d{day}"
    return _rows(trades, seed)[0]


def phase(args, root: Path, name: str) -> dict:
    warehouse = Warehouse(root / "warehouse")
    result: dict = {}
    if name == "tick":
        _write(warehouse, _day(args, args.days, 101))
    elif name == "tick+rewrite":
        _write(warehouse, _day(args, args.days + 1, 102))
        key = warehouse.stored_keys(names.RECONCILED_TRADES)[-2]
        old = warehouse.read_partition(names.RECONCILED_TRADES, key)
        warehouse.write_partition(
            names.RECONCILED_TRADES, key, old.assign(net_pnl_bps=old["net_pnl_bps"] - 1)
        )
    elif name == "late":
        key = warehouse.stored_keys(names.RECONCILED_TRADES)[-200]
        old = warehouse.read_partition(names.RECONCILED_TRADES, key)
        late = old.iloc[:1].assign(run_id="late", net_pnl_bps=-500.0)
        warehouse.write_partition(names.RECONCILED_TRADES, key, pd.concat([old, late], ignore_index=True))
    began = time.perf_counter()  # the writes above are the pipeline's, not the supervisor's
    if name == "full":
        state = fold_confidence(history.matured_trades(warehouse))
    else:
        state, report = ledger_confidence(root / "ledger", warehouse, checkpoint_days=args.checkpoint_days)
        meta = report.as_metadata()
        result.update({k: meta[k] for k in ("mode", "days_read", "snapshot_files_read", "day_files_written")})
    result["seconds"] = round(time.perf_counter() - began, 3)
    result["agents"] = len(state)
    if name == "check":
        expected = fold_confidence(history.matured_trades(warehouse))
        pd.testing.assert_frame_equal(state, expected, check_exact=True)
        assert state.attrs == expected.attrs
        assert json.dumps(confidence_json(state)) == json.dumps(confidence_json(expected))
        result["check"] = "ledger == full fold (exact, same confidence.json)"
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--checkpoint-days", type=int, default=7)
    parser.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--root", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:  # a child: one phase, its figures as JSON
        root = Path(args.root)
        if args.phase == "build-history":
            _write(
                Warehouse(root / "warehouse"),
                _rows(synthetic_trades(args.trades, args.agents, args.days), 1)[0],
            )
        else:
            print(json.dumps(phase(args, root, args.phase)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        common = [sys.executable, __file__, "--trades", str(args.trades), "--agents", str(args.agents)]
        common += ["--days", str(args.days), "--checkpoint-days", str(args.checkpoint_days), "--root", tmp]
        began = time.perf_counter()
        subprocess.run([*common, "--phase", "build-history"], check=True)
        print(
            f"history: {args.trades:,} trades, {args.agents:,} agents, {args.days} days "
            f"written in {time.perf_counter() - began:.1f} s"
        )
        for name in ("full", "build", "noop", "tick", "tick+rewrite", "late", "check"):
            out = subprocess.run([*common, "--phase", name], check=True, capture_output=True, text=True)
            figures = json.loads(out.stdout.strip().splitlines()[-1])
            seconds, rss = figures.pop("seconds"), figures.pop("peak_rss_mb")
            print(f"{name:>13}: {seconds:7.3f} s  peak RSS {rss:7.1f} MB  {figures}")
        size = sum(p.stat().st_size for p in (Path(tmp) / "ledger").rglob("*") if p.is_file())
        print(f"ledger size: {size / 2**20:.1f} MB")


if __name__ == "__main__":
    main()
