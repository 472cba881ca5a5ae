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

The partitions may live on an object store instead (``META_PIPELINE_WAREHOUSE_URL``, e.g.
``s3://bucket/prefix``, addressed through fsspec with ``universal-pathlib``): the same layout under
that prefix. A PUT replaces an object whole, so each partition is still replaced atomically there
(readers see the old object or the new one, never a part). What must stay on the data root's own
disk stays there: the staging of new input rows and its locks (``Warehouse.directory``).

Facts about a partition that must never disagree with its rows (the price fetches behind a day of
bars) are stored in the same Parquet file, as JSON in its key-value metadata
(:meth:`Warehouse.read_partition_facts`): one file, one rename, one unit.

Every write creates its file with normal permissions and cleans up the temp files of dead writers
(see :mod:`meta_pipeline.atomic_files`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
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
    """Partitioned Parquet tables under one location.

    ``directory`` is the local warehouse directory on the data root (always local: the staging of
    input rows and its file locks live there). ``location`` is where the partitions are stored: by
    default that same directory; or an fsspec URL such as ``s3://bucket/prefix`` (credentials and
    endpoint from the standard environment of the backend, e.g. ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for S3). Paths returned for a remote location are
    ``upath.UPath`` objects; read them through this class (or :func:`open_for_read`). A missing
    object reads as a missing partition, whether it never existed or was deleted between the
    listing and the read."""

    def __init__(self, directory: Path, location: str | os.PathLike | None = None):
        self.directory = Path(directory)
        self.remote = is_url(location)
        if self.remote:
            from upath import UPath  # only a deployment with an object store pays for fsspec

            self.location = UPath(str(location).rstrip("/"))
        else:
            self.location = Path(location) if location else self.directory

    def partition_path(self, asset: str, key: str) -> Path:
        return self.location / asset / f"{key}.parquet"

    def table_path(self, asset: str) -> Path:
        return self.location / f"{asset}.parquet"

    def write_partition(self, asset: str, key: str, frame: pd.DataFrame, facts: Any = None) -> Path:
        """Replace one partition; ``facts`` (JSON-able) is stored with the rows, in the same file."""
        path = self.partition_path(asset, key)
        write_parquet(path, frame, facts)
        return path

    def read_partition(self, asset: str, key: str) -> pd.DataFrame | None:
        return _read_frame(self.partition_path(asset, key))

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
        folder = self.location / asset
        return sorted(p.stem for p in folder.glob("*.parquet")) if folder.is_dir() else []

    def holds_rows(self, asset: str) -> bool:
        """Whether any stored partition of ``asset`` has at least one row (reads only footers)."""
        folder = self.location / asset
        if not folder.is_dir():
            return False
        for path in folder.glob("*.parquet"):
            with open_for_read(path) as source:
                if pq.read_metadata(source).num_rows:
                    return True
        return False

    def fingerprint(self, path: Path) -> list[int]:
        """``[size in bytes, modified_ns]`` of a file of this warehouse: what tells a replaced partition
        from the one seen before (a replacement gets a new modification time)."""
        if not self.remote:
            stat = path.stat()
            return [stat.st_size, stat.st_mtime_ns]
        return [int(path.fs.info(path.path)["size"]), self.modified_ns(path)]

    def modified_ns(self, path: Path) -> int:
        """When the file at ``path`` (a path of this warehouse) was last replaced, in ns since the
        epoch (an object's ``LastModified`` on an object store)."""
        if not self.remote:
            return path.stat().st_mtime_ns
        modified = path.fs.info(path.path).get("LastModified")
        return int(pd.Timestamp(modified).value) if modified is not None else 0

    def write_table(self, asset: str, frame: pd.DataFrame, facts: Any = None) -> Path:
        path = self.table_path(asset)
        write_parquet(path, frame, facts)
        return path

    def read_table_facts(self, asset: str) -> Any:
        """The facts stored with an unpartitioned table (None when absent)."""
        return _read_facts(self.table_path(asset))

    def read_table(self, asset: str) -> pd.DataFrame | None:
        return _read_frame(self.table_path(asset))


def is_url(location: str | os.PathLike | None) -> bool:
    """Whether ``location`` is an fsspec URL (``s3://…``) rather than a local path."""
    return location is not None and not isinstance(location, Path) and "://" in str(location)


def open_for_read(path: Path):
    """A context manager giving what pyarrow reads: the path itself when local; on an object store the
    whole object fetched in one GET. One GET is one version of the object: ranged reads (footer first,
    then the columns) could straddle a replacement of the partition by another run."""
    if _is_local(path):
        return contextlib.nullcontext(str(path))
    return io.BytesIO(path.fs.cat_file(path.path))


def _is_local(path: Path) -> bool:
    """A plain ``pathlib`` path (a local file), not a ``upath.UPath`` of an object store."""
    return type(path).__module__.startswith("pathlib")


def _read_frame(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    with open_for_read(path) as source:
        return pd.read_parquet(source)


def _read_facts(path: Path) -> Any:
    if not path.exists():
        return None
    with open_for_read(path) as source:
        metadata = pq.read_schema(source).metadata or {}
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
    if _is_local(path):
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return
    # an object store: the whole file in one PUT, which replaces the object atomically
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    path.write_bytes(buffer.getvalue())
