"""Confidence decay: a deterministic fold over the trade history (docs/rules.md, *Supervisor rules*,
*Confidence decay*; the users' rule, with the fixes listed there).

Confidence is a multiplier per agent that allocation uses. It starts at ``start`` (1.0) and changes
only in the fold below: nothing else (a run, a tick, a re-materialization) updates it, so the same
trades always give the same state, whoever runs it and however often.

**The fold.** For each UTC day in order, every agent with at least one trade whose ``exit_ts`` falls
on that day gets exactly one update, however many of its trades matured that day:

* s5 = Σ ``net_bps`` of the last ``recent_trades`` (5) of its last ``lookback_trades`` (30) trades
  matured by the end of that day (all of them when fewer), in time order (``exit_ts``, ``ts``,
  ``run_id``, then ``instrument`` and ``direction``; see
  :func:`meta_pipeline.supervisor.portfolio.time_order`). For 24 h trades ``exit_ts = ts + 24 h``, so
  this is the rules' order by ``ts`` then ``run_id``. The last 5 of the last 30 are the last 5; the
  look-back is kept as a setting because the app has it.
* mult × 0.85 when s5 < −50 bps; else × 0.93 when s5 < 0; else × 1.03 when s5 > 50; else unchanged
  (s5 = −50 → 0.93, s5 = 0 and s5 = 50 → unchanged).
* mult is clamped to [0.20, 1.20] after every update.

``updated_at`` is the ``exit_ts`` of the agent's last trade that matured on its last update day: a
data time, never the wall clock. ``mult`` keeps full float precision through the fold (rounding each
step would drift); only :func:`confidence_json` rounds.

s5 is summed oldest to newest, one addition at a time, so it is the same float whether the window's
trades come from the history or from a saved state: that makes resuming exact (below).

**Resuming.** The state returned keeps, per agent, the last ``min(recent_trades, lookback_trades)``
``net_bps`` (columns ``recent_1`` = newest … ``recent_k``) and the day it is folded through
(``state.attrs["folded_through"]``). ``fold_confidence(new_trades, initial=state)`` folds only the
days after that one and gives exactly the state a fold of the whole history would give. A tick
therefore keeps a snapshot folded through the last complete day (``through_day=yesterday``) and
folds today's trades on top of it each time; a state that includes today's partial day must not be
saved as a snapshot, because today's later trades would then be skipped. Trades that arrive late for
a day already folded are not taken into account by a resume: after a backfill of old days, refold
from the start. :func:`state_to_json` and :func:`state_from_json` persist a snapshot exactly.

**Revive.** ``since`` (agent → instant) keeps only the agent's trades with ``ts >= since``: after an
operator revive the agent's confidence restarts at ``start`` from its new trades. The state records
each agent's ``since``; on a resume, an agent whose ``since`` changed is folded again from the trades
given (all of their days), so pass its history when a revive is dated before the snapshot's day.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from meta_pipeline.jsonl import iso_utc
from meta_pipeline.supervisor.portfolio import (
    _check_columns,
    _net_bps,
    _sorted_rows,
    _text_ranks,
    utc_ns,
)

__all__ = [
    "ConfidenceRule",
    "confidence_json",
    "fold_confidence",
    "recent_columns",
    "state_from_json",
    "state_to_json",
]

DAY_NS = 86_400 * 10**9
_NAT = np.iinfo(np.int64).min
STATE_COLUMNS = ["mult", "updated_at", "recent_sum_bps", "last_change", "updates", "since"]


@dataclass(frozen=True)
class ConfidenceRule:
    """The decay rule; the defaults are the users' rule (docs/rules.md, *Confidence decay*).

    Thresholds are in bps and compare strictly; precedence is deep loss, then loss, then gain.

    Raises
    ------
    ValueError
        on construction, when a count is < 1, a factor, ``start`` or ``floor`` is not > 0, ``floor``
        > ``cap``, or a number is not finite.
    """

    start: float = 1.0
    """Multiplier before an agent's first update."""
    recent_trades: int = 5
    """s5 sums this many of the agent's most recent matured trades."""
    lookback_trades: int = 30
    """… taken among this many most recent trades (so the window is the smaller of the two)."""
    deep_loss_below_bps: float = -50.0
    """s5 strictly below this multiplies by ``deep_loss_factor``."""
    deep_loss_factor: float = 0.85
    loss_below_bps: float = 0.0
    """Otherwise, s5 strictly below this multiplies by ``loss_factor``."""
    loss_factor: float = 0.93
    gain_above_bps: float = 50.0
    """Otherwise, s5 strictly above this multiplies by ``gain_factor``; anything else leaves it."""
    gain_factor: float = 1.03
    floor: float = 0.20
    """The multiplier is clamped to [floor, cap] after every update."""
    cap: float = 1.20
    horizon_hours: int = 24
    """Horizon of the trades folded; written as ``horizon_hours`` in confidence.json."""

    def __post_init__(self) -> None:
        numbers = {k: v for k, v in asdict(self).items() if k not in ("recent_trades", "lookback_trades")}
        bad = [k for k, v in numbers.items() if not math.isfinite(v)]
        if bad:
            raise ValueError(f"ConfidenceRule: non-finite {bad}")
        if self.recent_trades < 1 or self.lookback_trades < 1:
            raise ValueError("ConfidenceRule: recent_trades and lookback_trades must be at least 1")
        positive = ("start", "floor", "deep_loss_factor", "loss_factor", "gain_factor")
        if any(getattr(self, k) <= 0 for k in positive):
            raise ValueError(f"ConfidenceRule: {', '.join(positive)} must be > 0")
        if self.floor > self.cap:
            raise ValueError(f"ConfidenceRule: floor {self.floor} is above cap {self.cap}")

    @property
    def window(self) -> int:
        """Number of trades s5 sums: the last ``recent_trades`` of the last ``lookback_trades``."""
        return min(self.recent_trades, self.lookback_trades)

    def factors(self, s5: np.ndarray) -> np.ndarray:
        """The multiplier's factor for each s5 (bps), vectorized."""
        s5 = np.asarray(s5, dtype=np.float64)
        f = np.where(s5 > self.gain_above_bps, self.gain_factor, 1.0)
        f = np.where(s5 < self.loss_below_bps, self.loss_factor, f)
        return np.where(s5 < self.deep_loss_below_bps, self.deep_loss_factor, f)


def recent_columns(rule: ConfidenceRule = ConfidenceRule()) -> list[str]:
    """Names of the state's saved-trade columns: ``recent_1`` (newest) … ``recent_{window}``."""
    return [f"recent_{j}" for j in range(1, rule.window + 1)]


# ------------------------------------------------------------------------------------ helpers
def _day_start_ns(value) -> int:
    """Start (ns, UTC) of the UTC day of ``value`` (a date, a string, a Timestamp; naive = UTC)."""
    moment = pd.Timestamp(value)
    moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
    return int(moment.floor("D").as_unit("ns").value)


def _optional_ns(values) -> np.ndarray:
    """Instants (Timestamp, text, None) → int64 ns UTC, NaT as the int64 minimum."""
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.DatetimeTZDtype):
        series = values.dt.tz_convert("UTC")
    elif isinstance(values, pd.Series) and pd.api.types.is_datetime64_dtype(values.dtype):
        series = values.dt.tz_localize("UTC")
    else:
        series = pd.to_datetime(pd.Series(list(values), dtype=object), utc=True, format="ISO8601")
    return series.dt.as_unit("ns").to_numpy(dtype="datetime64[ns]").view(np.int64)


def _to_utc(ns: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(np.asarray(ns, dtype=np.int64).view("datetime64[ns]")).tz_localize("UTC")


def _agent_codes(agents: pd.Series) -> tuple[np.ndarray, pd.Index]:
    codes, uniques = pd.factorize(agents, sort=False)
    if (codes < 0).any():
        raise ValueError(f"agent: {int((codes < 0).sum())} trade(s) without an agent")
    return codes, pd.Index(np.asarray(uniques, dtype=object)).astype(str)


def _check_initial(initial: pd.DataFrame, rule: ConfidenceRule) -> None:
    needed = [c for c in STATE_COLUMNS if c != "since"] + recent_columns(rule)
    missing = [c for c in needed if c not in initial.columns]
    if missing:
        saved = [c for c in initial.columns if str(c).startswith("recent_")]
        raise ValueError(
            f"initial state lacks column(s) {missing} (it keeps {len(saved)} recent trades; "
            f"the rule needs {rule.window})"
        )
    saved_rule = initial.attrs.get("rule")
    if saved_rule is not None and dict(saved_rule) != asdict(rule):
        raise ValueError(f"initial state was folded with another rule: {saved_rule} != {asdict(rule)}")


def _stable_by_code(codes: np.ndarray, n_codes: int) -> np.ndarray:
    small = np.int16 if n_codes < 2**15 else np.int32 if n_codes < 2**31 else np.int64
    return np.argsort(codes.astype(small, copy=False), kind="stable")  # radix sort for int16


# --------------------------------------------------------------------------------------- fold
def fold_confidence(
    trades: pd.DataFrame,
    rule: ConfidenceRule = ConfidenceRule(),
    since: Mapping[str, pd.Timestamp | None] | None = None,
    *,
    initial: pd.DataFrame | None = None,
    from_day=None,
    through_day=None,
) -> pd.DataFrame:
    """Fold the confidence rule over ``trades`` (see the module docstring).

    Parameters
    ----------
    trades
        the trades frame (``agent``, ``exit_ts``, ``ts``, ``run_id``, ``net_bps``; ``instrument`` and
        ``direction`` break ties when present), matured 24 h trades in any row order.
    rule
        the thresholds and factors.
    since
        agent → instant (tz-aware, or naive = UTC; ``None`` = no restriction): only the agent's trades
        with ``ts >= since`` count, its confidence restarts at ``rule.start``. An agent with no trade
        left has no row (allocation then counts its multiplier as 1.0).
    initial
        a state returned by an earlier fold (or :func:`state_from_json`) to resume from.
    from_day
        first UTC day to fold; trades exiting earlier are ignored, except for agents whose ``since``
        differs from the one recorded in ``initial``. Defaults to the day after
        ``initial.attrs["folded_through"]`` (required when that is absent); without ``initial`` the
        fold starts from ``rule.start`` on this day.
    through_day
        last UTC day to fold; trades exiting later are ignored. Use it to keep a snapshot of complete
        days only.

    Returns
    -------
    pandas.DataFrame
        indexed by ``agent`` (str, sorted), one row per agent with at least one update so far:
        ``mult`` (float, full precision), ``updated_at`` (datetime64[ns, UTC], ``exit_ts`` of the last
        trade of the last update day), ``recent_sum_bps`` (s5 of the last update, bps),
        ``last_change`` (mult before the last update), ``updates`` (int64, count of updates),
        ``since`` (datetime64[ns, UTC], NaT when none), ``recent_1`` … ``recent_k`` (the last k
        ``net_bps``, newest first, NaN when the agent has fewer; k = ``rule.window``).
        ``attrs["folded_through"]``: the last UTC day folded (midnight Timestamp, or None when
        nothing was folded); ``attrs["rule"]``: the rule as a dict.

    Raises
    ------
    ValueError
        on a missing column, a NaT time, a non-finite ``net_bps``, a trade without agent, an
        ``initial`` state that does not fit ``rule`` or lacks the day it is folded through, or a
        ``through_day`` before that day.
    """
    _check_columns(trades, ("agent",))
    k = rule.window
    rcols = recent_columns(rule)
    from_ns = None if from_day is None else _day_start_ns(from_day)
    if initial is not None:
        _check_initial(initial, rule)
        if from_ns is None:
            folded = initial.attrs.get("folded_through")
            if folded is None:
                raise ValueError("initial state has no attrs['folded_through']; pass from_day")
            from_ns = _day_start_ns(folded) + DAY_NS
    through_end = None if through_day is None else _day_start_ns(through_day) + DAY_NS
    if initial is not None and through_end is not None and through_end < from_ns:
        # the state already holds later days: folding "through" an earlier one would fold them twice later
        raise ValueError(f"through_day {through_day} is before the days the initial state already holds")

    # --- agents: every name in the trades or the initial state, sorted (code point order)
    codes, names = _agent_codes(trades["agent"])
    init_names = (
        pd.Index([], dtype=object)
        if initial is None
        else pd.Index(initial.index.to_numpy(object)).astype(str)
    )
    universe = pd.Index(np.unique(np.concatenate([names.to_numpy(object), init_names.to_numpy(object)])))
    n_agents = len(universe)
    agent = universe.get_indexer(names)[codes]

    since_ns = np.full(n_agents, _NAT, dtype=np.int64)
    if since:
        at = universe.get_indexer(pd.Index([str(a) for a in since]))
        values = _optional_ns(since.values())
        since_ns[at[at >= 0]] = values[at >= 0]

    mult0 = np.full(n_agents, float(rule.start))
    last0 = np.full(n_agents, np.nan)
    s5_0 = np.full(n_agents, np.nan)
    updates0 = np.zeros(n_agents, dtype=np.int64)
    updated0 = np.full(n_agents, _NAT, dtype=np.int64)
    carried = np.zeros(n_agents, dtype=bool)
    reset = np.zeros(n_agents, dtype=bool)
    v_code = np.zeros(0, dtype=np.int64)
    v_x = np.zeros(0)
    if initial is not None and len(initial):
        at = universe.get_indexer(init_names)
        old_since = (
            _optional_ns(initial["since"]) if "since" in initial.columns else np.full(len(at), _NAT, np.int64)
        )
        keep = old_since == since_ns[at]  # a changed since (a revive) restarts the agent
        reset[at[~keep]] = True
        at_keep = at[keep]
        carried[at_keep] = True
        kept = initial[keep]
        mult0[at_keep] = kept["mult"].to_numpy(np.float64)
        last0[at_keep] = kept["last_change"].to_numpy(np.float64)
        s5_0[at_keep] = kept["recent_sum_bps"].to_numpy(np.float64)
        updates0[at_keep] = kept["updates"].to_numpy(np.int64)
        updated0[at_keep] = _optional_ns(kept["updated_at"])
        # the saved trades become rows before the new ones, oldest first
        saved = kept[rcols].to_numpy(np.float64)[:, ::-1].ravel()
        owner = np.repeat(at_keep, k)
        present = ~np.isnan(saved)
        v_code, v_x = owner[present], saved[present]

    # --- the trades to fold: by agent, in time order within each agent
    x = _net_bps(trades)
    exit_ns = utc_ns(trades["exit_ts"], name="exit_ts")
    ts_ns = utc_ns(trades["ts"], name="ts")
    keep = None
    if since:
        keep = ts_ns >= since_ns[agent]
    if through_end is not None:
        keep = exit_ns < through_end if keep is None else keep & (exit_ns < through_end)
    if from_ns is not None:
        later = (exit_ns >= from_ns) | reset[agent]
        keep = later if keep is None else keep & later
    rows = _sorted_rows(
        exit_ns,
        ts_ns,
        lambda tied: _text_ranks(trades, tied),
        group=agent,
        n_groups=n_agents,
        rows=None if keep is None else np.flatnonzero(keep),
    )
    code, val, when = agent[rows], x[rows], exit_ns[rows]
    real = None
    if len(v_code):  # the saved trades go first within each agent (stable)
        code = np.concatenate([v_code, code])
        val = np.concatenate([v_x, val])
        when = np.concatenate([np.full(len(v_code), _NAT, dtype=np.int64), when])
        real = np.concatenate([np.zeros(len(v_code), dtype=bool), np.ones(len(rows), dtype=bool)])
        by_code = _stable_by_code(code, n_agents)
        code, val, when, real = code[by_code], val[by_code], when[by_code], real[by_code]
    n = len(code)
    new = np.ones(n, dtype=bool)
    np.not_equal(code[1:], code[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    group_end = np.append(starts[1:] - 1, n - 1) if n else starts

    # --- one update per agent and day: at its last trade of the day
    day = when // DAY_NS  # the saved trades (NaT) fall on no real day, and are not updates
    last_of_day = np.ones(n, dtype=bool)
    np.not_equal(day[1:], day[:-1], out=last_of_day[:-1])
    last_of_day[:-1] |= new[1:]
    if real is not None:
        last_of_day &= real
    upd = np.flatnonzero(last_of_day)
    # s5 at every row: the agent's last k values added oldest to newest, one at a time, so it is the
    # same float whether they come from the history or from a saved state (a resume is exact)
    window = np.zeros(n)
    for lag in range(k - 1, 0, -1):
        if lag < n:
            np.add(window[lag:], val[:-lag], out=window[lag:], where=code[lag:] == code[:-lag])
    window += val
    s5 = window[upd]
    factor = rule.factors(s5)

    # --- the multiplier: a scan over the n-th update of every agent at once
    u_code = code[upd]
    counts = np.bincount(u_code, minlength=n_agents)
    first_u = np.cumsum(counts) - counts  # where each agent's updates start in ``upd``
    rank = np.arange(len(upd)) - first_u[u_code]
    by_count = np.argsort(-counts, kind="stable")  # agents with more updates first
    slot = np.empty(n_agents, dtype=np.int64)
    slot[by_count] = np.arange(n_agents)
    most = int(counts.max()) if len(upd) else 0
    active = n_agents - np.cumsum(np.bincount(counts, minlength=most + 1))[:most]  # agents with > r updates
    offset = np.concatenate([[0], np.cumsum(active)])
    scan = np.empty(len(upd))
    scan[offset[rank] + slot[u_code]] = factor  # update r of the agent in slot i sits at offset[r] + i
    m = mult0[by_count]
    before = last0[by_count]
    for r in range(most):
        head = m[: active[r]]
        before[: active[r]] = head
        np.multiply(head, scan[offset[r] : offset[r + 1]], out=head)
        np.clip(head, rule.floor, rule.cap, out=head)
    mult = np.empty(n_agents)
    mult[by_count] = m
    last_change = np.empty(n_agents)
    last_change[by_count] = before

    s5_last, updated = s5_0.copy(), updated0.copy()
    has = counts > 0
    last_u = (first_u + counts - 1)[has]
    s5_last[has] = s5[last_u]
    updated[has] = when[upd[last_u]]
    recent = np.full((n_agents, k), np.nan)
    for j in range(k):
        ends = group_end[group_end - j >= starts]
        recent[code[ends], j] = val[ends - j]

    shown = (counts > 0) | carried
    state = pd.DataFrame(
        {
            "mult": mult[shown],
            "updated_at": _to_utc(updated[shown]),
            "recent_sum_bps": s5_last[shown],
            "last_change": last_change[shown],
            "updates": (updates0 + counts)[shown],
            "since": _to_utc(since_ns[shown]),
            **{c: recent[shown, j] for j, c in enumerate(rcols)},
        },
        index=pd.Index(universe[shown].astype(str), name="agent"),
    )
    if through_end is not None:
        folded_ns = through_end - DAY_NS
    else:
        days = [int(day[upd].max()) * DAY_NS] if len(upd) else []
        if initial is not None and initial.attrs.get("folded_through") is not None:
            days.append(_day_start_ns(initial.attrs["folded_through"]))
        folded_ns = max(days) if days else None
    state.attrs["folded_through"] = (
        None if folded_ns is None else pd.Timestamp(folded_ns, unit="ns", tz="UTC")
    )
    state.attrs["rule"] = asdict(rule)
    return state


# ---------------------------------------------------------------------------------------- JSON
def _rounded(value, digits: int) -> float | None:
    value = float(value)
    return round(value, digits) + 0.0 if math.isfinite(value) else None  # + 0.0: no "-0.0"


def _exact(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def confidence_json(state: pd.DataFrame, *, horizon_hours: int | None = None) -> dict:
    """The app's ``meta_supervisor/state/confidence.json`` (docs/rules.md, *File contract*).

    Returns ``{agent: {"mult": round(mult, 4), "updated_at": "2026-03-02T10:30:00Z",
    "horizon_hours": 24, "recent_sum_bps": round(s5, 2)}}`` with the agents sorted (code point
    order); ``updated_at`` carries a fraction of a second only when there is one. ``horizon_hours``
    defaults to the rule's (``state.attrs["rule"]``), else 24. A missing number is ``None`` (JSON
    ``null``), never NaN.
    """
    if horizon_hours is None:
        horizon_hours = int((state.attrs.get("rule") or {}).get("horizon_hours", 24))
    names = [str(a) for a in state.index]
    stamps = iso_utc(state["updated_at"].reset_index(drop=True))
    rows = zip(names, state["mult"].tolist(), stamps, state["recent_sum_bps"].tolist(), strict=True)
    return {
        name: {
            "mult": _rounded(mult, 4),
            "updated_at": stamp,
            "horizon_hours": horizon_hours,
            "recent_sum_bps": _rounded(s5, 2),
        }
        for name, mult, stamp, s5 in sorted(rows, key=lambda row: row[0])
    }


def state_to_json(state: pd.DataFrame) -> dict:
    """A fold's state as JSON-ready data that :func:`state_from_json` reads back exactly.

    ``{"folded_through": "YYYY-MM-DD" | None, "rule": {...} | None, "agents": {agent: {"mult",
    "updated_at", "recent_sum_bps", "last_change", "updates", "since", "recent_bps"}}}``: floats at
    full precision (``json`` writes the shortest text that reads back to the same float), times as
    ISO-8601 UTC to the nanosecond, ``recent_bps`` oldest first. Save a state folded through a
    complete day only (see the module docstring).
    """
    folded = state.attrs.get("folded_through")
    recent = [c for c in state.columns if str(c).startswith("recent_") and c != "recent_sum_bps"]
    recent.sort(key=lambda c: int(str(c).split("_")[1]), reverse=True)  # oldest first
    saved = state[recent].to_numpy(np.float64)
    updated = iso_utc(state["updated_at"].reset_index(drop=True))
    since = (
        iso_utc(state["since"].reset_index(drop=True)) if "since" in state.columns else [None] * len(state)
    )
    agents = {}
    for i, name in enumerate(state.index):
        agents[str(name)] = {
            "mult": _exact(state["mult"].iat[i]),
            "updated_at": updated[i],
            "recent_sum_bps": _exact(state["recent_sum_bps"].iat[i]),
            "last_change": _exact(state["last_change"].iat[i]),
            "updates": int(state["updates"].iat[i]),
            "since": since[i],
            "recent_bps": [float(v) for v in saved[i] if not np.isnan(v)],
        }
    return {
        "folded_through": None if folded is None else pd.Timestamp(folded).strftime("%Y-%m-%d"),
        "rule": state.attrs.get("rule"),
        "agents": agents,
    }


def state_from_json(document: Mapping) -> pd.DataFrame:
    """The state saved by :func:`state_to_json`, ready to pass as ``fold_confidence(initial=...)``.

    Raises
    ------
    ValueError
        when an agent keeps more recent trades than its rule's window.
    """
    rule = ConfidenceRule(**document["rule"]) if document.get("rule") else ConfidenceRule()
    k = rule.window
    agents = document.get("agents") or {}
    names = sorted(agents)
    recent = np.full((len(names), k), np.nan)
    for i, name in enumerate(names):
        values = agents[name].get("recent_bps") or []
        if len(values) > k:
            raise ValueError(f"agent {name!r}: {len(values)} recent trades saved, the rule keeps {k}")
        recent[i, : len(values)] = values[::-1]  # newest first

    def column(key: str) -> list:
        return [agents[name].get(key) for name in names]

    state = pd.DataFrame(
        {
            "mult": np.array(column("mult"), dtype=np.float64),
            "updated_at": _to_utc(_optional_ns(column("updated_at"))),
            "recent_sum_bps": np.array([np.nan if v is None else v for v in column("recent_sum_bps")]),
            "last_change": np.array([np.nan if v is None else v for v in column("last_change")]),
            "updates": np.array(column("updates"), dtype=np.int64),
            "since": _to_utc(_optional_ns(column("since"))),
            **{c: recent[:, j] for j, c in enumerate(recent_columns(rule))},
        },
        index=pd.Index(names, dtype=object, name="agent").astype(str),
    )
    folded = document.get("folded_through")
    state.attrs["folded_through"] = None if folded is None else pd.Timestamp(folded, tz="UTC")
    state.attrs["rule"] = asdict(rule)
    return state
