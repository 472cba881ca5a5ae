"""The portfolio's figures from per-day composable summaries kept on disk, so that a tick reads only
the ``reconciled_trades`` days that changed (docs/rules.md, *Supervisor rules*, *Portfolio and
drawdown*; the same idea as :mod:`meta_pipeline.supervisor.ledger` for ``agent_stats``).

What :func:`ledger_portfolio_figures` returns equals::

    portfolio.portfolio_figures(history.matured_trades(warehouse), ("agent", "instrument", "regime"))

(the fleet summary and the breakdowns by agent, symbol and regime; same keys, index, columns and
dtypes), plus a **daily** equity series (:func:`daily_equity_series`) for the chart.

**Layout assumption** (ledger.py's, checked on every raw read): a ``reconciled_trades`` partition
holds exactly the rows whose ``ts`` falls on its UTC day D. A 24 h trade exits at ``ts + 24 h``, on
day D + 1, so the trades of partition D form one contiguous block of the portfolio's exit-time order
(``exit_ts``, ``ts``, ``run_id``, ``instrument``, ``direction``, then input position), and the blocks
follow each other in key order: the full frame is the partitions concatenated in key order, so even
rows equal on every key keep their relative order inside their own day. A partition off its day
makes the call fall back to the full computation (``report.mode`` says why).

**Day summary** (one row per (``by``, ``key``) with trades that day; ``by`` is ``fleet`` (key ``""``),
``agent``, ``instrument`` or ``regime``, a missing key grouped as ``"unknown"`` as the portfolio does):
``n`` (trades), ``hits`` (#net_bps > 0), ``sum`` (Σ net_bps, bps, added in time order) and the
drawdown summary T, P, m, W of :func:`ledger.segment_drawdown` (running sum, its floored top and
bottom, the deepest fall below the floored peak). Across days the segments of a group fold with
:func:`ledger.compose_drawdown` (module docstring of ledger.py, *Drawdown composition*), so the
maximum drawdown is composed exactly by the definition, never read off the daily series.

Storage: one file ``<ledger_dir>/days.parquet`` holding every day's summary rows (column ``day``,
the partition key) with the source fingerprints (size, mtime) in its metadata, replaced atomically
in one write: the rows and the fingerprints they were computed from can never disagree, so a crash
at any point only makes the next call redo the same days. Its size is days × (1 + agents + symbols
+ regimes) rows (a year of 10 agents on 20 symbols: about 11,000 rows), read whole each call.

Exactness: ``trades`` counts are exact; ``hit_rate`` is the same integer ratio, so exact too. The
sums, means and drawdowns add the same numbers in another grouping (per day, then across days;
the portfolio takes one running sum over all trades, the fleet's plain, a group's compensated), so
they agree to the last few bits, not bit for bit; the tests use rtol 1e-9 with atol 1e-9 bps. No
Dagster here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from meta_pipeline import names
from meta_pipeline.storage import FACTS_KEY, Warehouse, open_for_read, write_parquet
from meta_pipeline.supervisor import history, ledger, portfolio

__all__ = [
    "DAY_COLUMNS",
    "FLEET",
    "LEDGER_PORTFOLIO_VERSION",
    "PortfolioLedgerReport",
    "chart_curve",
    "daily_equity_series",
    "day_summary",
    "fold_day_summaries",
    "ledger_portfolio_figures",
]

LEDGER_PORTFOLIO_VERSION = 1
HORIZON_HOURS = 24
FLEET = "fleet"
GROUP_KEYS = portfolio.BREAKDOWN_KEYS
DD = ["dd_total", "dd_top", "dd_bottom", "dd_within"]
DAY_COLUMNS = ["day", "by", "key", "n", "hits", "sum", *DD]
SERIES_COLUMNS = [
    "exit_day",
    "trades",
    "pnl_bps",
    "cum_pnl_bps",
    "low_bps",
    "high_bps",
    "drawdown_bps",
    "worst_drawdown_bps",
]
_FILE = "days.parquet"


@dataclass
class PortfolioLedgerReport:
    """What one call read: ``days_read`` (partition keys read raw, sorted), ``days_reused`` (stored
    day summaries used without reading their partition), ``days_removed`` (partitions gone since the
    last call), ``mode`` (``ledger``, ``rebuilt: <why>`` when the stored file was unusable, or
    ``full: <why>`` when the layout assumption failed)."""

    days_read: list[str] = field(default_factory=list)
    days_reused: int = 0
    days_removed: list[str] = field(default_factory=list)
    mode: str = "ledger"

    def as_metadata(self) -> dict:
        """Plain JSON-able figures (days listed up to 10)."""
        return {
            "mode": self.mode,
            "days_read": len(self.days_read),
            "days_read_list": ", ".join(self.days_read[:10]),
            "days_reused": self.days_reused,
            "days_removed": len(self.days_removed),
        }


# --------------------------------------------------------------------------------- day summaries
def _empty_days() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "day": pd.Series(dtype=object),
            "by": pd.Series(dtype=object),
            "key": pd.Series(dtype=object),
            "n": pd.Series(dtype=np.int64),
            "hits": pd.Series(dtype=np.int64),
            **{c: pd.Series(dtype=np.float64) for c in ["sum", *DD]},
        }
    )


def day_summary(trades: pd.DataFrame, day: str = "") -> pd.DataFrame:
    """The composable summary of one block of trades (one exit day's, in practice).

    Parameters
    ----------
    trades : the supervisor's trades frame (``history.matured_trades``), any row order; ``regime``
        may be missing (grouped as ``"unknown"``).
    day : the value of the ``day`` column (the partition key).

    Returns
    -------
    DataFrame with DAY_COLUMNS: one ``fleet`` row (key ``""``) and one row per agent, instrument and
    regime with trades; ``n``, ``hits`` int64; ``sum`` and the drawdown summary float64, bps. Empty
    (same columns) without trades.

    Raises
    ------
    ValueError as ``portfolio.portfolio_figures`` (missing column, NaT time, non-finite net_bps).
    """
    if trades.empty:
        return _empty_days()
    trades = trades.reset_index(drop=True)
    portfolio._check_columns(trades, GROUP_KEYS)
    x = portfolio._net_bps(trades)
    order = portfolio.time_order(trades)  # the day's block of the full frame's exit-time order
    xs = x[order]
    parts = []
    for by in (FLEET, *GROUP_KEYS):
        if by == FLEET:
            codes, labels = np.zeros(len(xs), dtype=np.int64), pd.Index([""])
        else:
            codes, labels = portfolio._group_codes(trades[by])
            codes = codes[order]
        k = len(labels)
        n = np.bincount(codes, minlength=k)
        frame = pd.DataFrame(
            {
                "day": day,
                "by": by,
                "key": np.asarray(labels, dtype=object),
                "n": n.astype(np.int64),
                "hits": np.bincount(codes, minlength=k, weights=xs > 0.0).astype(np.int64),
                # in time order within each group, as portfolio._breakdown_sorted adds them
                "sum": np.bincount(codes, weights=xs, minlength=k),
                **ledger.segment_drawdown(xs, codes, k),
            }
        )
        parts.append(frame[n > 0])
    out = pd.concat(parts, ignore_index=True)
    return out.astype({"day": object, "by": object, "key": object})


def fold_day_summaries(days: pd.DataFrame) -> pd.DataFrame:
    """Fold day summaries per (``by``, ``key``) in ``day`` order (module docstring).

    Parameters
    ----------
    days : DataFrame with DAY_COLUMNS; ``day`` sortable (ISO keys), at most one row per (day, by, key).

    Returns
    -------
    DataFrame with ``by``, ``key`` (sorted), ``n``, ``hits`` (int64), ``sum`` and the folded
    drawdown summary (float64, bps); ``dd_within`` is the group's maximum drawdown.
    """
    if days.empty:
        return _empty_days().drop(columns="day")
    frame = days.sort_values(["by", "key", "day"], kind="stable").reset_index(drop=True)
    pair = frame["by"].astype(str) + "\x00" + frame["key"].astype(str)
    # in the sorted frame each group is one contiguous block: codes 0, 1, … in block order
    codes, _ = pd.factorize(pair, sort=False)
    codes = codes.astype(np.int64)
    k = int(codes[-1]) + 1
    starts = np.r_[0, np.flatnonzero(np.diff(codes)) + 1]
    folded = ledger.compose_drawdown(codes, k, *(frame[c].to_numpy(dtype=np.float64) for c in DD))
    return pd.DataFrame(
        {
            "by": frame["by"].to_numpy(dtype=object)[starts],
            "key": frame["key"].to_numpy(dtype=object)[starts],
            # counts as int64 sums: exact at any size (a float weight sum is exact only to 2**53)
            "n": np.add.reduceat(frame["n"].to_numpy(dtype=np.int64), starts),
            "hits": np.add.reduceat(frame["hits"].to_numpy(dtype=np.int64), starts),
            "sum": np.bincount(codes, weights=frame["sum"].to_numpy(dtype=np.float64), minlength=k),
            **folded,
        }
    )


def _figures(days: pd.DataFrame) -> tuple[dict, dict[str, pd.DataFrame]]:
    """``portfolio.portfolio_figures``'s (summary, breakdowns) from the day summaries."""
    folded = fold_day_summaries(days)
    fleet = folded[folded["by"] == FLEET]
    if fleet.empty or int(fleet["n"].iloc[0]) == 0:
        summary = portfolio._summary_sorted(np.zeros(0))
    else:
        n = int(fleet["n"].iloc[0])
        pnl = float(fleet["sum"].iloc[0])
        summary = {
            "trades": n,
            "pnl_bps": pnl,
            "hit_rate": float(int(fleet["hits"].iloc[0]) / n),
            "max_drawdown_bps": float(fleet["dd_within"].iloc[0]),
            "mean_bps": pnl / n,
        }
    breakdowns = {}
    for by in GROUP_KEYS:
        part = folded[folded["by"] == by]
        if part.empty:
            breakdowns[by] = portfolio._empty_breakdown(by)
            continue
        n = part["n"].to_numpy(dtype=np.int64)
        pnl = part["sum"].to_numpy(dtype=np.float64)
        labels = pd.Index(part["key"].to_numpy(dtype=object)).astype(str)  # as portfolio._group_codes
        table = pd.DataFrame(
            {
                "trades": n,
                "pnl_bps": pnl,
                "hit_rate": part["hits"].to_numpy(dtype=np.int64) / n,
                "max_drawdown_bps": part["dd_within"].to_numpy(dtype=np.float64),
                "mean_bps": pnl / n,
            },
            index=pd.Index(labels, name=by),
        )
        breakdowns[by] = table.sort_index()
    return summary, breakdowns


def daily_equity_series(days: pd.DataFrame) -> pd.DataFrame:
    """The fleet's equity at daily resolution, from the fleet's day summaries.

    Parameters
    ----------
    days : day summaries (DAY_COLUMNS), e.g. ``report``-free output of :func:`ledger_portfolio_figures`.

    Returns
    -------
    DataFrame, one row per exit day with trades, in day order, default RangeIndex:

    * ``exit_day`` (datetime64[ns, UTC], midnight): the UTC day the trades exited (signal day + 1);
    * ``trades`` (int64), ``pnl_bps`` (the day's Σ net_bps);
    * ``cum_pnl_bps``: the cumulative PnL at the end of the day;
    * ``low_bps`` / ``high_bps``: the lowest / highest value of the per-trade cumulative curve during
      the day, **the day's opening level (the previous close) included**;
    * ``drawdown_bps`` (≤ 0): end-of-day cumulative minus the running peak, the peak taken over every
      trade so far (intraday highs included, floored at the flat start 0);
    * ``worst_drawdown_bps`` (≤ 0): the deepest point below the running peak during the day, the
      opening level (the previous close's drawdown) included, as for ``low_bps``: the composed
      summary floors its running sums at the segment's start (ledger.py's m_i), so that is what a day
      summary knows.

    How it differs from ``portfolio.equity_curve`` (one point per trade): it has one point per day,
    so the path inside a day is summarized by its low / high and its deepest drawdown; the end-of-day
    ``drawdown_bps`` may miss an intraday trough, but ``min(worst_drawdown_bps)`` is −(the maximum
    drawdown) (up to float rounding), and the composed ``max_drawdown_bps`` of the summary is the
    exact figure. Values add the same numbers as the per-trade curve in another grouping (last bits).
    """
    fleet = days[days["by"] == FLEET].sort_values("day", kind="stable")
    if fleet.empty:
        return pd.DataFrame(
            {
                "exit_day": pd.Series(dtype="datetime64[ns, UTC]"),
                "trades": pd.Series(dtype=np.int64),
                **{c: pd.Series(dtype=np.float64) for c in SERIES_COLUMNS[2:]},
            }
        )
    total, top, bottom, within = (fleet[c].to_numpy(dtype=np.float64) for c in DD)
    end = np.cumsum(total)
    before = end - total  # O_i: the close of the day before
    high = before + top  # P_i ≥ 0: the opening level is in the day's range
    low = before + bottom
    peak_through = np.maximum.accumulate(np.maximum(high, 0.0))
    peak_before = np.maximum(np.r_[0.0, peak_through[:-1]], 0.0)  # H_i
    worst = np.maximum(within, peak_before - before - bottom)  # ledger.py, *Drawdown composition*
    # the partition key is the signal day; its 24 h trades exit the next day
    exit_day = pd.DatetimeIndex(fleet["day"].to_numpy(dtype=str), tz="UTC").as_unit("ns") + pd.Timedelta(
        hours=HORIZON_HOURS
    )
    return pd.DataFrame(
        {
            "exit_day": exit_day,
            "trades": fleet["n"].to_numpy(dtype=np.int64),
            "pnl_bps": total,
            "cum_pnl_bps": end,
            "low_bps": low,
            "high_bps": high,
            "drawdown_bps": (end - peak_through) + 0.0,
            "worst_drawdown_bps": -worst + 0.0,  # + 0.0 turns −0.0 into 0.0
        }
    )


def chart_curve(series: pd.DataFrame) -> pd.DataFrame:
    """The daily series in the shape ``charts.equity_chart_png`` draws (``exit_ts``, ``cum_pnl_bps``,
    ``drawdown_bps``): one point per day at the day's end, its end-of-day cumulative PnL and the
    day's deepest drawdown (so the chart's lowest drawdown point is the maximum drawdown)."""
    return pd.DataFrame(
        {
            "exit_ts": series["exit_day"] + pd.Timedelta(days=1),
            "cum_pnl_bps": series["cum_pnl_bps"],
            "drawdown_bps": series["worst_drawdown_bps"],
        }
    ).reset_index(drop=True)


# ------------------------------------------------------------------------------------- the file
def _load(path: Path) -> tuple[pd.DataFrame | None, dict, str]:
    """The stored day rows and fingerprints, or (None, {}, why) when unusable."""
    if not path.exists():
        return None, {}, "no stored summaries"
    try:
        with open_for_read(path) as source:
            table = pq.read_table(source)
        facts = json.loads((table.schema.metadata or {}).get(FACTS_KEY, b"{}"))
    except (OSError, ValueError) as exc:  # a damaged file is rebuilt, never trusted
        return None, {}, f"unreadable summaries ({type(exc).__name__})"
    if facts.get("version") != LEDGER_PORTFOLIO_VERSION:
        return None, {}, "another version"
    frame = table.to_pandas()
    for column in ("day", "by", "key"):
        frame[column] = frame[column].astype(object)
    return frame[DAY_COLUMNS], facts.get("sources", {}), ""


def _update(directory: Path, warehouse: Warehouse, report: PortfolioLedgerReport) -> pd.DataFrame:
    """Bring ``days.parquet`` up to date with the warehouse; returns every day's summary rows."""
    path = directory / _FILE
    stored, old, why = _load(path)
    if stored is None:
        stored, old = _empty_days(), {}
        if why != "no stored summaries":
            report.mode = f"rebuilt: {why}"
    sources = ledger._fingerprints(warehouse, names.RECONCILED_TRADES)
    changed = sorted(k for k in set(old) | set(sources) if old.get(k) != sources.get(k))
    if not changed:
        report.days_reused = len(sources)
        return stored
    fresh = []
    for key in changed:
        if key not in sources:
            report.days_removed.append(key)
            continue
        trades = history.matured_trades(warehouse, [key], horizon_hours=HORIZON_HOURS)
        ledger._check_layout(trades, key, names.RECONCILED_TRADES)  # LayoutError: the caller falls back
        report.days_read.append(key)
        fresh.append(day_summary(trades, key))
    kept = stored[~stored["day"].isin(changed)]
    days = pd.concat([kept, *[f for f in fresh if len(f)]], ignore_index=True) if fresh else kept
    days = days.sort_values(["day", "by", "key"], kind="stable").reset_index(drop=True)
    days = days.astype({"n": np.int64, "hits": np.int64})
    directory.mkdir(parents=True, exist_ok=True)
    write_parquet(path, days, {"version": LEDGER_PORTFOLIO_VERSION, "sources": sources})
    report.days_reused = len(set(sources) - set(report.days_read))
    return days


def ledger_portfolio_figures(
    ledger_dir: Path, warehouse: Warehouse
) -> tuple[dict, dict[str, pd.DataFrame], pd.DataFrame, PortfolioLedgerReport]:
    """The portfolio's figures of the warehouse's matured 24 h trades, from the summaries in
    ``ledger_dir`` (created or brought up to date first, reading only the partitions whose
    fingerprint changed, appeared or vanished).

    Returns
    -------
    (summary, breakdowns, series, report)
        ``summary`` and ``breakdowns`` (``{"agent", "instrument", "regime": DataFrame}``) as
        ``portfolio.portfolio_figures`` gives them on ``history.matured_trades(warehouse)``;
        ``series``: :func:`daily_equity_series`; ``report``: :class:`PortfolioLedgerReport`.

    Raises
    ------
    ValueError as ``portfolio.portfolio_figures`` on bad trades; OSError when the file cannot be
    written. A partition breaking the layout assumption is not an error: the full computation runs
    (every day read) and ``report.mode`` starts with ``full:``.
    """
    report = PortfolioLedgerReport()
    directory = Path(ledger_dir)
    try:
        days = _update(directory, warehouse, report)
    except ledger.LayoutError as exc:
        report.mode = f"full: {exc}"
        report.days_read = list(warehouse.stored_keys(names.RECONCILED_TRADES))
        report.days_reused = 0
        trades = history.matured_trades(warehouse, horizon_hours=HORIZON_HOURS)
        summary, breakdowns = portfolio.portfolio_figures(trades, GROUP_KEYS)
        return summary, breakdowns, daily_equity_series(_days_by_exit(trades)), report
    summary, breakdowns = _figures(days)
    return summary, breakdowns, daily_equity_series(days), report


def _days_by_exit(trades: pd.DataFrame) -> pd.DataFrame:
    """Day summaries of ``trades`` grouped by their actual exit day (keyed, as the ledger keys them,
    by exit day − 1): the series of the full computation, whatever the partitions' layout."""
    if trades.empty:
        return _empty_days()
    exit_day = trades["exit_ts"].dt.tz_convert("UTC").dt.floor("D") - pd.Timedelta(hours=HORIZON_HOURS)
    parts = [day_summary(part, key.strftime("%Y-%m-%d")) for key, part in trades.groupby(exit_day, sort=True)]
    return pd.concat(parts, ignore_index=True)
