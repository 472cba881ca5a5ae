"""The app's view of realized PnL: ``alpha/reconciled/<YYYY-MM-DD>.jsonl`` per signal day, and
``alpha/reconciled.jsonl`` for all days (docs/rules.md, *File contract*).

Matured rows only, one line per (signal, horizon), sorted by (``ts``, ``run_id``, ``horizon_hours``).
Fields: the app's ``ts, agent, run_id, symbol, direction, entry_price, exit_price, horizon_hours,
realized_pnl_bps, regime, confidence, score_final`` plus ``instrument, entry_time, exit_time,
net_pnl_bps, status``. Times are UTC ISO-8601 with ``Z``; ``horizon_hours`` is an integer.

Each run of ``reconciled_trades`` rewrites the day files of the days it recomputed (each replaced
atomically), so a tick costs what it changed. The full file is refreshed on its own cadence by
:func:`refresh_full_export`: the day files, in day order, copied as bytes — never parsed — into a
temp file that replaces ``alpha/reconciled.jsonl`` atomically; an index beside it records each day's
byte range, so the days before the first changed one are copied from the previous file as one range
(``os.copy_file_range``). Days are disjoint and each day file is
sorted, so the concatenation is sorted and holds each (signal, horizon) once. Only days whose
``reconciled_trades`` partition exists are exported; a day file missing or older than its partition
(a crash between the two writes) is rebuilt from the partition first.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from meta_pipeline import names
from meta_pipeline.jsonl import encode_rows
from meta_pipeline.reconcile import MATURED
from meta_pipeline.storage import Warehouse, atomic_path, atomic_write_bytes, atomic_write_json

EXPORT_FIELDS = [
    "ts",
    "agent",
    "run_id",
    "symbol",
    "direction",
    "entry_price",
    "exit_price",
    "horizon_hours",
    "realized_pnl_bps",
    "regime",
    "confidence",
    "score_final",
    "instrument",
    "entry_time",
    "exit_time",
    "net_pnl_bps",
    "status",
]


def matured(rows: pd.DataFrame) -> pd.DataFrame:
    """The matured rows of one day's partition, in export order."""
    if rows is None or rows.empty:
        return pd.DataFrame(columns=EXPORT_FIELDS)
    out = rows[rows["status"].astype(str) == MATURED][EXPORT_FIELDS]
    out = out.assign(run_id=out["run_id"].astype(str))
    return out.sort_values(["ts", "run_id", "horizon_hours"], kind="stable", ignore_index=True)


def day_file(directory: Path, day: str) -> Path:
    return Path(directory) / f"{day}.jsonl"


def write_day(directory: Path, day: str, rows: pd.DataFrame) -> int:
    """Replace the day file of ``day`` with the matured ``rows`` of its partition; returns lines."""
    out = matured(rows)
    atomic_write_bytes(day_file(directory, day), encode_rows(out, EXPORT_FIELDS))
    return len(out)


COPY_CHUNK = 64 * 1024 * 1024


def index_path(target: Path) -> Path:
    """``alpha/.reconciled.jsonl.index.json``: which bytes of the full export came from which day file."""
    return target.with_name(f".{target.name}.index.json")


def _fingerprint(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _copy_range(source, out, offset: int, length: int) -> None:
    """Copy ``length`` bytes of ``source`` from ``offset`` to the end of ``out`` — in the kernel
    (``os.copy_file_range``; a reflink on file systems that share blocks), else through a buffer."""
    done = 0
    try:
        while done < length:
            copied = os.copy_file_range(source.fileno(), out.fileno(), length - done, offset + done)
            if copied == 0:
                break
            done += copied
    except (AttributeError, OSError):
        source.seek(offset + done)
        while done < length and (chunk := source.read(min(COPY_CHUNK, length - done))):
            out.write(chunk)
            done += len(chunk)
    if done != length:
        raise OSError(f"copied {done} of {length} bytes from {source.name}")
    out.seek(0, os.SEEK_END)


def refresh_full_export(warehouse: Warehouse, directory: Path, target: Path) -> tuple[int, int, int]:
    """Rebuild ``target`` from the day files of every stored ``reconciled_trades`` partition.

    Returns (days, lines, bytes). The days up to the first one whose day file changed since the
    last refresh (per the index beside ``target``) are copied from the current ``target`` as one
    byte range; the rest from their day files. Nothing is parsed, and memory stays at one buffer.
    A day file that is missing or older than its partition is written from the partition first.
    """
    keys = warehouse.stored_keys(names.RECONCILED_TRADES)
    for key in keys:
        path = day_file(directory, key)
        partition = warehouse.partition_path(names.RECONCILED_TRADES, key)
        if not path.exists() or path.stat().st_mtime_ns < warehouse.modified_ns(partition):
            write_day(directory, key, warehouse.read_partition(names.RECONCILED_TRADES, key))
    fingerprints = {key: _fingerprint(day_file(directory, key)) for key in keys}
    old = _read_index(target)
    # the unchanged prefix: the same days, in the same order, with the same day files
    prefix_days = 0
    for key, entry in zip(keys, old.get("days", []), strict=False):
        if entry["day"] != key or entry["file"] != fingerprints[key]:
            break
        prefix_days += 1
    entries, lines, size = [], 0, 0
    with atomic_path(target) as tmp, open(tmp, "wb") as out:
        if prefix_days:
            kept = old["days"][:prefix_days]
            length = kept[-1]["offset"] + kept[-1]["length"]
            with open(target, "rb") as previous:
                _copy_range(previous, out, 0, length)
            entries, size, lines = list(kept), length, sum(e["lines"] for e in kept)
        for key in keys[prefix_days:]:
            day_lines = day_bytes = 0
            with open(day_file(directory, key), "rb") as day:
                while chunk := day.read(COPY_CHUNK):
                    out.write(chunk)
                    day_lines += chunk.count(b"\n")
                    day_bytes += len(chunk)
            entries.append(
                {
                    "day": key,
                    "offset": size,
                    "length": day_bytes,
                    "lines": day_lines,
                    "file": fingerprints[key],
                }
            )
            size, lines = size + day_bytes, lines + day_lines
    atomic_write_json(index_path(target), {"target": _fingerprint(target), "days": entries})
    return len(keys), lines, size


def _read_index(target: Path) -> dict:
    """The index of the current ``target``, or {} when there is none or it describes another file
    (a crash between the two writes, or a file replaced by hand)."""
    try:
        index = json.loads(index_path(target).read_text())
        return index if target.exists() and index.get("target") == _fingerprint(target) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
