#!/usr/bin/env python
"""Cold end to end through the command line, against the loopback exchange (no internet).

    python benchmarks/bench_cold.py [--latency 0.05] [--signals 800] [--days 20]

800 signals on 4 symbols over 20 UTC days (real Binance BTCUSDT klines of 2024-03, scaled per
symbol), horizons 1/4/24 h, every request to the fake exchange delayed by ``--latency`` (50 ms).
A fresh data root and a fresh Dagster instance, then one ``python -m meta_pipeline run`` over the
signal days and the days their exits reach, as an operator would run it. It prints the wall time
and where it goes: the process start with the definitions loaded (measured on its own), and the
run itself (ingestion, price fetches, reconciliation, export), with the request count.

A per-signal pricer needs 6 requests a signal (entry and exit for each horizon): 4,800 requests,
≈ 240 s at 50 ms.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from meta_pipeline.prices import read_kline_csv  # noqa: E402
from meta_pipeline.prices.model import normalize_bars  # noqa: E402
from meta_pipeline_tests.fake_exchange import MARKET_DATA_DIR, FakeExchange  # noqa: E402

SYMBOLS = {"BTCUSDT": 1.0, "ETHUSDT": 0.055, "SOLUSDT": 0.0021, "BNBUSDT": 0.0065}
FIRST_DAY = dt.date(2024, 3, 1)
REACH_DAYS = 2


def bars(days: int) -> pd.DataFrame:
    frames = []
    for symbol, scale in SYMBOLS.items():
        for d in range(days + REACH_DAYS):
            day = FIRST_DAY + dt.timedelta(days=d)
            df = read_kline_csv(MARKET_DATA_DIR / "BTCUSDT" / f"BTCUSDT-1m-{day:%Y-%m-%d}.csv")
            for column in ("open", "high", "low", "close"):
                df[column] = (df[column] * scale).round(6)
            frames.append(df.assign(instrument=symbol))
    return normalize_bars(pd.concat(frames, ignore_index=True))


def write_inputs(root: Path, n: int, days: int, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp(FIRST_DAY, tz="UTC")
    ts = start + pd.to_timedelta(np.sort(rng.integers(0, days * 86_400, size=n)), unit="s")
    (root / "alpha").mkdir(parents=True)
    (root / "telemetry").mkdir()
    with (
        (root / "alpha" / "events.jsonl").open("w") as signals,
        (root / "telemetry" / "events.jsonl").open("w") as runs,
    ):
        for i, t in enumerate(ts):
            stamp = t.strftime("%Y-%m-%dT%H:%M:%SZ")
            symbol = rng.choice(list(SYMBOLS))
            side = rng.choice(["LONG", "SHORT"])
            signals.write(
                json.dumps(
                    {
                        "ts": stamp,
                        "agent": f"a{i % 10}",
                        "run_id": f"r{i}",
                        "symbol": symbol,
                        "direction": side,
                    }
                )
                + "\n"
            )
            runs.write(
                json.dumps(
                    {"ts": stamp, "agent": f"a{i % 10}", "run_id": f"r{i}", "latency_ms": 800, "errors": 0}
                )
                + "\n"
            )


def run_durations(home: Path) -> list[tuple[str, float]]:
    """(job name, wall seconds from start to end) of every run recorded in the instance at ``home``."""
    code = (
        "import dagster as dg, json\n"
        "with dg.DagsterInstance.get() as i:\n"
        "    rs = i.get_run_records()\n"
        "    print(json.dumps([(r.dagster_run.job_name, r.end_time - r.start_time) for r in reversed(rs)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "DAGSTER_HOME": str(home)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [tuple(x) for x in json.loads(out.stdout)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--signals", type=int, default=800)
    parser.add_argument("--days", type=int, default=20)
    args = parser.parse_args()
    if args.days + REACH_DAYS > 22:
        parser.error("the committed klines cover 22 days: --days at most 20")

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    work = Path(tempfile.mkdtemp(prefix="bench_cold_"))
    try:
        root, home = work / "root", work / "dagster_home"
        write_inputs(root, args.signals, args.days)
        home.mkdir()
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
        last = FIRST_DAY + dt.timedelta(days=args.days - 1 + REACH_DAYS)
        with FakeExchange(bars(args.days), latency=args.latency) as fx:
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("META_PIPELINE_", "DAGSTER_"))},
                "META_PIPELINE_ROOT": str(root),
                "META_PIPELINE_PRICE_SOURCES": "binance",
                "BINANCE_BASE_URL": fx.binance_url,
                "META_PIPELINE_START_DATE": FIRST_DAY.isoformat(),
                "DAGSTER_HOME": str(home),
                "PYTHONPATH": str(ROOT),
            }
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import meta_pipeline.definitions"], env=env, check=True)
            load = time.perf_counter() - t0
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "meta_pipeline", "run", "--start", FIRST_DAY.isoformat(), "--end", last.isoformat()],
                env=env, capture_output=True, text=True,
            )  # fmt: skip
            total = time.perf_counter() - t0
            requests = fx.count()
            runs = run_durations(home)
        if proc.returncode:
            sys.exit(proc.stderr[-3000:])
        lines = (root / "alpha" / "reconciled.jsonl").read_text().count("\n")
        symbol_days = len(SYMBOLS) * (args.days + REACH_DAYS)
        print(f"{args.signals} signals × 3 horizons on {len(SYMBOLS)} symbols over {args.days} days; "
              f"{args.latency * 1000:.0f} ms per request; loopback exchange")  # fmt: skip
        print(f"cold `meta-pipeline run` end to end: {total:.2f} s  ({requests} requests for {symbol_days} "
              f"symbol-days, {lines} matured rows exported)")  # fmt: skip
        print(
            f"  of which process start + definitions load: {load:.2f} s; the run itself: {total - load:.2f} s"
        )
        for job, seconds in runs:
            print(f"    run of {job}: {seconds:.2f} s")
        print(
            f"a per-signal pricer: {6 * args.signals} requests ≈ {6 * args.signals * args.latency:.0f} s of latency alone"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
