"""The input quality figures behind the supervisor's three blocking checks, from per-day summaries
kept on disk, so that a tick reads only the ``reconciled_trades`` and ``telemetry`` days that changed
(docs/rules.md, *Supervisor rules*; the same idea as :mod:`meta_pipeline.supervisor.ledger`).

What :func:`ledger_input_quality` returns equals, on the full history::

    history.input_quality(warehouse, history.matured_trades(warehouse), history.telemetry_runs(warehouse),
                          as_of=as_of)

**Layout assumption** (ledger.py's, checked on every raw read of matured trades and telemetry): a
partition holds exactly the rows whose ``ts`` falls on its UTC day. Otherwise the full computation
runs and ``report.mode`` says why.

Per ``reconciled_trades`` day D (every status, every horizon):

* ``fixed_due`` = #matured + #unpriced rows: due whatever ``as_of`` is; ``unpriced``; ``matured`` (the
  matured 24 h trades, the ``matured_trades`` figure);
* the pending rows' horizon ends (``ts + horizon_hours``, int64 ns) as distinct values with their
  counts: a pending row is due once ``end ≤ as_of``, so ``due_rows`` = Σ ``fixed_due`` + the pending
  counts with end ≤ ``as_of``, **exact for any** ``as_of`` (a pending row without a valid end is
  never due, as in ``history.input_quality``). Pending rows are the last days' signals and the few
  waiting for bars, so the lists stay short;
* ``traded`` / ``covered``: the run ids of D's matured 24 h trades that did not also trade on D − 1
  (each run is counted on its **home** day, the first of its trade days), and of those the ones whose
  telemetry has a readable ``errors``. Coverage looks up a run's telemetry on the days D − 1, D, D + 1
  (a run's telemetry line and its signals sit seconds apart, so they can straddle midnight) and takes
  the line ``history.telemetry_runs`` would keep: the earliest by (``ts``, ``run_id``), within a day
  the first in file order. A day's coverage is recomputed when its trades, the trades of D − 1 (the
  home test) or the telemetry of D − 1, D or D + 1 changed.

Per ``telemetry`` day T: ``runs`` (distinct run ids of the day) and ``dup_prev`` (how many of them
also ran on T − 1); ``telemetry_runs`` = Σ ``runs`` − Σ ``dup_prev`` (a run id written again on the
next day counts once, as ``history.telemetry_runs`` keeps one line per run id).

**What stays approximate** (all exact when every run's trades and telemetry lines lie within one
UTC day of each other, which is how the app writes them):

* a run id whose matured trades sit on two signal days that are not neighbours (D and D + 2 without
  D + 1) is counted in ``traded_runs`` once per such block;
* a run id whose telemetry days are not contiguous counts once per block in ``telemetry_runs``;
* a traded run is judged on its telemetry of home day ± 1 only: a line more than a day from the
  run's first trade is not seen (a run with only such lines counts as uncovered; one whose earliest
  line is such a line is judged on its earliest line within the three days).

Layout of ``ledger_dir`` (the day files first, ``manifest.json`` last and atomically, so a crash in
between only makes the next call redo the same days)::

    manifest.json              fingerprints of the source partitions and every day's counts
    trade_runs/<D>.parquet     run_id: the distinct run ids of D's matured 24 h trades
    telemetry/<T>.parquet      run_id, ts (int64 ns), readable: T's runs, one line per run id

The telemetry day files hold one line per run (run id, time, a flag): small beside the telemetry,
and read only when a neighbouring day changes. No Dagster here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from meta_pipeline import names
from meta_pipeline.reconcile import MATURED, PENDING, UNPRICED
from meta_pipeline.storage import Warehouse, atomic_write_json, write_parquet
from meta_pipeline.supervisor import history, ledger

__all__ = ["LEDGER_QUALITY_VERSION", "QualityLedgerReport", "ledger_input_quality", "status_summary"]

LEDGER_QUALITY_VERSION = 1
HORIZON_HOURS = 24
_DAY = pd.Timedelta(days=1)


@dataclass
class QualityLedgerReport:
    """What one call read: ``trade_days_read`` / ``run_days_read`` (partitions read raw, sorted),
    ``coverage_days`` (trade days whose coverage was recomputed), ``summary_files_read`` (day files
    of the ledger read), ``mode`` (``ledger`` or ``full: <why>``)."""

    trade_days_read: list[str] = field(default_factory=list)
    run_days_read: list[str] = field(default_factory=list)
    coverage_days: list[str] = field(default_factory=list)
    summary_files_read: int = 0
    mode: str = "ledger"

    def as_metadata(self) -> dict:
        """Plain JSON-able figures (days listed up to 10)."""
        return {
            "mode": self.mode,
            "trade_days_read": len(self.trade_days_read),
            "run_days_read": len(self.run_days_read),
            "coverage_days": ", ".join(self.coverage_days[:10]),
            "summary_files_read": self.summary_files_read,
        }


def _shift(key: str, days: int) -> str:
    return (pd.Timestamp(key) + days * _DAY).strftime("%Y-%m-%d")


# ------------------------------------------------------------------------------------ statuses
def status_summary(frame: pd.DataFrame) -> dict:
    """The status counts of one ``reconciled_trades`` partition.

    Parameters
    ----------
    frame : its ``ts`` (datetime), ``horizon_hours`` (hours, float) and ``status`` (text) columns.

    Returns
    -------
    dict: ``fixed_due`` (#matured + #unpriced), ``unpriced`` (ints), ``pending`` ([ends, counts]: the
    distinct horizon ends of the pending rows, int64 ns UTC ascending, and their row counts).
    """
    if frame.empty:
        return {"fixed_due": 0, "unpriced": 0, "pending": [[], []]}
    # the same conversions as history.input_quality, so the same rows count
    status = frame["status"].astype(str).to_numpy()
    ends = history._utc(frame["ts"]) + pd.to_timedelta(frame["horizon_hours"].astype("float64"), unit="h")
    end_ns = ends.dt.as_unit("ns").to_numpy(dtype="datetime64[ns]").view(np.int64)
    pending = (status == PENDING) & ends.notna().to_numpy()  # a row without an end is never due
    values, counts = np.unique(end_ns[pending], return_counts=True)
    unpriced = int(np.count_nonzero(status == UNPRICED))
    return {
        "fixed_due": int(np.count_nonzero(status == MATURED)) + unpriced,
        "unpriced": unpriced,
        "pending": [values.tolist(), counts.tolist()],
    }


def _due(trade_days: dict, as_of: pd.Timestamp) -> int:
    fixed = sum(int(d["fixed_due"]) for d in trade_days.values())
    ends = [np.asarray(d["pending"][0], dtype=np.int64) for d in trade_days.values() if d["pending"][0]]
    if not ends:
        return fixed
    counts = np.concatenate([np.asarray(d["pending"][1], dtype=np.int64) for d in trade_days.values()])
    return fixed + int(counts[np.concatenate(ends) <= as_of.value].sum())


# ------------------------------------------------------------------------------------- the ledger
class _Files:
    """The day files of the ledger, with a per-call cache (a file is read at most once)."""

    def __init__(self, directory: Path, report: QualityLedgerReport):
        self.dir = directory
        self.report = report
        self.cache: dict[tuple[str, str], pd.DataFrame] = {}

    def path(self, kind: str, key: str) -> Path:
        return self.dir / kind / f"{key}.parquet"

    def put(self, kind: str, key: str, frame: pd.DataFrame) -> None:
        write_parquet(self.path(kind, key), frame)
        self.cache[(kind, key)] = frame

    def drop(self, kind: str, key: str) -> None:
        self.path(kind, key).unlink(missing_ok=True)
        self.cache[(kind, key)] = None

    def get(self, kind: str, key: str) -> pd.DataFrame | None:
        """The stored frame, or None when the day has none (no partition)."""
        if (kind, key) not in self.cache:
            path = self.path(kind, key)
            if path.exists():
                self.report.summary_files_read += 1
                frame = pq.read_table(path).to_pandas()
                frame["run_id"] = frame["run_id"].astype(object)
            else:
                frame = None
            self.cache[(kind, key)] = frame
        return self.cache[(kind, key)]


def _trade_day(warehouse: Warehouse, key: str, files: _Files) -> dict:
    """Read trade day ``key`` raw: its status counts, and its traded run ids into the day file."""
    path = warehouse.partition_path(names.RECONCILED_TRADES, key)
    table = history._read([path], ["ts", "horizon_hours", "status"])
    record = status_summary(table.to_pandas() if table is not None else pd.DataFrame())
    trades = history.matured_trades(warehouse, [key], horizon_hours=HORIZON_HOURS)
    ledger._check_layout(trades, key, names.RECONCILED_TRADES)
    record["matured"] = len(trades)
    runs = pd.unique(trades["run_id"].astype(str).to_numpy(dtype=object))
    files.put("trade_runs", key, pd.DataFrame({"run_id": pd.Series(runs, dtype=object)}))
    return record


def _run_day(warehouse: Warehouse, key: str, files: _Files) -> None:
    """Read telemetry day ``key`` raw (one line per run id, as ``history.telemetry_runs`` keeps
    within the day) into the day file."""
    runs = history.telemetry_runs(warehouse, [key])
    ledger._check_layout(runs, key, names.TELEMETRY)
    files.put(
        "telemetry",
        key,
        pd.DataFrame(
            {
                "run_id": runs["run_id"].astype(str).to_numpy(dtype=object),
                "ts": runs["ts"].dt.as_unit("ns").to_numpy(dtype="datetime64[ns]").view(np.int64),
                "readable": runs["errors"].notna().to_numpy(),
            }
        ),
    )


def _coverage(key: str, files: _Files) -> tuple[int, int]:
    """(traded, covered) of the runs whose home is trade day ``key`` (module docstring)."""
    runs = files.get("trade_runs", key)
    if runs is None or runs.empty:
        return 0, 0
    home = pd.Index(runs["run_id"])
    before = files.get("trade_runs", _shift(key, -1))
    if before is not None and len(before):
        home = home[~home.isin(before["run_id"])]
    lines = [files.get("telemetry", _shift(key, d)) for d in (-1, 0, 1)]
    lines = [f for f in lines if f is not None and len(f)]
    if not lines or home.empty:
        return len(home), 0
    # days in key order, each deduplicated already: a stable sort by ts keeps history's first line
    # (two lines of one run id on different days never tie on ts)
    frame = pd.concat(lines, ignore_index=True)
    frame = frame[frame["run_id"].isin(home)]
    first = frame.sort_values("ts", kind="stable").drop_duplicates("run_id", keep="first")
    return len(home), int(first["readable"].sum())


def _dup_prev(key: str, files: _Files) -> tuple[int, int]:
    """(runs, dup_prev) of telemetry day ``key``."""
    runs = files.get("telemetry", key)
    if runs is None or runs.empty:
        return 0, 0
    before = files.get("telemetry", _shift(key, -1))
    dup = 0 if before is None or before.empty else int(runs["run_id"].isin(before["run_id"]).sum())
    return len(runs), dup


def _load_manifest(directory: Path) -> dict:
    try:
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return manifest if manifest.get("version") == LEDGER_QUALITY_VERSION else {}


def _update(directory: Path, warehouse: Warehouse, report: QualityLedgerReport) -> dict:
    """Bring the ledger up to date; returns the manifest (every day's counts)."""
    manifest = _load_manifest(directory)
    old = manifest.get("sources", {})
    sources = {
        "trades": ledger._fingerprints(warehouse, names.RECONCILED_TRADES),
        "runs": ledger._fingerprints(warehouse, names.TELEMETRY),
    }
    changed = {
        kind: sorted(
            k
            for k in set(old.get(kind, {})) | set(sources[kind])
            if old.get(kind, {}).get(k) != sources[kind].get(k)
        )
        for kind in sources
    }
    trade_days: dict = manifest.get("trade_days", {}) if manifest else {}
    run_days: dict = manifest.get("run_days", {}) if manifest else {}
    if not changed["trades"] and not changed["runs"]:
        return manifest
    files = _Files(directory, report)
    for key in changed["trades"]:
        if key in sources["trades"]:
            trade_days[key] = _trade_day(warehouse, key, files)
            report.trade_days_read.append(key)
        else:
            trade_days.pop(key, None)
            files.drop("trade_runs", key)
    for key in changed["runs"]:
        if key in sources["runs"]:
            _run_day(warehouse, key, files)
            report.run_days_read.append(key)
        else:
            run_days.pop(key, None)
            files.drop("telemetry", key)
    # the days whose derived figures depend on a changed day (module docstring)
    touched_trades, touched_runs = set(changed["trades"]), set(changed["runs"])
    for key in sorted(trade_days):
        near = {_shift(key, d) for d in (-1, 0, 1)}
        if key in touched_trades or _shift(key, -1) in touched_trades or near & touched_runs:
            trade_days[key]["traded"], trade_days[key]["covered"] = _coverage(key, files)
            report.coverage_days.append(key)
    for key in sorted(sources["runs"]):
        if key in touched_runs or _shift(key, -1) in touched_runs:
            runs, dup = _dup_prev(key, files)
            run_days[key] = {"runs": runs, "dup_prev": dup}
    manifest = {
        "version": LEDGER_QUALITY_VERSION,
        "sources": sources,
        "trade_days": dict(sorted(trade_days.items())),
        "run_days": dict(sorted(run_days.items())),
    }
    atomic_write_json(directory / "manifest.json", manifest)
    return manifest


def ledger_input_quality(
    ledger_dir: Path, warehouse: Warehouse, *, as_of: pd.Timestamp
) -> tuple[history.InputQuality, QualityLedgerReport]:
    """``history.input_quality`` of the whole warehouse, from the ledger in ``ledger_dir`` (created or
    brought up to date first, reading only the partitions whose fingerprint changed).

    Parameters
    ----------
    ledger_dir : the ledger's directory (created when missing).
    warehouse : holds ``reconciled_trades`` and ``telemetry``.
    as_of : the time pending rows are judged at (UTC; naive is read as UTC).

    Returns
    -------
    (InputQuality, QualityLedgerReport). ``due_rows``, ``unpriced_rows``, ``matured_trades`` are
    exact; ``traded_runs``, ``covered_runs``, ``telemetry_runs`` are exact under the conditions of the
    module docstring.

    Raises
    ------
    OSError when the ledger cannot be written. A partition off its UTC day is not an error: the full
    computation runs and ``report.mode`` starts with ``full:``.
    """
    report = QualityLedgerReport()
    as_of = ledger._utc(as_of)
    directory = Path(ledger_dir)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        manifest = _update(directory, warehouse, report)
    except ledger.LayoutError as exc:
        report.mode = f"full: {exc}"
        trades = history.matured_trades(warehouse, horizon_hours=HORIZON_HOURS)
        runs = history.telemetry_runs(warehouse)
        return history.input_quality(warehouse, trades, runs, as_of=as_of), report
    trade_days = manifest.get("trade_days", {})
    run_days = manifest.get("run_days", {})
    report.trade_days_read.sort()
    report.run_days_read.sort()
    return (
        history.InputQuality(
            due_rows=_due(trade_days, as_of),
            unpriced_rows=sum(int(d["unpriced"]) for d in trade_days.values()),
            matured_trades=sum(int(d["matured"]) for d in trade_days.values()),
            traded_runs=sum(int(d["traded"]) for d in trade_days.values()),
            covered_runs=sum(int(d["covered"]) for d in trade_days.values()),
            telemetry_runs=sum(int(d["runs"]) - int(d["dup_prev"]) for d in run_days.values()),
        ),
        report,
    )
