"""The confidence fold made incremental: :func:`ledger_confidence` returns exactly (bit for bit, attrs
included, hence the same ``confidence.json`` bytes through :func:`confidence.confidence_json`) what
``confidence.fold_confidence(history.matured_trades(warehouse), rule, since)`` returns, while reading
only the ``reconciled_trades`` partitions that changed and the ones after them (docs/rules.md,
*Confidence decay*; issue "Supervisor", bounded reads).

**Why a resume is exact.** The fold is a sequence of per-(agent, UTC exit day) updates; the state
through exit day E depends only on the trades exiting on or before E. ``fold_confidence`` documents
that ``fold_confidence(later_trades, initial=S_E)`` gives the state of the whole history when S_E is
the state through E: the state carries, per agent, the last ``rule.window`` net PnLs (``recent_1`` …),
which is all an update needs (s5 sums the last ``window`` trades, oldest to newest, so it is the same
float from the history or from a snapshot). Under ledger.py's **layout assumption** (a partition
holds exactly the rows whose ``ts`` is on its UTC day; checked on every partition read here, with
:func:`ledger._check_layout`) a 24 h trade of signal day D exits on D + 1, so the state through exit
day D depends only on the partitions before D. When the earliest changed partition is P, the state
S_P is unchanged: the fold resumes from it and reads the partitions ≥ P only.

**What is stored** (under ``<ledger_dir>/confidence/``; every file atomic, the manifest last)::

    manifest.json             partition fingerprints (ledger._fingerprints), the rule, the revives,
                              the exit days that have a day file and the checkpoint days
    days/<exit day>.parquet   the state rows of the agents updated on that exit day, as they are
                              after the day (columns ``agent`` + the state's columns)
    checkpoints/<day>.parquet the whole state through that exit day (one every ``checkpoint_days``
                              days, on a fixed grid of day numbers since 1970-01-01)

The state through any exit day E is the checkpoint C ≤ E (the latest) overlaid with the day files
in (C, E], each agent's latest row winning: an agent's row changes only when it is updated, and a
fold never drops an agent. Reading it costs one checkpoint and fewer than ``checkpoint_days`` day
files, whichever day a late trade lands on. The day files hold one row per (agent, update): about
the number of matured trades, compact enough to keep for all history.

The per-update rows come from :func:`_update_rows`, the fold's own arithmetic (the same sort, the same
one-at-a-time s5, the same multiply-then-clip scan in the same order) recording every update instead
of the last. The state returned is always ``fold_confidence``'s own, and before anything is stored
the last update row of every agent updated is checked against it, float for float: a divergence
raises instead of storing a wrong snapshot.

**Changes handled.** Partition fingerprints (size, mtime) changed, added or removed: resume from the
earliest such key (an appended day reads that day only; a late trade in an old day reads from that
day on; a deleted day reads the days after it). A revive (``since``) added, moved or removed for an
agent: its trades with ``ts`` before min(old, new) are left out under both, so the agent has no row
in the states through day(min(old, new)), which therefore stand: resume from there (from the start
when either is None, i.e. a first revive or a revive removed). A lost manifest, a manifest of another
version or rule, a missing or unreadable ledger file: rebuild from all partitions (``report.mode``
says why). A crash between the writes: the manifest is first rewritten with ``trusted_through`` = the
resume day, so the next call resumes no later than it. A partition breaking the layout assumption:
the full fold runs, nothing is stored, and ``report.mode`` starts with ``full:``. An empty warehouse
(or one without matured 24 h trades) gives ``fold_confidence``'s empty state.

``rule.horizon_hours`` must be 24 (the ledger's horizon), else the full fold runs. No Dagster here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from meta_pipeline import names
from meta_pipeline.storage import Warehouse, atomic_path, atomic_write_json
from meta_pipeline.supervisor import confidence, history, ledger
from meta_pipeline.supervisor.confidence import ConfidenceRule, fold_confidence, recent_columns
from meta_pipeline.supervisor.portfolio import _net_bps, _sorted_rows, _text_ranks, utc_ns

__all__ = ["CHECKPOINT_DAYS", "LEDGER_CONFIDENCE_VERSION", "ConfidenceLedgerReport", "ledger_confidence"]

LEDGER_CONFIDENCE_VERSION = 1
CHECKPOINT_DAYS = 7
"""Default spacing of the full-state checkpoints, in exit days: a resume reads at most one checkpoint
and ``CHECKPOINT_DAYS - 1`` day files."""
DAY_NS = confidence.DAY_NS
_NAT = np.iinfo(np.int64).min
_SUBDIR = "confidence"
_DEFAULT_RULE = ConfidenceRule()


class _Unusable(Exception):
    """The stored snapshots cannot be used (missing, unreadable or inconsistent): rebuild."""


@dataclass
class ConfidenceLedgerReport:
    """What one call read and wrote, for the asset's metadata.

    ``mode``: ``ledger`` (resumed, or nothing to do), ``rebuilt: <why>`` (folded from the first
    partition, snapshots rewritten) or ``full: <why>`` (the plain fold, nothing stored);
    ``resumed_from``: the exit day of the snapshot the fold resumed from (None: from the start);
    ``changed_days``: partition keys whose fingerprint changed, appeared or vanished;
    ``days_read``: partitions read raw (sorted); ``days_reused``: stored partitions not read;
    ``snapshot_files_read`` / ``day_files_written`` / ``checkpoints_written`` / ``files_removed``:
    ledger files."""

    mode: str = "ledger"
    resumed_from: str | None = None
    changed_days: list[str] = field(default_factory=list)
    days_read: list[str] = field(default_factory=list)
    days_reused: int = 0
    snapshot_files_read: int = 0
    day_files_written: int = 0
    checkpoints_written: int = 0
    files_removed: int = 0

    def as_metadata(self) -> dict:
        """Plain JSON-able figures (days listed up to 10)."""
        return {
            "mode": self.mode,
            "resumed_from": self.resumed_from or "start",
            "changed_days": ", ".join(self.changed_days[:10]),
            "days_read": len(self.days_read),
            "days_read_list": ", ".join(self.days_read[:10]),
            "days_reused": self.days_reused,
            "snapshot_files_read": self.snapshot_files_read,
            "day_files_written": self.day_files_written,
            "checkpoints_written": self.checkpoints_written,
        }


# ------------------------------------------------------------------------------------------ days
def _key(day: int) -> str:
    """Exit day number (days since 1970-01-01, UTC) → ``YYYY-MM-DD``."""
    return str(np.datetime64(int(day), "D"))


def _day(key: str) -> int:
    """``YYYY-MM-DD`` → day number."""
    return int(np.datetime64(key, "D").astype(np.int64))


def _since_ns(since: Mapping[str, pd.Timestamp | None] | None) -> dict[str, int]:
    """Revives as {agent: ns UTC}; a None value means no revive (as in ``fold_confidence``)."""
    return {
        str(a): int(ledger._utc(s).as_unit("ns").value) for a, s in (since or {}).items() if s is not None
    }


# ------------------------------------------------------------------------------ per-update rows
def _state_schema(rule: ConfidenceRule) -> pa.Schema:
    stamp = pa.timestamp("ns", tz="UTC")
    fields = [
        ("agent", pa.string()),
        ("mult", pa.float64()),
        ("updated_at", stamp),
        ("recent_sum_bps", pa.float64()),
        ("last_change", pa.float64()),
        ("updates", pa.int64()),
        ("since", stamp),
    ]
    return pa.schema(fields + [(c, pa.float64()) for c in recent_columns(rule)])


def _update_rows(
    trades: pd.DataFrame,
    rule: ConfidenceRule,
    since: dict[str, int],
    initial: pd.DataFrame | None,
    from_ns: int | None,
) -> tuple[pa.Table, np.ndarray]:
    """Every update of the fold ``fold_confidence(trades, rule, since, initial=initial, from_day=…)``
    as the agent's state row right after it.

    Parameters
    ----------
    trades : the trades frame (as ``fold_confidence``), n rows.
    since : agent → ns UTC of its revive.
    initial : a state whose every row's ``since`` equals ``since`` (no reset; the caller ensures it).
    from_ns : first instant folded (trades exiting earlier are ignored), None: all.

    Returns
    -------
    (table, day): the rows (schema :func:`_state_schema`), u of them, sorted by (exit day, agent), and
    int64 (u,) the exit day number of each. The arithmetic is ``fold_confidence``'s, step for step
    (comments there say why each step is as it is), so the floats are its floats.
    """
    k = rule.window
    codes, labels = confidence._agent_codes(trades["agent"])
    init_names = np.zeros(0, dtype=object) if initial is None else initial.index.to_numpy(object).astype(str)
    universe = pd.Index(np.unique(np.concatenate([labels.to_numpy(object), init_names]).astype(object)))
    n_agents = len(universe)
    agent = universe.get_indexer(labels)[codes]
    since_ns = np.full(n_agents, _NAT, dtype=np.int64)
    if since:
        at = universe.get_indexer(pd.Index(list(since)))
        since_ns[at[at >= 0]] = np.asarray(list(since.values()), dtype=np.int64)[at >= 0]

    mult0 = np.full(n_agents, float(rule.start))
    updates0 = np.zeros(n_agents, dtype=np.int64)
    v_code, v_x = np.zeros(0, dtype=np.int64), np.zeros(0)
    if initial is not None and len(initial):
        at = universe.get_indexer(pd.Index(init_names))
        if not np.array_equal(confidence._optional_ns(initial["since"]), since_ns[at]):
            raise RuntimeError("ledger_confidence: a snapshot row was folded under another revive")
        mult0[at] = initial["mult"].to_numpy(np.float64)
        updates0[at] = initial["updates"].to_numpy(np.int64)
        saved = initial[recent_columns(rule)].to_numpy(np.float64)[:, ::-1].ravel()
        owner = np.repeat(at, k)
        present = ~np.isnan(saved)
        v_code, v_x = owner[present], saved[present]

    x = _net_bps(trades)
    exit_ns = utc_ns(trades["exit_ts"], name="exit_ts")
    ts_ns = utc_ns(trades["ts"], name="ts")
    keep = None
    if since:
        keep = ts_ns >= since_ns[agent]
    if from_ns is not None:
        keep = exit_ns >= from_ns if keep is None else keep & (exit_ns >= from_ns)
    rows = _sorted_rows(
        exit_ns,
        ts_ns,
        lambda tied: _text_ranks(trades, tied),
        group=agent,
        n_groups=n_agents,
        rows=None if keep is None else np.flatnonzero(keep),
    )
    code, val, when = agent[rows], x[rows], exit_ns[rows]
    real = np.ones(len(rows), dtype=bool)
    if len(v_code):  # the saved trades first within each agent (stable), as the fold does
        code = np.concatenate([v_code, code])
        val = np.concatenate([v_x, val])
        when = np.concatenate([np.full(len(v_code), _NAT, dtype=np.int64), when])
        real = np.concatenate([np.zeros(len(v_code), dtype=bool), real])
        by_code = confidence._stable_by_code(code, n_agents)
        code, val, when, real = code[by_code], val[by_code], when[by_code], real[by_code]
    n = len(code)
    new = np.ones(n, dtype=bool)
    np.not_equal(code[1:], code[:-1], out=new[1:])
    group_first = np.maximum.accumulate(np.where(new, np.arange(n), 0)) if n else np.zeros(0, np.int64)

    day = when // DAY_NS
    last_of_day = np.ones(n, dtype=bool)
    np.not_equal(day[1:], day[:-1], out=last_of_day[:-1])
    last_of_day[:-1] |= new[1:]
    last_of_day &= real
    upd = np.flatnonzero(last_of_day)
    window = np.zeros(n)
    for lag in range(k - 1, 0, -1):
        if lag < n:
            np.add(window[lag:], val[:-lag], out=window[lag:], where=code[lag:] == code[:-lag])
    window += val
    s5 = window[upd]
    factor = rule.factors(s5)

    # the multiplier scan of the fold, keeping the value before and after every update
    u_code = code[upd]
    counts = np.bincount(u_code, minlength=n_agents)
    first_u = np.cumsum(counts) - counts
    rank = np.arange(len(upd)) - first_u[u_code]
    by_count = np.argsort(-counts, kind="stable")
    slot = np.empty(n_agents, dtype=np.int64)
    slot[by_count] = np.arange(n_agents)
    most = int(counts.max()) if len(upd) else 0
    active = n_agents - np.cumsum(np.bincount(counts, minlength=most + 1))[:most]
    offset = np.concatenate([[0], np.cumsum(active)]).astype(np.int64)
    position = offset[rank] + slot[u_code]
    scan = np.empty(len(upd))
    scan[position] = factor
    after, before = np.empty(len(upd)), np.empty(len(upd))
    m = mult0[by_count]
    for r in range(most):
        head = m[: active[r]]
        before[offset[r] : offset[r + 1]] = head
        np.multiply(head, scan[offset[r] : offset[r + 1]], out=head)
        np.clip(head, rule.floor, rule.cap, out=head)
        after[offset[r] : offset[r + 1]] = head

    recent = np.full((len(upd), k), np.nan)
    for j in range(k):
        ok = upd - j >= group_first[upd]
        recent[ok, j] = val[upd[ok] - j]
    order = np.lexsort((u_code, day[upd]))  # by exit day, then agent (the universe is sorted)
    stamp = pa.timestamp("ns", tz="UTC")
    columns = {
        "agent": pa.array(universe.to_numpy(object)[u_code[order]], type=pa.string()),
        "mult": after[position][order],
        "updated_at": pa.array(when[upd][order], type=pa.int64()).cast(stamp),
        "recent_sum_bps": s5[order],
        "last_change": before[position][order],
        "updates": updates0[u_code][order] + rank[order] + 1,
        "since": _stamps(since_ns[u_code][order]),
        **{c: recent[order, j] for j, c in enumerate(recent_columns(rule))},
    }
    return pa.table(columns, schema=_state_schema(rule)), day[upd][order]


def _stamps(ns: np.ndarray) -> pa.Array:
    """int64 ns (NaT as the int64 minimum) → Arrow UTC timestamps, NaT as null."""
    return pa.array(ns, type=pa.int64(), mask=ns == _NAT).cast(pa.timestamp("ns", tz="UTC"))


def _check_against(state: pd.DataFrame, updates: pa.Table, rule: ConfidenceRule) -> None:
    """The last update row of every agent updated must be the fold's row, float for float (NaN = NaN):
    else the stored snapshots would not resume to the fold's result."""
    if updates.num_rows == 0:
        return
    frame = updates.to_pandas()
    last = frame.drop_duplicates("agent", keep="last")
    at = state.index.get_indexer(pd.Index(last["agent"].to_numpy(object)))
    if (at < 0).any():
        raise RuntimeError("ledger_confidence: an updated agent is missing from the fold's state")
    for column in ["mult", "recent_sum_bps", "last_change", "updates", *recent_columns(rule)]:
        mine = last[column].to_numpy(np.float64)
        theirs = state[column].to_numpy(np.float64)[at]
        if not np.array_equal(mine.view(np.int64), theirs.view(np.int64)) and not np.array_equal(
            mine, theirs, equal_nan=True
        ):
            raise RuntimeError(f"ledger_confidence: the per-update rows differ from the fold on {column}")
    for column in ("updated_at", "since"):
        mine = confidence._optional_ns(last[column])
        theirs = confidence._optional_ns(state[column])[at]
        if not np.array_equal(mine, theirs):
            raise RuntimeError(f"ledger_confidence: the per-update rows differ from the fold on {column}")


# ----------------------------------------------------------------------------------- the store
class _Store:
    def __init__(self, directory: Path, rule: ConfidenceRule, report: ConfidenceLedgerReport):
        self.dir = Path(directory) / _SUBDIR
        self.rule = rule
        self.schema = _state_schema(rule)
        self.report = report

    def path(self, kind: str, key: str) -> Path:
        return self.dir / kind / f"{key}.parquet"

    def load_manifest(self) -> tuple[dict, str]:
        """The manifest, or ({}, why it cannot be used)."""
        try:
            manifest = json.loads((self.dir / "manifest.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}, "no ledger yet"
        except (OSError, ValueError) as exc:
            return {}, f"unreadable manifest ({type(exc).__name__})"
        if not isinstance(manifest, dict) or manifest.get("version") != LEDGER_CONFIDENCE_VERSION:
            return {}, "manifest of another version"
        if manifest.get("rule") != json.loads(json.dumps(asdict(self.rule))):
            return {}, "manifest of another rule"
        return manifest, ""

    def write_manifest(self, manifest: dict) -> None:
        atomic_write_json(self.dir / "manifest.json", {"version": LEDGER_CONFIDENCE_VERSION, **manifest})

    def read(self, kind: str, key: str) -> pa.Table:
        self.report.snapshot_files_read += 1
        try:
            table = pq.read_table(self.path(kind, key))
            return table.select(self.schema.names).cast(self.schema)
        except (OSError, pa.ArrowException, KeyError, ValueError) as exc:
            raise _Unusable(f"{kind}/{key}: {type(exc).__name__}") from exc

    def write(self, kind: str, key: str, table: pa.Table) -> None:
        with atomic_path(self.path(kind, key)) as tmp:
            pq.write_table(table, tmp)

    def stored(self, kind: str) -> list[str]:
        folder = self.dir / kind
        return sorted(p.stem for p in folder.glob("*.parquet")) if folder.is_dir() else []

    def remove(self, kind: str, key: str) -> None:
        self.path(kind, key).unlink(missing_ok=True)
        self.report.files_removed += 1

    def state_through(self, day: int, days: list[str], checkpoints: list[str]) -> pa.Table:
        """The state through exit day ``day`` (rows sorted by agent): the latest checkpoint ≤ it
        overlaid with the day files after the checkpoint, each agent's latest row winning."""
        key = _key(day)
        base = max((c for c in checkpoints if c <= key), default=None)
        parts = [] if base is None else [self.read("checkpoints", base)]
        parts += [self.read("days", d) for d in days if (base is None or d > base) and d <= key]
        if not parts:
            return self.schema.empty_table()
        table = pa.concat_tables(parts)
        agents = table.column("agent").to_numpy(zero_copy_only=False).astype(object)
        # the latest row per agent: rows are in time order, so the largest position
        codes, uniques = pd.factorize(agents, sort=True)
        latest = np.full(len(uniques), -1, dtype=np.int64)
        np.maximum.at(latest, codes, np.arange(len(agents)))
        return table.take(latest)


def _to_state(table: pa.Table, rule: ConfidenceRule) -> pd.DataFrame:
    """A stored snapshot as ``fold_confidence``'s ``initial`` (index ``agent``, its columns)."""
    frame = table.to_pandas()
    state = frame.set_index(pd.Index(frame.pop("agent").to_numpy(object), name="agent").astype(str))
    state.attrs["folded_through"] = None  # the caller passes from_day
    state.attrs["rule"] = asdict(rule)
    return state


# ------------------------------------------------------------------------------------------ entry
def ledger_confidence(
    ledger_dir: Path,
    warehouse: Warehouse,
    *,
    rule: ConfidenceRule = _DEFAULT_RULE,
    since: Mapping[str, pd.Timestamp | None] | None = None,
    checkpoint_days: int = CHECKPOINT_DAYS,
) -> tuple[pd.DataFrame, ConfidenceLedgerReport]:
    """``fold_confidence(history.matured_trades(warehouse), rule, since)``, from the snapshots kept in
    ``ledger_dir/confidence/`` (created or brought up to date first; module docstring).

    Parameters
    ----------
    ledger_dir : the ledger's directory (ledger.py's may be shared: this uses its own subfolder).
    warehouse : the warehouse holding the ``reconciled_trades`` partitions.
    rule : the decay rule (its ``horizon_hours`` must be 24 for the ledger to be used).
    since : agent → UTC time of its revive (naive = UTC; None values: no revive), as ``fold_confidence``.
    checkpoint_days : spacing of the full-state checkpoints, in exit days (≥ 1).

    Returns
    -------
    (state, report): ``fold_confidence``'s state, identical to the full fold's (values, dtypes, index,
    ``attrs``), and a :class:`ConfidenceLedgerReport`.

    Raises
    ------
    ValueError as ``fold_confidence`` (a trade without agent, a non-finite ``net_bps``), or on a
    ``checkpoint_days`` below 1; OSError when the ledger cannot be written; RuntimeError if the
    per-update rows ever disagree with the fold (a bug: nothing is stored then).
    """
    if checkpoint_days < 1:
        raise ValueError(f"checkpoint_days must be at least 1, got {checkpoint_days}")
    report = ConfidenceLedgerReport()
    sigma = _since_ns(since)
    since_arg = {a: pd.Timestamp(v, unit="ns", tz="UTC") for a, v in sigma.items()} or None
    if rule.horizon_hours != ledger.HORIZON_HOURS:
        return _full(
            warehouse, rule, since_arg, report, f"horizon {rule.horizon_hours} h is not the ledger's"
        )
    store = _Store(Path(ledger_dir), rule, report)
    try:
        return _incremental(store, warehouse, rule, sigma, since_arg, checkpoint_days, report)
    except ledger.LayoutError as exc:
        return _full(warehouse, rule, since_arg, ConfidenceLedgerReport(), str(exc))


def _full(warehouse, rule, since_arg, report, why: str) -> tuple[pd.DataFrame, ConfidenceLedgerReport]:
    report.mode = f"full: {why}"
    trades = history.matured_trades(warehouse, horizon_hours=rule.horizon_hours)
    report.days_read = warehouse.stored_keys(names.RECONCILED_TRADES)
    return fold_confidence(trades, rule, since_arg), report


def _resume_key(manifest: dict, sources: dict, sigma: dict[str, int], report) -> str | None:
    """The partition key P to resume at (the state through exit day P stands; partitions ≥ P are
    read): "" = from the start, None = nothing changed."""
    old = manifest.get("sources", {})
    report.changed_days = sorted(k for k in set(old) | set(sources) if old.get(k) != sources.get(k))
    candidates = list(report.changed_days)
    old_since = {a: int(v) for a, v in manifest.get("since", {}).items()}
    for agent in set(old_since) | set(sigma):
        if old_since.get(agent) != sigma.get(agent):
            if agent not in old_since or agent not in sigma:
                return ""  # a first revive, or one removed: the agent's early rows change
            lower = min(old_since[agent], sigma[agent])
            candidates.append(_key(lower // DAY_NS))
    if manifest.get("trusted_through") is not None:  # a crash between the writes of an earlier call
        candidates.append(manifest["trusted_through"])
    return min(candidates) if candidates else None


def _incremental(store, warehouse, rule, sigma, since_arg, checkpoint_days, report):
    sources = ledger._fingerprints(warehouse, names.RECONCILED_TRADES)
    keys = sorted(sources)
    manifest, why = store.load_manifest()
    resume = _resume_key(manifest, sources, sigma, report) if manifest else ""
    days = list(manifest.get("days", []))
    checkpoints = list(manifest.get("checkpoints", []))
    snapshot = None
    if resume != "":
        # nothing changed (None): the state through the last stored update, and nothing to read
        day = _day(resume) if resume is not None else (_day(days[-1]) if days else None)
        try:
            snapshot = None if day is None else store.state_through(day, days, checkpoints)
            if snapshot is not None:
                _check_since(snapshot, sigma)
        except _Unusable as exc:
            resume, why, snapshot = "", f"unusable ledger ({exc})", None
        else:
            report.resumed_from = None if day is None else _key(day)
    if resume == "":
        report.mode = f"rebuilt: {why or 'a revive added or removed'}"
        days, checkpoints = [], []
    read = keys if resume == "" else [k for k in keys if resume is not None and k >= resume]
    trades = _read_partitions(warehouse, read, report)
    report.days_reused = len(keys) - len(read)
    initial = None if snapshot is None else _to_state(snapshot, rule)
    from_ns = None if snapshot is None else (_day(report.resumed_from) + 1) * DAY_NS
    kwargs = {} if snapshot is None else {"initial": initial, "from_day": pd.Timestamp(from_ns, tz="UTC")}
    state = fold_confidence(trades, rule, since_arg, **kwargs)
    if resume is not None:  # something changed: store the snapshots from the resume day on
        updates, update_day = _update_rows(trades, rule, sigma, initial, from_ns)
        _check_against(state, updates, rule)
        start_day = None if snapshot is None else _day(report.resumed_from)
        days, checkpoints = _store(
            store, manifest, start_day, snapshot, updates, update_day, days, checkpoints, checkpoint_days
        )
        store.write_manifest(
            {
                "rule": asdict(rule),
                "since": sigma,
                "sources": sources,
                "days": days,
                "checkpoints": checkpoints,
                "trusted_through": None,
            }
        )
    # the full fold is folded through its last update day (a resume would say the resume day)
    state.attrs["folded_through"] = pd.Timestamp(days[-1], tz="UTC") if days else None
    report.days_read.sort()
    return state, report


def _check_since(snapshot: pa.Table, sigma: dict[str, int]) -> None:
    """Every stored row must have been folded under today's revive of its agent (module docstring:
    the states through day(min(old, new)) have no row of a re-revived agent)."""
    agents = snapshot.column("agent").to_pylist()
    expected = np.array([sigma.get(a, _NAT) for a in agents], dtype=np.int64)
    stored = snapshot.column("since").cast(pa.int64()).fill_null(_NAT).to_numpy()
    if not np.array_equal(stored, expected):
        raise _Unusable("a stored row was folded under another revive")


def _read_partitions(warehouse: Warehouse, keys: list[str], report) -> pd.DataFrame:
    """The matured 24 h trades of ``keys`` (in key order, file order within: the order of the full
    frame), each partition checked against the layout assumption."""
    frames = []
    for key in keys:
        frame = history.matured_trades(warehouse, [key], horizon_hours=ledger.HORIZON_HOURS)
        ledger._check_layout(frame, key, names.RECONCILED_TRADES)
        report.days_read.append(key)
        if len(frame):
            frames.append(frame)
    if not frames:
        return history.empty_trades()
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _store(store, manifest, start_day, snapshot, updates, update_day, days, checkpoints, every):
    """Write the day files and checkpoints after ``start_day`` (None: all), remove the stale ones;
    returns the new (days, checkpoints) lists."""
    start_key = "" if start_day is None else _key(start_day)
    # first tell the next call not to trust anything after the resume day (a crash below)
    store.write_manifest({**manifest, "rule": asdict(store.rule), "trusted_through": start_key})
    # day files: one per exit day with an update; rows are sorted by (day, agent)
    cuts = np.flatnonzero(np.diff(update_day)) + 1 if len(update_day) else np.zeros(0, np.int64)
    bounds = np.concatenate([[0], cuts, [len(update_day)]]).astype(np.int64) if len(update_day) else []
    written = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        key = _key(update_day[a])
        store.write("days", key, updates.slice(a, b - a))
        written.append(key)
    store.report.day_files_written = len(written)
    for key in store.stored("days"):
        if key > start_key and key not in written:
            store.remove("days", key)
    new_days = [d for d in days if d <= start_key] + written
    # checkpoints on the grid of day numbers, from the resume day to the last update
    grid_written = []
    if len(update_day):
        first = (start_day + 1) if start_day is not None else int(update_day[0])
        last = int(update_day[-1])
        grid = np.arange(-(-first // every) * every, last + 1, every, dtype=np.int64)
        # the state at each grid day: the snapshot's rows, then the updates up to the day, each
        # agent's latest row winning (update rows are in day order, so the largest position)
        initial_table = store.schema.empty_table() if snapshot is None else snapshot
        combined = pa.concat_tables([initial_table, updates])
        agents = combined.column("agent").to_numpy(zero_copy_only=False).astype(object)
        codes, uniques = pd.factorize(agents, sort=True)
        latest = np.full(len(uniques), -1, dtype=np.int64)
        latest[codes[: initial_table.num_rows]] = np.arange(initial_table.num_rows)
        done = 0  # update rows already applied
        for c in grid:
            upto = int(np.searchsorted(update_day, c, side="right"))
            rows = np.arange(done, upto)
            np.maximum.at(latest, codes[initial_table.num_rows + rows], initial_table.num_rows + rows)
            done = upto
            present = latest[latest >= 0]
            if len(present):
                store.write("checkpoints", _key(int(c)), combined.take(present))
                grid_written.append(_key(int(c)))
    store.report.checkpoints_written = len(grid_written)
    for key in store.stored("checkpoints"):
        if key > start_key and key not in grid_written:
            store.remove("checkpoints", key)
    new_checkpoints = [c for c in checkpoints if c <= start_key] + grid_written
    return new_days, new_checkpoints
