"""The plain encoding of the export — one dict per row through ``json.dumps`` — kept as the
reference the fast column-wise encoder (``meta_pipeline/jsonl.py``) must match byte for byte."""

import math

import pandas as pd

from meta_pipeline.export import EXPORT_FIELDS
from meta_pipeline.jsonl import iso_utc
from meta_pipeline.storage import dumps_strict


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
