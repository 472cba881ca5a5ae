"""Benchmark of ingestion (not a test): ordinary JSON Lines through ``ingest_bytes``, fast lane and
careful lane (``fast=False``), for signals and telemetry.

Generates ``--lines`` ordinary signal lines (like
``{"ts":"2024-03-05T10:12:12.123Z","agent":"a3","run_id":"r17","symbol":"BTC","direction":"LONG",
"confidence":0.5,"score_final":1.2,"regime":"trend","model":"m"}``) and as many telemetry lines,
then prints lines/s per lane (best of ``--repeat``), by wall clock and by the process's CPU time
(the CPU figure is steadier on a shared machine), and checks that both lanes give the same frames.

    python benchmarks/bench_ingest.py [--lines 200000] [--repeat 3] [--hostile 0.0]

``--hostile 0.01`` mixes that share of hostile lines (invalid JSON, lone surrogates, deep nesting,
huge numbers, odd metrics …) in, to see the cost of the careful lane for them.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from meta_pipeline import ingest  # noqa: E402

_HOSTILE = [
    b"this is not json",
    b'{"ts": "2024-03-05T10:00:00Z", "agent": "a", "run_id": "r", "note": "\\ud800"}',
    b'{"ts": ' + b"[" * 80,
    b'{"ts": "2024-03-05T10:00:00Z", "agent": "a", "run_id": "r", "symbol": "BTC", "direction": "LONG", '
    b'"score_final": ' + b"9" * 400 + b"}",
    b'{"ts": "2024-03-05T10:00:00Z", "agent": "a", "run_id": "r", "latency_ms": "fast", "errors": ["x"]}',
    b'{"ts": "2024-03-0{"ts": "2024-03-05T10:00:00Z", "agent": "a", "run_id": "g", "symbol": "BTC", '
    b'"direction": "LONG"}',
    b'{"ts": "yesterday", "agent": "a", "run_id": "r", "symbol": "BTC", "direction": "LONG"}',
]


def _ts(rng: random.Random) -> str:
    ms = rng.randrange(30 * 86_400_000)
    seconds, millis = divmod(ms, 1000)
    day, seconds = divmod(seconds, 86_400)
    return f"2024-03-{day + 1:02d}T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.{millis:03d}Z"


def signal_lines(n: int, hostile: float, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    symbols = ["BTC", "ETH", "SOL", "BTC/USDT", "ETHUSDT", "doge-usd", "BINANCE:XRPUSDT", "ADA"]
    lines = []
    for i in range(n):
        if hostile and rng.random() < hostile:
            lines.append(rng.choice(_HOSTILE))
            continue
        record = {
            "ts": _ts(rng),
            "agent": f"a{rng.randrange(40)}",
            "run_id": f"r{i}",
            "symbol": rng.choice(symbols),
            "direction": rng.choice(["LONG", "SHORT"]),
            "confidence": round(rng.random(), 3),
            "score_final": round(rng.gauss(0, 1), 4),
            "regime": rng.choice(["trend", "range"]),
            "model": "m",
        }
        lines.append(json.dumps(record, separators=(",", ":")).encode())
    return b"\n".join(lines) + b"\n"


def telemetry_lines(n: int, hostile: float, seed: int = 2) -> bytes:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        if hostile and rng.random() < hostile:
            lines.append(rng.choice(_HOSTILE))
            continue
        record = {
            "ts": _ts(rng),
            "agent": f"a{rng.randrange(40)}",
            "run_id": f"r{i}",
            "latency_ms": round(rng.uniform(50, 3000), 1),
            "tokens_in": rng.randrange(100, 5000),
            "tokens_out": rng.randrange(10, 2000),
            "errors": rng.choice([0, 0, 0, 1]),
            "cost_usd": round(rng.uniform(0, 0.1), 5),
            "model": "m",
        }
        lines.append(json.dumps(record, separators=(",", ":")).encode())
    return b"\n".join(lines) + b"\n"


def measure(data: bytes, reader: tuple, fast: bool, repeat: int) -> tuple[float, float, ingest.IngestResult]:
    """Best wall seconds, best CPU seconds, and the last result."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = ingest.ingest_bytes(data, *reader, fast=fast)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--hostile", type=float, default=0.0, help="share of hostile lines (0 … 1)")
    args = parser.parse_args()

    inputs = [
        ("signals", signal_lines(args.lines, args.hostile), ingest.validate_signal, ingest.signal_key,
         ingest.SIGNAL_COLUMNS),
        ("telemetry", telemetry_lines(args.lines, args.hostile), ingest.validate_telemetry, ingest.telemetry_key,
         ingest.TELEMETRY_COLUMNS),
    ]  # fmt: skip
    print(f"{args.lines:,} lines per input, best of {args.repeat}; hostile share {args.hostile}")
    for name, data, *reader in inputs:
        results = {}
        for lane, fast in (("fast", True), ("careful", False)):
            wall, cpu, result = measure(data, tuple(reader), fast, args.repeat)
            results[lane] = result
            print(
                f"{name:9s} {lane:7s} {wall:6.3f} s wall  {args.lines / wall:>9,.0f} lines/s   "
                f"{cpu:6.3f} s CPU  {args.lines / cpu:>9,.0f} lines/s   "
                f"({len(result.valid):,} rows, {len(result.quarantine):,} quarantined)"
            )
        pd.testing.assert_frame_equal(results["fast"].valid, results["careful"].valid, check_exact=True)
        pd.testing.assert_frame_equal(
            results["fast"].quarantine, results["careful"].quarantine, check_exact=True
        )
    print("fast and careful lanes gave the same frames")


if __name__ == "__main__":
    main()
