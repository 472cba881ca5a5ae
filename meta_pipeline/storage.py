"""The warehouse: one Parquet file per asset partition under ``<root>/warehouse``, and (re-exported
from :mod:`meta_pipeline.atomic_files`) the atomic file writes every output of the project goes through.

Why Parquet files rather than one DuckDB database: a daily partition is a file that a run replaces
atomically (write a temp file, then rename), so re-running a partition is idempotent, parallel runs
of different partitions never contend for a database lock, and the same layout works unchanged on
an object store. Anyone can query it in place, e.g.
``duckdb -c "select * from 'warehouse/reconciled_trades/*.parquet'"`` or ``pandas.read_parquet``.

Layout::

    warehouse/<asset>/<YYYY-MM-DD>.parquet     daily-partitioned assets
    warehouse/<asset>.parquet                  unpartitioned assets

Facts about a partition that must never disagree with its rows (the price fetches behind a day of
bars) are stored in the same Parquet file, as JSON in its key-value metadata
(:meth:`Warehouse.read_partition_facts`): one file, one rename, one unit.

Every write creates its file with normal permissions and cleans up the temp files of dead writers
(see :mod:`meta_pipeline.atomic_files`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# the atomic writes live in a standard-library-only module (the kill switch uses them without pandas);
# re-exported here so every caller of ``meta_pipeline.storage`` keeps working
from meta_pipeline.atomic_files import (  # noqa: F401  (re-exports)
    _TEMP,
    _process_alive,
    _umask,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    dumps_strict,
    remove_stale_temp_files,
)

FACTS_KEY = b"meta_pipeline.facts"


class Warehouse:
    """Partitioned Parquet tables under one directory."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def partition_path(self, asset: str, key: str) -> Path:
        return self.directory / asset / f"{key}.parquet"

    def table_path(self, asset: str) -> Path:
        return self.directory / f"{asset}.parquet"

    def write_partition(self, asset: str, key: str, frame: pd.DataFrame, facts: Any = None) -> Path:
        """Replace one partition; ``facts`` (JSON-able) is stored with the rows, in the same file."""
        path = self.partition_path(asset, key)
        write_parquet(path, frame, facts)
        return path

    def read_partition(self, asset: str, key: str) -> pd.DataFrame | None:
        path = self.partition_path(asset, key)
        return pd.read_parquet(path) if path.exists() else None

    def read_partition_facts(self, asset: str, key: str) -> Any:
        """The facts stored with a partition (``None`` if the partition or its facts are absent).
        Reads only the file's footer."""
        return _read_facts(self.partition_path(asset, key))

    def read_partitions(self, asset: str, keys: Iterable[str]) -> pd.DataFrame | None:
        """Concatenate the stored partitions among ``keys``; None if none is stored."""
        frames = [f for f in (self.read_partition(asset, k) for k in keys) if f is not None]
        frames = [f for f in frames if len(f)] or frames[:1]
        return pd.concat(frames, ignore_index=True) if frames else None

    def stored_keys(self, asset: str) -> list[str]:
        folder = self.directory / asset
        return sorted(p.stem for p in folder.glob("*.parquet")) if folder.is_dir() else []

    def holds_rows(self, asset: str) -> bool:
        """Whether any stored partition of ``asset`` has at least one row (reads only footers)."""
        folder = self.directory / asset
        return folder.is_dir() and any(pq.read_metadata(p).num_rows for p in folder.glob("*.parquet"))

    def write_table(self, asset: str, frame: pd.DataFrame, facts: Any = None) -> Path:
        path = self.table_path(asset)
        write_parquet(path, frame, facts)
        return path

    def read_table_facts(self, asset: str) -> Any:
        """The facts stored with an unpartitioned table (None when absent)."""
        return _read_facts(self.table_path(asset))

    def read_table(self, asset: str) -> pd.DataFrame | None:
        path = self.table_path(asset)
        return pd.read_parquet(path) if path.exists() else None


def _read_facts(path: Path) -> Any:
    if not path.exists():
        return None
    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(FACTS_KEY)
    return json.loads(raw) if raw is not None else None


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


def write_parquet(path: Path, frame: pd.DataFrame, facts: Any = None) -> None:
    """Write ``frame`` to ``path`` atomically as Parquet, ``facts`` (JSON) in its key-value metadata."""
    frame = stable_types(frame)
    if frame.attrs:  # in-memory annotations (pandas' attrs) are not part of the stored table
        frame = frame.copy(deep=False)
        frame.attrs = {}
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if facts is not None:
        metadata = dict(table.schema.metadata or {})
        metadata[FACTS_KEY] = dumps_strict(facts, sort_keys=True, default=str).encode("utf-8")
        table = table.replace_schema_metadata(metadata)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
