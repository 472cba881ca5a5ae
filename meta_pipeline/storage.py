"""The warehouse: one Parquet file per asset partition under ``<root>/warehouse``, and the atomic
file writes every output of the project goes through.

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

Every write creates its file with the permissions a plain ``open()`` would give (``0666`` minus the
umask), not ``mkstemp``'s ``0600``, so the app reading our outputs as another user can read them. A
writer killed mid-write leaves ``.<name>.<pid>.<random>.tmp`` behind; the next write to the same
folder removes the temp files of writers whose process is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

FACTS_KEY = b"meta_pipeline.facts"
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.tmp$")


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` is not thread-safe)."""
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temp files in ``folder`` left by writers whose process no longer exists."""
    removed = []
    if not folder.is_dir():
        return removed
    for candidate in folder.glob(".*.tmp"):
        match = _TEMP.match(candidate.name)
        if match and int(match["pid"]) != os.getpid() and not _process_alive(int(match["pid"])):
            with contextlib.suppress(FileNotFoundError):
                candidate.unlink()
                removed.append(candidate)
    return removed


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; when the block ends without error, the temp file is
    fsynced, given normal permissions and renamed over ``path`` — readers see the old file or the
    new one, never half of one. On error the temp file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that refuses NaN and ±Infinity (they are not JSON; a reader would choke)."""
    return json.dumps(obj, allow_nan=False, **kwargs)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, dumps_strict(obj, indent=2, sort_keys=True, default=str) + "\n")


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
        path = self.partition_path(asset, key)
        if not path.exists():
            return None
        metadata = pq.read_schema(path).metadata or {}
        raw = metadata.get(FACTS_KEY)
        return json.loads(raw) if raw is not None else None

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

    def write_table(self, asset: str, frame: pd.DataFrame) -> Path:
        path = self.table_path(asset)
        write_parquet(path, frame)
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


def write_parquet(path: Path, frame: pd.DataFrame, facts: Any = None) -> None:
    """Write ``frame`` to ``path`` atomically as Parquet, ``facts`` (JSON) in its key-value metadata."""
    table = pa.Table.from_pandas(stable_types(frame), preserve_index=False)
    if facts is not None:
        metadata = dict(table.schema.metadata or {})
        metadata[FACTS_KEY] = dumps_strict(facts, sort_keys=True, default=str).encode("utf-8")
        table = table.replace_schema_metadata(metadata)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
