"""``alpha/reconciled.jsonl``: the app's view of realized PnL, rebuilt from the warehouse.

Matured rows only, one line per (signal, horizon), sorted by (``ts``, ``run_id``, ``horizon_hours``),
written to a temp file and renamed so the app never reads half a file. Because it is rebuilt from
the per-day Parquet partitions (each replaced whole on every run), a (signal, horizon) can never
appear twice, however often anything is re-run.

Fields: the app's ``ts, agent, run_id, symbol, direction, entry_price, exit_price, horizon_hours,
realized_pnl_bps, regime, confidence, score_final`` plus ``instrument, entry_time, exit_time,
net_pnl_bps, status``. Times are UTC ISO-8601 with ``Z``; ``horizon_hours`` is an integer when whole.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from meta_pipeline import names
from meta_pipeline.reconcile import MATURED
from meta_pipeline.storage import Warehouse, atomic_write_text, dumps_strict

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


def matured_rows(warehouse: Warehouse) -> pd.DataFrame:
    frames = []
    for key in warehouse.stored_keys(names.RECONCILED_TRADES):
        part = warehouse.read_partition(names.RECONCILED_TRADES, key)
        if part is not None and len(part):
            frames.append(part[part["status"].astype(str) == MATURED][EXPORT_FIELDS])
    if not frames:
        return pd.DataFrame(columns=EXPORT_FIELDS)
    rows = pd.concat(frames, ignore_index=True)
    rows["run_id"] = rows["run_id"].astype(str)
    return rows.sort_values(["ts", "run_id", "horizon_hours"], kind="stable", ignore_index=True)


def iso_utc(values: pd.Series) -> list[str | None]:
    """UTC timestamps → ``2024-03-01T10:00:00Z`` (fractional seconds only when present)."""
    text = pd.Series(values).dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return [None if pd.isna(t) else (t[:-7] if t.endswith(".000000") else t.rstrip("0")) + "Z" for t in text]


def to_jsonl(rows: pd.DataFrame) -> str:
    """One JSON object per row, ``EXPORT_FIELDS`` in order. Raises ``ValueError`` rather than write
    a non-finite number (``Infinity`` is not JSON)."""
    if rows.empty:
        return ""
    columns = {name: rows[name].tolist() for name in EXPORT_FIELDS}
    for name in ("ts", "entry_time", "exit_time"):
        columns[name] = iso_utc(rows[name])
    columns["horizon_hours"] = [
        int(h) if float(h).is_integer() else float(h) for h in columns["horizon_hours"]
    ]
    columns["status"] = [str(s) for s in columns["status"]]
    lines = []
    for values in zip(*(columns[name] for name in EXPORT_FIELDS), strict=True):
        record = {name: _json_value(value) for name, value in zip(EXPORT_FIELDS, values, strict=True)}
        lines.append(dumps_strict(record, ensure_ascii=False))
    return "\n".join(lines) + ("\n" if lines else "")


def _json_value(value):
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def export_reconciled(warehouse: Warehouse, path: Path) -> int:
    """Rewrite ``path`` atomically from the warehouse; returns the number of lines written."""
    rows = matured_rows(warehouse)
    atomic_write_text(path, to_jsonl(rows))
    return len(rows)
