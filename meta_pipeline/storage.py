"""The warehouse: one Parquet file per asset partition under ``<root>/warehouse``.

Why Parquet files rather than one DuckDB database: a daily partition is a file that a run replaces
atomically (write a temp file, then rename), so re-running a partition is idempotent, parallel runs
of different partitions never contend for a database lock, and the same layout works unchanged on
an object store. Anyone can query it in place, e.g.
``duckdb -c "select * from 'warehouse/reconciled_trades/*.parquet'"`` or ``pandas.read_parquet``.

Layout::

    warehouse/<asset>/<YYYY-MM-DD>.parquet     daily-partitioned assets
    warehouse/<asset>/<YYYY-MM-DD>.json        sidecar facts about a partition (e.g. price fetches)
    warehouse/<asset>.parquet                  unpartitioned assets
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` so readers see either the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


class Warehouse:
    """Partitioned Parquet tables under one directory."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def partition_path(self, asset: str, key: str, suffix: str = ".parquet") -> Path:
        return self.directory / asset / f"{key}{suffix}"

    def table_path(self, asset: str) -> Path:
        return self.directory / f"{asset}.parquet"

    def write_partition(self, asset: str, key: str, frame: pd.DataFrame) -> Path:
        path = self.partition_path(asset, key)
        _write_parquet(path, frame)
        return path

    def read_partition(self, asset: str, key: str) -> pd.DataFrame | None:
        path = self.partition_path(asset, key)
        return pd.read_parquet(path) if path.exists() else None

    def read_partitions(self, asset: str, keys: Iterable[str]) -> pd.DataFrame | None:
        """Concatenate the stored partitions among ``keys``; None if none is stored."""
        frames = [f for f in (self.read_partition(asset, k) for k in keys) if f is not None]
        frames = [f for f in frames if len(f)] or frames[:1]
        return pd.concat(frames, ignore_index=True) if frames else None

    def stored_keys(self, asset: str) -> list[str]:
        folder = self.directory / asset
        return sorted(p.stem for p in folder.glob("*.parquet")) if folder.is_dir() else []

    def write_sidecar(self, asset: str, key: str, obj: Any) -> None:
        atomic_write_json(self.partition_path(asset, key, ".json"), obj)

    def read_sidecar(self, asset: str, key: str) -> Any:
        path = self.partition_path(asset, key, ".json")
        return json.loads(path.read_text()) if path.exists() else None

    def write_table(self, asset: str, frame: pd.DataFrame) -> Path:
        path = self.table_path(asset)
        _write_parquet(path, frame)
        return path

    def read_table(self, asset: str) -> pd.DataFrame | None:
        path = self.table_path(asset)
        return pd.read_parquet(path) if path.exists() else None


def stable_types(frame: pd.DataFrame) -> pd.DataFrame:
    """Text is always stored as a string column, never as Parquet ``null`` (a column that happened
    to be all-missing in one run) or a dictionary (categoricals), so partitions written by different
    runs read back as one table."""
    text = [
        column
        for column in frame.columns
        if isinstance(frame[column].dtype, pd.CategoricalDtype)
        or (
            frame[column].dtype == object
            and frame[column].map(lambda v: v is None or isinstance(v, str)).all()
        )
    ]
    if not text:
        return frame
    return frame.assign(**{column: frame[column].astype(object).astype("str") for column in text})


def _write_parquet(path: Path, frame: pd.DataFrame) -> None:
    frame = stable_types(frame)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
