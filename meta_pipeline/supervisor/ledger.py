"""The supervisor's ledger: per-agent, per-day aggregates kept on disk, so that a tick computes
:func:`meta_pipeline.supervisor.stats.agent_stats` by reading only the warehouse days that changed
(docs/rules.md, *Supervisor rules*; issue "Supervisor", bounded reads).

What :func:`ledger_agent_stats` returns is the table of::

    stats.agent_stats(trades, runs, since=since, n_trials=n_trials, psr_probability=p)

with ``trades = history.matured_trades(warehouse)`` (24 h) and ``runs = history.telemetry_runs(warehouse)``,
both cut to the look-back window when ``start`` is given (trades with ``exit_ts ≥ start``, runs with
``ts ≥ start``, as ``meta_pipeline/defs/supervisor.py`` cuts them): same index, columns and dtypes.

Layout of ``ledger_dir`` (every file written atomically; ``manifest.json`` last, so a crash between
writes only makes the next call redo the same work)::

    manifest.json                   fingerprints of the source partitions, checkpoints, chain filter
    trades/<day>.parquet            per agent: the day's matured 24 h trades as a composable summary
    pairs/<day>.parquet             per (agent, instrument): n, Σd, Σd·gross, Σgross (bias / timing)
    runs/<day>.parquet              per agent: runs, readable, error runs, latency Σ and n, cost Σ
    latency/<day>.parquet           per (agent, latency value): number of runs (for the exact p95)
    trades_base.parquet, pairs_base.parquet, runs_base.parquet, latency_base.parquet
                                    the same summaries folded over every day before the checkpoint day B
    chain/<day>.parquet, chain_base.parquet
                                    the chain's trades (full trade columns), by entry day / before B

``<day>`` is the key of the source partition. **Layout assumption**, checked on every read: a
``reconciled_trades`` (``telemetry``) partition holds exactly the rows whose ``ts`` falls on its UTC
day, as the reconciliation and the ingestion write them. A 24 h trade's exit is ``ts + 24 h``, so every
trade of signal day D exits on day D + 1: the per-(agent, exit day) aggregates of the issue are the
per-(agent, signal day) aggregates stored under D. If a partition breaks the assumption, the ledger
is not used for that call: the full computation runs and the report says why.

Trade summary of a segment (an agent's trades of one day, or a fold of days), net PnL x in bps, in
the portfolio's time order (``exit_ts``, ``ts``, ``run_id``, ``instrument``, ``direction``, then file
order: :func:`meta_pipeline.supervisor.portfolio._sorted_rows`):

* ``n``, ``sum`` (Σx), ``hits`` (#x > 0), ``min``, ``gross_sum`` (Σ gross_bps);
* central moments ``mean`` and ``m2``, ``m3``, ``m4`` = Σ(x − mean)^p. Two segments fold exactly (no
  power sums, which cancel): with δ_i = mean_i − mean, Σ(x − mean)² = Σ_i m2_i + n_i δ_i²,
  Σ(x − mean)³ = Σ_i m3_i + 3 δ_i m2_i + n_i δ_i³, Σ(x − mean)⁴ = Σ_i m4_i + 4 δ_i m3_i + 6 δ_i² m2_i
  + n_i δ_i⁴ (the odd first-order terms vanish). m3 and m4 give the naive PSR's γ₃, γ₄.
* the drawdown summary, with c_k the running sum of the segment's x from 0:
  ``dd_total`` T = c_last, ``dd_top`` P = max(0, c_1 … c_m), ``dd_bottom`` m = min(0, c_1 … c_m),
  ``dd_within`` W = max_k (max(0, c_1 … c_k) − c_k).

**Drawdown composition.** ``stats`` (through ``portfolio._group_max_drawdown``) defines an agent's
maximum drawdown as max_k (peak_k − cum_k) with peak_k = max(0, cum_1 … cum_k): the book starts flat
at 0 and the peak is floored at 0, not started at the first trade. For segments 1 … s in time order
let O_i = T_1 + … + T_{i−1} (the running sum before segment i) and H_i = max(0, max_{j<i} (O_j + P_j))
(the peak before it). A trade k of segment i has cum = O_i + c_k and peak = max(H_i, O_i + max(0, c_1 …
c_k)) (H_i ≥ O_i, since O_i is itself an earlier cum or 0), so its drawdown is max(H_i − O_i − c_k,
max(0, c_1 … c_k) − c_k), and over the segment the worst is max(W_i, H_i − O_i − m_i) (m_i may be the
0 of the segment start: H_i − O_i ≤ W_{i−1}-or-0, so it never adds a false value). Hence

    W = max_i max(W_i, H_i − O_i − m_i),  T = Σ T_i,  P = max(0, max_i O_i + P_i),  m = min(0, min_i O_i + m_i)

which is again a segment summary (the fold is associative): exactly the definition, up to the order
in which floats are added (``stats`` takes one compensated running sum over all of an agent's trades).

**Chain.** ``significance.chain_mask`` picks, per agent, the first trade in (``ts``, ``run_id``, row)
order, then each time the first trade with ``ts`` at or after the previous chain trade's ``exit_ts``.
Claim: a chain trade with entry before day D depends only on the trades with entry before D. Each
chain trade is the minimum, in that order, of {trades with ts ≥ previous exit}; the minimum m of a
set is fixed by the members whose key is ≤ key(m), and those all have ts ≤ m.ts < D; by induction
every earlier chain trade has ts < D too. So when the earliest changed signal day is D, the stored
chain trades with entry before D stay, and the chain continues from the last of them, c: its
successor is the first trade with ts ≥ c.exit_ts, and no trade with entry in [c.exit_ts, D) exists
(it would have been c's stored successor), so only the partitions ≥ D are read. The continuation runs
``significance._chain`` on [c; trades of days ≥ D], c first in its agent's order (c.ts < D), rows in
the order the full frame has them, so ties break on the same row order. The timing returns, PSR,
DSR and MinTRL then come from the chain's trades through ``significance._significance``, in the
full frame's row order, so they are the full computation's floats to the bit.

**Revives and the window.** A revive ``since[agent]`` drops the agent's trades (runs) with ``ts`` before
it; the window ``start`` drops trades with ``exit_ts < start`` (i.e. ``ts < start − 24 h``) and runs with
``ts < start``. Per agent the lower bound is L = max(start − 24 h, since) for trades, max(start, since)
for runs. Stored day summaries are used for the days entirely at or after L; the day that L cuts
(when L is not at midnight) is re-read raw and summarized for the rows ≥ L (one day per distinct
revive day). The checkpoint folds every agent's days before B, so an agent with a revive before B
and a window (whose start moves every UTC day) read the per-day summaries from L on instead: a read
bounded by the window / the time since the revive, of summaries, not raw days. The chain is stored
for one filter (window start and revives, in the manifest): a change of the window start rebuilds
it from the window's first day (raw days of the window, once per UTC day; the 47 other ticks of
the day reuse it); a changed revive of an agent drops that agent's chain and continues it from the
revive's day (a revive removed altogether restarts it from the window start, or from the first day).

**Telemetry duplicates.** ``history.telemetry_runs`` keeps one row per ``run_id`` over all days read:
the first by (``ts``, ``run_id``). The ledger does this **within a day** (the same code on one
partition), which is what the ingestion already guarantees ("a run_id written twice in a day counts
once"). A run id stored on two days (the app writing one run again with another day's ``ts``) counts
once per day here, where the full computation keeps only the earlier: making it exact would mean
keeping every run id ever seen (15 M a year) and reading them each tick, which is what the ledger
avoids. The difference is confined to ``runs``, ``error_runs``, ``error_rate``, the latency and cost
figures of such runs; ``meta_pipeline_tests/supervisor/test_ledger.py`` shows it.

**Latency p95.** ``stats._quantile_by_code`` sorts each agent's latencies and interpolates linearly
between the values at ranks ⌊(n − 1)·0.95⌋ and the next. The ledger keeps, per (agent, day), the
number of runs at each distinct latency value (ms, as float64, **not rounded**: a count per distinct
value is exact for any float and compact when latencies are integer milliseconds, as they are in
practice), merges the counts, and finds those two ranks in the cumulative counts: the same values,
the same interpolation, the same float.

Exactness: counts (``trades``, ``runs``, ``error_runs``, ``chain_trades``) and the significance columns
are exact (bit for bit); the sums, means, standard deviations, drawdowns and the bias / timing split
equal the full computation's up to the order of float additions (relative 1e-12 in practice; the tests
use rtol 1e-9); ``p95_latency_ms`` and ``worst_trade_bps`` are exact. No Dagster here.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from meta_pipeline import names
from meta_pipeline.storage import Warehouse, atomic_path, atomic_write_json, write_parquet
from meta_pipeline.supervisor import history, portfolio, significance, stats

log = logging.getLogger(__name__)

__all__ = [
    "HOT_DAYS",
    "LEDGER_VERSION",
    "LedgerReport",
    "compose_drawdown",
    "fold_trade_summaries",
    "ledger_agent_stats",
    "segment_drawdown",
]

LEDGER_VERSION = 1
HOT_DAYS = 3
"""Days at the end of history kept as separate files, not folded into the checkpoint: the
reconciliation rewrites the last signal days on every tick while their trades mature."""
HORIZON_HOURS = 24
_HORIZON = pd.Timedelta(hours=HORIZON_HOURS)
_DAY = pd.Timedelta(days=1)
_NS_DAY = 86_400 * 10**9

TRADE_SUMMARY = [
    "n",
    "sum",
    "hits",
    "min",
    "mean",
    "m2",
    "m3",
    "m4",
    "gross_sum",
    "dd_total",
    "dd_top",
    "dd_bottom",
    "dd_within",
]
PAIR_SUMS = ["n", "sum_d", "sum_r", "sum_g"]
RUN_SUMS = ["runs", "readable", "error_runs", "lat_sum", "lat_n", "cost_sum"]
CHAIN_COLUMNS = ["agent", "run_id", "instrument", "ts", "exit_ts", "direction", "gross_bps", "net_bps"]


class LayoutError(ValueError):
    """A source partition holds a row whose ``ts`` is not on the partition's UTC day."""


class LedgerDamaged(Exception):
    """A file of the ledger itself cannot be read (a damaged disk, a hand edit): the ledger is a
    cache of the partitions, so it is rebuilt from them."""


def _read_ledger_file(path: Path) -> pd.DataFrame:
    try:
        return pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowException) as exc:
        raise LedgerDamaged(f"{path}: {exc}") from exc


@dataclass
class LedgerReport:
    """What one call read and reused, for the UI's metadata.

    ``trade_days_read`` / ``run_days_read``: source partitions read raw (ISO days, sorted);
    ``trade_days_reused`` / ``run_days_reused``: stored partitions whose day summaries were used
    without reading them; ``summary_files_read``: ledger files read; ``checkpoint``: per kind,
    ``reused``, ``advanced`` or ``rebuilt``; ``chain_from``: the first day whose chain was recomputed
    (None: none was); ``mode``: ``ledger``, ``rebuilt: <why>`` (a ledger file was unreadable) or
    ``full: <why>``."""

    trade_days_read: list[str] = field(default_factory=list)
    run_days_read: list[str] = field(default_factory=list)
    trade_days_reused: int = 0
    run_days_reused: int = 0
    summary_files_read: int = 0
    checkpoint: dict[str, str] = field(default_factory=dict)
    chain_from: str | None = None
    mode: str = "ledger"

    def as_metadata(self) -> dict:
        """Plain JSON-able figures (days listed up to 10)."""
        return {
            "mode": self.mode,
            "trade_days_read": len(self.trade_days_read),
            "trade_days_read_list": ", ".join(self.trade_days_read[:10]),
            "run_days_read": len(self.run_days_read),
            "trade_days_reused": self.trade_days_reused,
            "run_days_reused": self.run_days_reused,
            "summary_files_read": self.summary_files_read,
            "checkpoint": ", ".join(f"{k}: {v}" for k, v in sorted(self.checkpoint.items())),
            "chain_from": self.chain_from or "none",
        }


# ------------------------------------------------------------------------------- segment summaries
def segment_drawdown(x: np.ndarray, codes: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """The drawdown summary of each group's values in the order given.

    Parameters
    ----------
    x : float64 (n,), bps, grouped contiguously or not, each group's values in time order.
    codes : int64 (n,) in [0, k).

    Returns
    -------
    dict of float64 arrays (k,): ``dd_total`` (Σx), ``dd_top`` (max(0, running sums)), ``dd_bottom``
    (min(0, running sums)), ``dd_within`` (max of peak − running sum, peak floored at 0). An empty
    group has all four 0.
    """
    grouper = stats._grouper(codes, k)
    # pandas' grouped cumsum is compensated, as portfolio._group_max_drawdown's is
    cum = pd.Series(x).groupby(grouper, observed=False, sort=True).cumsum().to_numpy()
    peak = np.maximum(pd.Series(cum).groupby(grouper, observed=False, sort=True).cummax().to_numpy(), 0.0)
    top, bottom, within = np.zeros(k), np.zeros(k), np.zeros(k)
    np.maximum.at(top, codes, cum)
    np.minimum.at(bottom, codes, cum)
    np.maximum.at(within, codes, peak - cum)
    total = np.zeros(k)
    if len(x):
        last = np.full(k, -1, dtype=np.int64)
        last[codes] = np.arange(len(x))  # fancy assignment keeps the last write per code
        has = last >= 0
        total[has] = cum[last[has]]
    return {"dd_total": total, "dd_top": top, "dd_bottom": bottom, "dd_within": within}


def compose_drawdown(
    codes: np.ndarray,
    k: int,
    total: np.ndarray,
    top: np.ndarray,
    bottom: np.ndarray,
    within: np.ndarray,
) -> dict[str, np.ndarray]:
    """Fold drawdown summaries of consecutive segments (module docstring, *Drawdown composition*).

    Parameters
    ----------
    codes : int64 (s,) in [0, k), the group of each segment; the segments of a group must be given
        in time order (groups may interleave).
    total, top, bottom, within : float64 (s,), bps, each segment's T, P, m, W.

    Returns
    -------
    dict of float64 arrays (k,): the folded ``dd_total``, ``dd_top``, ``dd_bottom``, ``dd_within``.
    """
    grouper = stats._grouper(codes, k)
    ends = pd.Series(total).groupby(grouper, observed=False, sort=True).cumsum().to_numpy()
    before = ends - total  # O_i, the running sum before the segment
    high = before + top
    peak_through = pd.Series(high).groupby(grouper, observed=False, sort=True).cummax().to_numpy()
    # H_i: the peak over the earlier segments of the group (0 for its first)
    peak_before = pd.Series(peak_through).groupby(grouper, observed=False, sort=True).shift(1).to_numpy()
    peak_before = np.maximum(np.nan_to_num(peak_before, nan=0.0), 0.0)
    worst = np.maximum(within, peak_before - before - bottom)
    out_total, out_top, out_bottom, out_within = np.zeros(k), np.zeros(k), np.zeros(k), np.zeros(k)
    np.add.at(out_total, codes, total)
    np.maximum.at(out_top, codes, high)
    np.minimum.at(out_bottom, codes, before + bottom)
    np.maximum.at(out_within, codes, worst)
    return {"dd_total": out_total, "dd_top": out_top, "dd_bottom": out_bottom, "dd_within": out_within}


def _trade_segments(trades: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per agent, the trade summary (columns ``agent`` + TRADE_SUMMARY) of a trades frame (one
    segment per agent), and per (agent, instrument) the pair sums (``agent``, ``instrument`` +
    PAIR_SUMS). Raises ValueError as ``stats.agent_stats`` does on bad trades."""
    if trades.empty:
        return (
            pd.DataFrame(
                {"agent": pd.Series(dtype=object), **{c: pd.Series(dtype=float) for c in TRADE_SUMMARY}}
            ),
            pd.DataFrame(
                {
                    "agent": pd.Series(dtype=object),
                    "instrument": pd.Series(dtype=object),
                    **{c: pd.Series(dtype=float) for c in PAIR_SUMS},
                }
            ),
        )
    trades = trades.reset_index(drop=True)
    portfolio._check_columns(trades, ("agent",))
    x = portfolio._net_bps(trades)
    exit_ns = portfolio.utc_ns(trades["exit_ts"], name="exit_ts")
    ts_ns = portfolio.utc_ns(trades["ts"], name="ts")
    significance._require(trades, ("agent", "instrument", "direction", "gross_bps"))
    codes, labels, _ = stats._agent_codes(trades["agent"])
    if (codes < 0).any():
        raise ValueError("column 'agent' has missing values")
    d = significance._direction(trades["direction"])
    gross = significance._finite(trades["gross_bps"])
    k = len(labels)
    n = np.bincount(codes, minlength=k).astype(np.float64)
    grouped = pd.Series(x).groupby(stats._grouper(codes, k), observed=False, sort=True)
    total = grouped.sum().to_numpy()
    mean = total / n
    dev = x - mean[codes]
    dev2 = dev * dev
    summary = {
        "n": n,
        "sum": total,
        "hits": np.bincount(codes, weights=x > 0, minlength=k),
        "min": grouped.min().to_numpy(),
        "mean": mean,
        "m2": np.bincount(codes, weights=dev2, minlength=k),
        "m3": np.bincount(codes, weights=dev2 * dev, minlength=k),
        "m4": np.bincount(codes, weights=dev2 * dev2, minlength=k),
        "gross_sum": np.bincount(codes, weights=gross, minlength=k),
    }
    order = portfolio._sorted_rows(
        exit_ns, ts_ns, lambda tied: portfolio._text_ranks(trades, tied), group=codes, n_groups=k
    )
    summary.update(segment_drawdown(x[order], codes[order], k))
    agg = pd.DataFrame({"agent": np.asarray(labels, dtype=object), **summary})
    instrument_codes, instruments = significance._codes(trades["instrument"].astype(str))
    width = np.int64(max(len(instruments), 1))
    groups, pairs = pd.factorize(codes * width + instrument_codes)
    pairs = np.asarray(pairs, dtype=np.int64)
    pair_frame = pd.DataFrame(
        {
            "agent": np.asarray(labels, dtype=object)[pairs // width],
            "instrument": np.asarray(instruments, dtype=object)[pairs % width],
            "n": np.bincount(groups).astype(np.float64),
            "sum_d": np.bincount(groups, weights=d),
            "sum_r": np.bincount(groups, weights=d * gross),
            "sum_g": np.bincount(groups, weights=gross),  # d · r = gross
        }
    )
    return agg, pair_frame


def fold_trade_summaries(segments: pd.DataFrame) -> pd.DataFrame:
    """Fold trade summaries per agent, in the order of the column ``seq`` (then row order).

    Parameters
    ----------
    segments : DataFrame with ``agent``, ``seq`` (any sortable) and TRADE_SUMMARY; segments with
        ``n`` = 0 must not be given.

    Returns
    -------
    DataFrame with ``agent`` (sorted) and TRADE_SUMMARY: each agent's segments as one summary.
    """
    if segments.empty:
        return segments.drop(columns="seq", errors="ignore").reset_index(drop=True)
    frame = segments.sort_values(["agent", "seq"], kind="stable").reset_index(drop=True)
    codes, agents = pd.factorize(frame["agent"], sort=True)
    codes = codes.astype(np.int64)
    k = len(agents)
    n = frame["n"].to_numpy(dtype=np.float64)
    total = frame["sum"].to_numpy(dtype=np.float64)
    big_n = np.bincount(codes, weights=n, minlength=k)
    big_sum = pd.Series(total).groupby(stats._grouper(codes, k), observed=False, sort=True).sum().to_numpy()
    mean = big_sum / big_n
    delta = frame["mean"].to_numpy() - mean[codes]
    m2, m3, m4 = (frame[c].to_numpy(dtype=np.float64) for c in ("m2", "m3", "m4"))
    out = {
        "agent": np.asarray(agents, dtype=object),
        "n": big_n,
        "sum": big_sum,
        "hits": np.bincount(codes, weights=frame["hits"].to_numpy(), minlength=k),
        "min": pd.Series(frame["min"].to_numpy()).groupby(codes).min().to_numpy(),
        "mean": mean,
        "m2": np.bincount(codes, weights=m2 + n * delta**2, minlength=k),
        "m3": np.bincount(codes, weights=m3 + 3 * delta * m2 + n * delta**3, minlength=k),
        "m4": np.bincount(codes, weights=m4 + 4 * delta * m3 + 6 * delta**2 * m2 + n * delta**4, minlength=k),
        "gross_sum": np.bincount(codes, weights=frame["gross_sum"].to_numpy(), minlength=k),
    }
    out.update(
        compose_drawdown(
            codes,
            k,
            *(frame[c].to_numpy(dtype=np.float64) for c in ("dd_total", "dd_top", "dd_bottom", "dd_within")),
        )
    )
    return pd.DataFrame(out)


def _fold_sums(frames: list[pd.DataFrame], keys: list[str], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(
            {**{k: pd.Series(dtype=object) for k in keys}, **{c: pd.Series(dtype=float) for c in columns}}
        )
    frame = pd.concat(frames, ignore_index=True)
    return frame.groupby(keys, sort=True, observed=True)[columns].sum().reset_index()


def _run_segments(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per agent the run sums (``agent`` + RUN_SUMS) and per (agent, latency) the run counts
    (``agent``, ``latency``, ``count``) of a runs frame (already deduplicated)."""
    if runs.empty:
        return (
            pd.DataFrame({"agent": pd.Series(dtype=object), **{c: pd.Series(dtype=float) for c in RUN_SUMS}}),
            pd.DataFrame(
                {
                    "agent": pd.Series(dtype=object),
                    "latency": pd.Series(dtype=float),
                    "count": pd.Series(dtype=float),
                }
            ),
        )
    codes, labels, _ = stats._agent_codes(runs["agent"])
    errors = runs["errors"].to_numpy(dtype="float64")
    latency = runs["latency_ms"].to_numpy(dtype="float64")
    cost = runs["cost_usd"].to_numpy(dtype="float64")
    keep = codes >= 0  # a run without agent counts nowhere (as in stats)
    codes, errors, latency, cost = codes[keep], errors[keep], latency[keep], cost[keep]
    k = len(labels)
    sums = (
        pd.DataFrame({"latency": latency, "cost": cost})
        .groupby(stats._grouper(codes, k), observed=False, sort=True)
        .sum()
    )
    agents = np.asarray(labels, dtype=object)
    agg = pd.DataFrame(
        {
            "agent": agents,
            "runs": np.bincount(codes, minlength=k).astype(np.float64),
            "readable": np.bincount(codes, weights=~np.isnan(errors), minlength=k),
            "error_runs": np.bincount(codes, weights=errors > 0, minlength=k),
            "lat_sum": sums["latency"].to_numpy(),
            "lat_n": np.bincount(codes, weights=~np.isnan(latency), minlength=k),
            "cost_sum": sums["cost"].to_numpy(),
        }
    )
    has = ~np.isnan(latency)
    lat = (
        pd.DataFrame({"code": codes[has], "latency": latency[has]})
        .groupby(["code", "latency"], sort=True)
        .size()
        .reset_index(name="count")
    )
    lat = pd.DataFrame(
        {
            "agent": agents[lat["code"].to_numpy()],
            "latency": lat["latency"].to_numpy(dtype=np.float64),
            "count": lat["count"].to_numpy(dtype=np.float64),
        }
    )
    return agg, lat


def _quantile_from_counts(lat: pd.DataFrame, agents: pd.Index, q: float) -> np.ndarray:
    """Per agent of ``agents``, the ``q`` quantile of the latencies given as (agent, latency, count)
    rows, as ``stats._quantile_by_code`` interpolates on the expanded values; NaN without any."""
    out = np.full(len(agents), np.nan)
    if lat.empty:
        return out
    frame = lat.groupby(["agent", "latency"], sort=True)["count"].sum().reset_index()
    codes = agents.get_indexer(frame["agent"])
    keep = codes >= 0
    frame, codes = frame[keep], codes[keep]
    counts = frame["count"].to_numpy().astype(np.int64)
    values = frame["latency"].to_numpy(dtype=np.float64)
    cum = np.cumsum(counts)  # rows sorted by (agent, value): each agent's block is contiguous
    per_agent = np.bincount(codes, weights=counts, minlength=len(agents)).astype(np.int64)
    start = np.cumsum(per_agent) - per_agent  # ranks before the agent's block
    has = per_agent > 0
    position = (per_agent - 1) * q
    lower = np.floor(position).astype(np.int64)
    frac = position - lower
    upper = np.minimum(lower + 1, per_agent - 1)
    # the value at rank r of an agent: the first row whose cumulative count exceeds start + r
    low = values[np.searchsorted(cum, start[has] + lower[has], side="right")]
    high = values[np.searchsorted(cum, start[has] + upper[has], side="right")]
    out[has] = low + (high - low) * frac[has]
    return out


# ------------------------------------------------------------------------------------------ tables
def _trade_table(agg: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """``stats.trade_stats`` columns from folded summaries (index ``agent``: the agents of ``agg``)."""
    labels = pd.Index(agg["agent"].to_numpy(dtype=object), name="agent").astype(str)
    n = agg["n"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.sqrt(agg["m2"].to_numpy() / (n - 1.0))
    std[n < 2] = np.nan
    table = pd.DataFrame(
        {
            "trades": n.astype(np.int64),
            "pnl_sum_bps": agg["sum"].to_numpy(),
            "hit_rate": agg["hits"].to_numpy() / n,
            "mean_bps": agg["sum"].to_numpy() / n,
            "std_bps": std,
            "worst_trade_bps": agg["min"].to_numpy(),
            "max_drawdown_bps": agg["dd_within"].to_numpy(),
        },
        index=labels,
    )
    codes = labels.get_indexer(pairs["agent"].astype(str))
    n_s = pairs["n"].to_numpy()
    held = pairs["sum_d"].to_numpy() * pairs["sum_r"].to_numpy() / n_s  # n_s · d̄_s · r̄_s
    k = len(labels)
    table["mean_gross_bps"] = agg["gross_sum"].to_numpy() / n
    table["bias_bps"] = np.bincount(codes, weights=held, minlength=k) / n
    table["timing_bps"] = np.bincount(codes, weights=pairs["sum_g"].to_numpy() - held, minlength=k) / n
    return table


def _run_table(agg: pd.DataFrame, lat: pd.DataFrame) -> pd.DataFrame:
    """``stats.run_stats`` columns from folded run sums and latency counts."""
    labels = pd.Index(agg["agent"].to_numpy(dtype=object), name="agent").astype(str)
    readable = agg["readable"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        error_rate = agg["error_runs"].to_numpy() / np.where(readable > 0, readable, np.nan)
        avg_latency = agg["lat_sum"].to_numpy() / agg["lat_n"].to_numpy()
    return pd.DataFrame(
        {
            "runs": agg["runs"].to_numpy().astype(np.int64),
            "error_runs": agg["error_runs"].to_numpy().astype(np.int64),
            "error_rate": error_rate,
            "avg_latency_ms": avg_latency,
            "p95_latency_ms": _quantile_from_counts(lat, labels, 0.95),
            "cost_usd": agg["cost_sum"].to_numpy(),
        },
        index=labels,
    )


def _significance_table(chain: pd.DataFrame, n_trials: int | None, prob: float) -> pd.DataFrame:
    """``significance_by_agent`` columns of the chain's trades (every row is a chain trade)."""
    if not 0.0 < prob < 1.0:
        raise ValueError(f"prob must be in (0, 1), got {prob}")
    codes, labels, factorized = stats._agent_codes(chain["agent"])
    k = len(labels)
    if n_trials is None:
        n_trials = k
    elif n_trials < max(k, 1):
        raise ValueError(f"n_trials={n_trials} is below the {k} agent(s) in the trades frame")
    instrument_codes, n_instruments = significance._group_of(chain["instrument"])
    columns = significance._significance(
        codes,
        k,
        np.ones(len(chain), dtype=bool),
        instrument_codes,
        n_instruments,
        significance._direction(chain["direction"]),
        significance._finite(chain["gross_bps"]),
        portfolio._net_bps(chain),
        n_trials=n_trials,
        prob=prob,
        agent_order=factorized,
    )
    columns["psr_reason"] = pd.Series(columns["psr_reason"], index=labels, dtype=object)
    return pd.DataFrame(columns, index=labels)


# ------------------------------------------------------------------------------------- the ledger
def _utc(value) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _day_start(key: str) -> pd.Timestamp:
    return pd.Timestamp(key, tz="UTC")


def _key_of(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%d")


def _fingerprints(warehouse: Warehouse, asset: str) -> dict[str, list[int]]:
    out = {}
    for key in warehouse.stored_keys(asset):
        out[key] = warehouse.fingerprint(warehouse.partition_path(asset, key))
    return out


def _check_layout(frame: pd.DataFrame, key: str, asset: str) -> None:
    if frame.empty:
        return
    start = _day_start(key)
    ts = frame["ts"]
    if bool(((ts < start) | (ts >= start + _DAY)).any()):
        raise LayoutError(f"{asset}/{key}: a row's ts is not on the partition's UTC day")


class _Ledger:
    def __init__(self, directory: Path, warehouse: Warehouse, report: LedgerReport):
        self.dir = Path(directory)
        self.warehouse = warehouse
        self.report = report
        self.raw_trades: dict[str, pd.DataFrame] = {}
        self.raw_runs: dict[str, pd.DataFrame] = {}

    # ---------------------------------------------------------------- files
    def path(self, kind: str, key: str | None = None) -> Path:
        return self.dir / (f"{kind}_base.parquet" if key is None else f"{kind}/{key}.parquet")

    def read(self, kind: str, key: str | None = None) -> pd.DataFrame:
        self.report.summary_files_read += 1
        frame = _read_ledger_file(self.path(kind, key))
        if "agent" in frame:
            frame["agent"] = frame["agent"].astype(object)
        if "instrument" in frame:
            frame["instrument"] = frame["instrument"].astype(object)
        return frame

    def write(self, kind: str, key: str | None, frame: pd.DataFrame, facts=None) -> None:
        # text as pandas' str dtype: write_parquet then stores it as is (it would check object
        # columns value by value)
        frame = frame.reset_index(drop=True)
        text = [c for c in frame.columns if frame[c].dtype == object]
        write_parquet(self.path(kind, key), frame.astype(dict.fromkeys(text, "str")), facts)

    def remove(self, kind: str, key: str) -> None:
        self.path(kind, key).unlink(missing_ok=True)

    def load_manifest(self) -> dict:
        path = self.dir / "manifest.json"
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return manifest if manifest.get("version") == LEDGER_VERSION else {}

    # ---------------------------------------------------------------- raw reads
    def trades_of(self, key: str) -> pd.DataFrame:
        if key not in self.raw_trades:
            frame = history.matured_trades(self.warehouse, [key], horizon_hours=HORIZON_HOURS)
            _check_layout(frame, key, names.RECONCILED_TRADES)
            self.raw_trades[key] = frame
            self.report.trade_days_read.append(key)
        return self.raw_trades[key]

    def runs_of(self, key: str) -> pd.DataFrame:
        if key not in self.raw_runs:
            frame = history.telemetry_runs(self.warehouse, [key])
            _check_layout(frame, key, names.TELEMETRY)
            self.raw_runs[key] = frame
            self.report.run_days_read.append(key)
        return self.raw_runs[key]

    # ---------------------------------------------------------------- day summaries
    def refresh_days(self, kind: str, old: dict, new: dict) -> list[str]:
        """Recompute the day files of the partitions whose fingerprint changed, appeared or
        vanished; returns those keys."""
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        files = ("trades", "pairs") if kind == "trades" else ("runs", "latency")
        for key in changed:
            if key not in new:
                for name in files:
                    self.remove(name, key)
                continue
            if kind == "trades":
                first, second = _trade_segments(self.trades_of(key))
            else:
                first, second = _run_segments(self.runs_of(key))
            self.write(files[0], key, first)
            self.write(files[1], key, second)
        return changed

    def _token(self, name: str) -> str:
        try:
            metadata = pq.read_schema(self.path(name)).metadata or {}
        except (OSError, pa.ArrowException) as exc:
            raise LedgerDamaged(f"{self.path(name)}: {exc}") from exc
        return metadata.get(b"ledger_token", b"").decode()

    def checkpoint(self, kind: str, state: dict, keys: list[str], changed: list[str]) -> dict:
        """Fold the day files before B = the first of the last HOT_DAYS keys into the base files.
        ``state``: the manifest's record ({"B", "token"}); returns the new record."""
        files = ("trades", "pairs") if kind == "trades" else ("runs", "latency")
        target = keys[-HOT_DAYS] if len(keys) > HOT_DAYS else (keys[0] if keys else "")
        old_b = state.get("B")
        valid = (
            old_b is not None
            and all(self.path(name).exists() for name in files)
            and all(self._token(name) == state.get("token") for name in files)
            and not any(k < old_b for k in changed)
        )
        if valid and old_b == target:
            self.report.checkpoint[kind] = "reused"
            return state
        if valid and old_b < target:
            start_from, bases = old_b, [self.read(name) for name in files]
            self.report.checkpoint[kind] = "advanced"
        else:
            start_from, bases = "", [None, None]
            self.report.checkpoint[kind] = "rebuilt"
        folding = [k for k in keys if start_from <= k < target]
        parts = [[self.read(name, k) for k in folding] for name in files]
        if kind == "trades":
            segments = [b.assign(seq="") for b in bases[:1] if b is not None] + [
                f.assign(seq=k) for f, k in zip(parts[0], folding, strict=True) if len(f)
            ]
            first = (
                fold_trade_summaries(pd.concat(segments, ignore_index=True))
                if segments
                else _trade_segments(history.empty_trades())[0]
            )
            second = _fold_sums(
                [b for b in bases[1:] if b is not None] + parts[1], ["agent", "instrument"], PAIR_SUMS
            )
        else:
            first = _fold_sums([b for b in bases[:1] if b is not None] + parts[0], ["agent"], RUN_SUMS)
            second = _fold_sums(
                [b for b in bases[1:] if b is not None] + parts[1], ["agent", "latency"], ["count"]
            )
        token = uuid.uuid4().hex
        for name, frame in zip(files, (first, second), strict=True):
            self._write_tokened(name, frame, token)
        return {"B": target, "token": token}

    def _write_tokened(self, name: str, frame: pd.DataFrame, token: str) -> None:
        """A base file with the token that ties it to the manifest's checkpoint record."""
        frame = frame.reset_index(drop=True)
        text = [c for c in frame.columns if frame[c].dtype == object]
        table = pa.Table.from_pandas(frame.astype(dict.fromkeys(text, "str")), preserve_index=False)
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), b"ledger_token": token.encode()}
        )
        with atomic_path(self.path(name)) as tmp:
            pq.write_table(table, tmp)


def _bounds(
    agents_with_since: Mapping[str, pd.Timestamp], floor: pd.Timestamp | None
) -> dict[str, pd.Timestamp]:
    """Per agent with a revive, its lower bound max(floor, since)."""
    return {a: (s if floor is None else max(s, floor)) for a, s in agents_with_since.items()}


def _segments(
    ledger: _Ledger,
    kind: str,
    keys: list[str],
    base_b: str,
    floor: pd.Timestamp | None,
    bound: dict[str, pd.Timestamp],
) -> tuple[list[pd.DataFrame], list[pd.DataFrame], set]:
    """The summaries that make up the figures of one kind: the base (when there is no window), the
    day files, and the raw day cut by a lower bound; with the agents in the window."""
    files = ("trades", "pairs") if kind == "trades" else ("runs", "latency")
    first_parts: list[pd.DataFrame] = []
    second_parts: list[pd.DataFrame] = []
    universe: set = set()
    if floor is None:
        lo = base_b if base_b else (keys[0] if keys else "")
        if base_b:
            b1, b2 = ledger.read(files[0]), ledger.read(files[1])
            universe |= set(b1["agent"])
            first_parts.append(b1.assign(seq="")[~b1["agent"].isin(bound)])
            second_parts.append(b2[~b2["agent"].isin(bound)])
    else:
        lo = _key_of(floor)
    # agents whose bound falls before the base's end read the day files from their bound on
    bound_keys = {a: _key_of(b) for a, b in bound.items()}
    cut = {a: b for a, b in bound.items() if b != b.normalize()}  # bounds inside a day
    start_key = min([lo, *bound_keys.values()]) if bound_keys else lo
    floor_cut = floor is not None and floor != floor.normalize()
    for key in keys:
        if key < start_key:
            continue
        f1, f2 = ledger.read(files[0], key), ledger.read(files[1], key)
        in_window = key > lo or (key == lo and not floor_cut)
        if in_window:
            universe |= set(f1["agent"])
        # which agents take this day's stored summary as a whole
        whole_default = in_window and key >= lo
        agent_key = f1["agent"].map(bound_keys)
        has_bound = agent_key.notna().to_numpy()
        bound_day = agent_key.fillna("").to_numpy(dtype=object)
        is_cut_day = f1["agent"].isin(list(cut)).to_numpy()
        take = np.where(has_bound, (bound_day < key) | ((bound_day == key) & ~is_cut_day), whole_default)
        first_parts.append(f1[take].assign(seq=key))
        agents_taken = set(f1["agent"][take])
        second_parts.append(f2[f2["agent"].isin(agents_taken)])
    # raw rows of the days a bound cuts: per agent, its rows at or after its bound
    cut_all: dict[str, pd.Timestamp] = dict(cut)
    raw_days = sorted({_key_of(b) for b in cut_all.values()} | ({lo} if floor_cut else set()))
    for key in raw_days:
        if key not in keys:
            continue
        raw = ledger.trades_of(key) if kind == "trades" else ledger.runs_of(key)
        if raw.empty:
            continue
        lower = _lower_bounds(raw, bound, floor)
        # only the agents whose bound cuts this day (the others took the day's summary whole):
        # a revive inside the day, or the window's start inside it for an agent without revive
        cut_here = raw["agent"].isin([a for a, t in cut.items() if _key_of(t) == key])
        if floor_cut and key == lo:
            cut_here |= ~raw["agent"].isin(list(bound))
        in_day = cut_here & (raw["ts"] >= lower)
        if floor_cut and key == lo:  # the window's first day, cut by its start
            universe |= set(raw.loc[raw["ts"] >= floor, "agent"].astype(str))
        part = raw[in_day.to_numpy()]
        if part.empty:
            continue
        if kind == "trades":
            s1, s2 = _trade_segments(part)
        else:
            s1, s2 = _run_segments(part)
        first_parts.append(s1.assign(seq=key))
        second_parts.append(s2)
    return first_parts, second_parts, universe


def _lower_bounds(raw: pd.DataFrame, bound: dict[str, pd.Timestamp], floor: pd.Timestamp | None) -> pd.Series:
    """Per row of ``raw``, its agent's lower bound on ``ts`` (UTC): ``bound[agent]``, else ``floor``
    (NaT when None)."""
    if bound:
        lower = pd.to_datetime(raw["agent"].map(bound).astype(object), utc=True)
    else:
        lower = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]")
    if floor is not None:
        lower = lower.fillna(floor)
    return lower


# ------------------------------------------------------------------------------------------- chain
def _chain_continue(seeds: pd.DataFrame, fresh: pd.DataFrame) -> np.ndarray:
    """Chain mask of ``fresh`` (rows in the full frame's order) continued from ``seeds`` (each
    agent's last kept chain trade, entered before every fresh row of its agent)."""
    if fresh.empty:
        return np.zeros(0, dtype=bool)
    frame = pd.concat([seeds[CHAIN_COLUMNS], fresh[CHAIN_COLUMNS]], ignore_index=True)
    codes, agents = significance._codes(frame["agent"].astype(str))
    mask = significance._chain(
        codes, len(agents), significance._ns(frame["ts"]), significance._ns(frame["exit_ts"]), frame["run_id"]
    )
    return mask[len(seeds) :]


def _chain_frame(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f[CHAIN_COLUMNS] for f in frames if len(f)]
    if not frames:
        return history.empty_trades()[CHAIN_COLUMNS]
    out = pd.concat(frames, ignore_index=True)
    for column in ("agent", "run_id", "instrument", "direction"):
        out[column] = out[column].astype(str)
    return out


def _filter_key(start: pd.Timestamp | None, since: dict[str, pd.Timestamp]) -> dict:
    return {
        "start": None if start is None else int(start.value),
        "since": {a: int(s.value) for a, s in sorted(since.items())},
    }


def _update_chain(
    ledger: _Ledger,
    state: dict,
    keys: list[str],
    changed: list[str],
    floor: pd.Timestamp | None,
    since: dict[str, pd.Timestamp],
    base_b: str,
) -> tuple[pd.DataFrame, dict]:
    """The chain of the filtered trades, from the stored chain and the partitions from the first
    changed day on; writes the chain files and returns (chain, new manifest record)."""
    wanted = _filter_key(floor, since)
    if state and (not ledger.path("chain").exists() or ledger._token("chain") != state.get("token")):
        state = {}  # the base is not the one the manifest describes (a crash between the writes)
    old_filter = state.get("filter")
    first_key = _key_of(floor) if floor is not None else (keys[0] if keys else "")
    dropped: set = set()
    if not state or old_filter is None or old_filter.get("start") != wanted["start"]:
        restart = ""  # everything, from the window's first day
        dropped = None
    else:
        restart = min(changed) if changed else "9999-99-99"
        old_since = old_filter.get("since", {})
        for agent in set(old_since) | set(wanted["since"]):
            if old_since.get(agent) != wanted["since"].get(agent):
                dropped.add(agent)
                new = since.get(agent)
                lower = new if floor is None or new is None else max(new, floor)
                restart = min(restart, _key_of(lower) if lower is not None else "")
    chain_b = state.get("B", "")
    stored_days = sorted(state.get("days", []))
    kept: list[pd.DataFrame] = []
    if dropped is not None and restart > "":
        if chain_b and ledger.path("chain").exists():
            base = ledger.read("chain")
            if restart < chain_b:
                base = base[base["ts"] < _day_start(restart)]
            kept.append(base)
        kept += [ledger.read("chain", k) for k in stored_days if k < restart]
        kept = [k[~k["agent"].isin(dropped)] for k in kept]
    kept_chain = _chain_frame(kept)
    # the raw partitions from the restart on, filtered as the full computation filters them
    reread = [k for k in keys if k >= max(restart, first_key)]
    ledger.report.chain_from = reread[0] if reread else None
    fresh_parts = []
    for key in reread:
        raw = ledger.trades_of(key)
        if raw.empty:
            continue
        lower = _lower_bounds(raw, _bounds(since, floor), floor)
        keep = lower.isna() | (raw["ts"] >= lower)
        fresh_parts.append(raw[keep.to_numpy()])
    fresh = _chain_frame(fresh_parts)
    if len(kept_chain):
        last = kept_chain.groupby("agent", sort=False)["ts"].transform("max") == kept_chain["ts"]
        seeds = kept_chain[last.to_numpy()]
        seeds = seeds[seeds["agent"].isin(set(fresh["agent"]))]
    else:
        seeds = kept_chain
    new_chain = fresh[_chain_continue(seeds, fresh)] if len(fresh) else fresh
    chain = _chain_frame([kept_chain, new_chain])
    # store: base = entries before B (the aggregates' checkpoint day), a file per entry day after it;
    # days as integers (a strftime of 10⁶ times takes a second)
    day_num = portfolio.utc_ns(chain["ts"], name="ts") // _NS_DAY if len(chain) else np.zeros(0, np.int64)
    new_b = base_b
    b_num = _day_start(new_b).value // _NS_DAY if new_b else np.iinfo(np.int64).min
    day_keys = {
        _key_of(pd.Timestamp(int(d) * _NS_DAY, tz="UTC")): int(d)
        for d in np.unique(day_num[day_num >= b_num])
    }
    new_days = sorted(day_keys)
    rewrite = dropped is None or bool(dropped) or new_b != chain_b or restart < chain_b
    rewrite = rewrite or not ledger.path("chain").exists()
    token = state.get("token", "")
    if rewrite:  # the base and every day file from the chain in memory
        token = uuid.uuid4().hex
        ledger._write_tokened("chain", chain[day_num < b_num], token)
        written = new_days
        stale = [k for k in stored_days if k not in new_days]
    else:  # only the days from the restart on changed
        written = [k for k in new_days if k >= restart]
        stale = [k for k in stored_days if k >= restart and k not in new_days]
    for key in stale:
        ledger.remove("chain", key)
    for key in written:
        ledger.write("chain", key, chain[day_num == day_keys[key]])
    return chain, {"filter": wanted, "B": new_b, "days": new_days, "token": token}


# ---------------------------------------------------------------------------------------- entry
def _trials(known_agents: Collection[str], agents: set[str]) -> int:
    """The number of trials of the deflated Sharpe ratio: every agent ever evaluated (at least 1)."""
    return max(len(set(map(str, known_agents)) | agents), 1)


def ledger_agent_stats(
    ledger_dir: Path,
    warehouse: Warehouse,
    *,
    since: Mapping[str, pd.Timestamp] | None = None,
    start: pd.Timestamp | None = None,
    n_trials: int | None = None,
    known_agents: Collection[str] | None = None,
    psr_probability: float = 0.95,
) -> tuple[pd.DataFrame, LedgerReport]:
    """``stats.agent_stats`` of the warehouse's matured 24 h trades and telemetry runs, from the
    ledger in ``ledger_dir`` (created or brought up to date first; module docstring).

    Parameters
    ----------
    ledger_dir : the ledger's directory (created when missing).
    warehouse : the warehouse holding ``reconciled_trades`` and ``telemetry`` partitions.
    since : agent → UTC time of its revive; its trades and runs before it are left out.
    start : the look-back window's start (UTC; None: all history): trades with ``exit_ts`` before it
        and runs with ``ts`` before it are left out, as the ``agent_stats`` asset cuts them.
    n_trials, psr_probability : as ``stats.agent_stats``.
    known_agents : agents evaluated before (killed and retired ones included). When given, the
        deflated Sharpe ratio's number of trials is the count of these together with this history's
        agents (``n_trials`` is then ignored), so a caller need not read the history to know it.

    Returns
    -------
    (table, report): the table of ``stats.agent_stats`` (index ``agent`` sorted, same columns and
    dtypes), and a :class:`LedgerReport`.

    Raises
    ------
    ValueError as ``stats.agent_stats`` (bad trades, ``n_trials`` below the agents, ``prob``
    outside (0, 1)); OSError when the ledger cannot be written.
    """
    report = LedgerReport()
    since_utc = {str(a): _utc(s) for a, s in (since or {}).items()}
    floor_runs = None if start is None else _utc(start)
    floor_trades = None if floor_runs is None else floor_runs - _HORIZON

    def compute() -> pd.DataFrame:
        return _ledger_stats(
            Path(ledger_dir),
            warehouse,
            report,
            since_utc,
            floor_trades,
            floor_runs,
            n_trials,
            known_agents,
            psr_probability,
        )

    try:
        try:
            table = compute()
        except LedgerDamaged as exc:  # rebuilt once from the partitions; a second failure raises
            log.warning("supervisor ledger %s is damaged (%s): rebuilding it", ledger_dir, exc)
            shutil.rmtree(ledger_dir, ignore_errors=True)
            report = LedgerReport(mode=f"rebuilt: {exc}")
            table = compute()
    except LayoutError as exc:
        report.mode = f"full: {exc}"
        trades = history.matured_trades(warehouse, horizon_hours=HORIZON_HOURS)
        runs = history.telemetry_runs(warehouse)
        if floor_runs is not None:
            trades = trades[trades["exit_ts"] >= floor_runs]
            runs = runs[runs["ts"] >= floor_runs]
        if known_agents is not None:
            n_trials = _trials(
                known_agents, set(trades["agent"].astype(str)) | set(runs["agent"].astype(str))
            )
        table = stats.agent_stats(
            trades, runs, since=since_utc, n_trials=n_trials, psr_probability=psr_probability
        )
    return table, report


def _ledger_stats(
    directory: Path,
    warehouse: Warehouse,
    report: LedgerReport,
    since: dict[str, pd.Timestamp],
    floor_trades: pd.Timestamp | None,
    floor_runs: pd.Timestamp | None,
    n_trials: int | None,
    known_agents: Collection[str] | None,
    prob: float,
) -> pd.DataFrame:
    ledger = _Ledger(directory, warehouse, report)
    manifest = ledger.load_manifest()
    sources = {
        "trades": _fingerprints(warehouse, names.RECONCILED_TRADES),
        "runs": _fingerprints(warehouse, names.TELEMETRY),
    }
    old_sources = manifest.get("sources", {})
    changed = {kind: ledger.refresh_days(kind, old_sources.get(kind, {}), sources[kind]) for kind in sources}
    keys = {kind: sorted(sources[kind]) for kind in sources}
    checkpoints = {
        kind: ledger.checkpoint(
            kind, manifest.get("checkpoints", {}).get(kind, {}), keys[kind], changed[kind]
        )
        for kind in sources
    }
    # everything stored is now up to date: record it before the figures (a failure below, e.g. a
    # bad n_trials, must not make the next call redo the day files)
    chain_state = manifest.get("chain", {})

    # trades
    t_first, t_pairs, t_agents = _segments(
        ledger,
        "trades",
        keys["trades"],
        checkpoints["trades"]["B"],
        floor_trades,
        _bounds(since, floor_trades),
    )
    segments = [s for s in t_first if len(s)]
    trade_agg = fold_trade_summaries(pd.concat(segments, ignore_index=True)) if segments else None
    trade_agg = trade_agg[trade_agg["n"] > 0] if trade_agg is not None else None
    pairs = _fold_sums(t_pairs, ["agent", "instrument"], PAIR_SUMS)
    # runs
    r_first, r_lat, r_agents = _segments(
        ledger, "runs", keys["runs"], checkpoints["runs"]["B"], floor_runs, _bounds(since, floor_runs)
    )
    run_agg = _fold_sums(r_first, ["agent"], RUN_SUMS)
    run_agg = run_agg[run_agg["runs"] > 0]
    lat = _fold_sums(r_lat, ["agent", "latency"], ["count"])

    chain, chain_record = _update_chain(
        ledger,
        chain_state,
        keys["trades"],
        changed["trades"],
        floor_trades,
        since,
        checkpoints["trades"]["B"],
    )
    atomic_write_json(
        directory / "manifest.json",
        {"version": LEDGER_VERSION, "sources": sources, "checkpoints": checkpoints, "chain": chain_record},
    )
    agents = pd.Index(np.asarray(sorted(str(a) for a in (t_agents | r_agents)), dtype=object)).astype(str)
    if known_agents is not None:
        n_trials = _trials(known_agents, set(agents))
    if trade_agg is None or trade_agg.empty:
        by_trades = stats.trade_stats(history.empty_trades())
        sig = None
    else:
        by_trades = _trade_table(trade_agg, pairs)
        sig = _significance_table(chain, n_trials, prob)
    by_runs = (
        _run_table(run_agg, lat) if len(run_agg) else stats.run_stats(history.telemetry_runs(warehouse, []))
    )
    report.trade_days_read.sort()
    report.run_days_read.sort()
    report.trade_days_reused = len(set(keys["trades"]) - set(report.trade_days_read))
    report.run_days_reused = len(set(keys["runs"]) - set(report.run_days_read))
    return stats.assemble_table(by_trades, by_runs, sig, agents)
