"""One day of ``reconciled_trades`` from the warehouse: the stored signals of a day against the
stored bars of the days their horizons reach (docs/rules.md, *Pricing and PnL*).

No Dagster here: :func:`reconcile_day` reads the warehouse, runs the kernel
(:func:`meta_pipeline.reconcile.reconcile`) and says why rows cannot mature yet. A day whose signals
were never stored is not an error of the run: it comes back *blocked*, with the reason, so a range
run writes it as such and finishes the other days.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pandas as pd

from meta_pipeline import names, price_store
from meta_pipeline.reconcile import MATURED, PENDING, UNPRICED, reconcile
from meta_pipeline.storage import Warehouse


@dataclass
class DayRows:
    """The reconciled rows of one day, or the reason the day could not be reconciled (then
    ``rows`` is empty and ``blocked`` says what is missing)."""

    day: date
    rows: pd.DataFrame
    blocked: str | None = None


def empty_rows(horizons_hours: tuple[float, ...]) -> pd.DataFrame:
    """No rows, with the column types of real ones (so stored partitions always read back as one table)."""
    text = ("date", "agent", "run_id", "symbol", "instrument", "direction", "regime")
    no_signals = pd.DataFrame(
        {
            "ts": pd.Series(dtype="datetime64[ns, UTC]"),
            **{column: pd.Series(dtype=str) for column in text},
            "confidence": pd.Series(dtype="float64"),
            "score_final": pd.Series(dtype="float64"),
        }
    )
    return reconcile(no_signals, None, horizons_hours, as_of=pd.Timestamp(0, tz="UTC"))


class BarCache:
    """Stored bars and their facts by day, read once per run. A range run walks forward, so days
    before the one asked for are dropped as it goes (memory stays at a few days of bars)."""

    def __init__(self, warehouse: Warehouse):
        self.warehouse = warehouse
        self._bars: dict[date, pd.DataFrame | None] = {}
        self._facts: dict[date, dict | None] = {}

    def days(self, days: list[date]) -> tuple[list[pd.DataFrame], dict[date, dict | None]]:
        for old in [d for d in self._bars if d < days[0]]:
            del self._bars[old], self._facts[old]
        for day in days:
            if day not in self._bars:
                key = day.isoformat()
                self._bars[day] = self.warehouse.read_partition(names.PRICE_BARS, key)
                self._facts[day] = self.warehouse.read_partition_facts(names.PRICE_BARS, key)
        bars = [b for b in (self._bars[d] for d in days) if b is not None and len(b)]
        return bars, {d: self._facts[d] for d in days}


def reconcile_day(
    warehouse: Warehouse,
    day: date,
    *,
    horizons_hours: tuple[float, ...],
    reach_days: int,
    as_of: pd.Timestamp,
    round_trip_cost_bps: float,
    max_gap: pd.Timedelta,
    bar_cache: BarCache,
) -> DayRows:
    """Reconcile the stored signals of ``day`` against the stored bars of ``day`` … ``day + reach_days``.

    Returns the day's rows (one per signal and horizon, :data:`~meta_pipeline.reconcile.RECONCILED_COLUMNS`),
    or a blocked :class:`DayRows` when the day's signals were never materialized. Raises ``ValueError``
    only for signals the kernel refuses (which ingestion never stores).
    """
    signals = warehouse.read_partition(names.SIGNALS, day.isoformat())
    if signals is None:
        return DayRows(day, empty_rows(horizons_hours), blocked=f"signals for {day} are not materialized yet")
    days = price_store.window(day, reach_days)
    bars, facts = bar_cache.days(days)
    cover = price_store.coverage(sorted(signals["instrument"].astype(str).unique()), days, facts)
    rows = reconcile(
        signals,
        pd.concat(bars, ignore_index=True) if bars else None,
        horizons_hours,
        as_of=as_of,
        known_until=cover.known_until,
        unpriceable=cover.unpriceable,
        round_trip_cost_bps=round_trip_cost_bps,
        max_gap=max_gap,
    )
    return DayRows(day, explain_blocked(rows, cover, as_of))


def explain_blocked(rows: pd.DataFrame, cover: price_store.Coverage, as_of: pd.Timestamp) -> pd.DataFrame:
    """A row still pending although its horizon has passed is waiting on missing or failed bars:
    say which. A source failure makes it ``unpriced`` (recomputed, so it heals on a later run)."""
    if not cover.blocked or rows.empty:
        return rows
    due = rows["ts"] + pd.to_timedelta(rows["horizon_hours"], unit="h") <= as_of
    status = rows["status"].astype(str)
    reason = rows["reason"].astype(object)
    for instrument, (_, why) in cover.blocked.items():
        hit = (status == PENDING) & due & (rows["instrument"].astype(str) == instrument)
        reason[hit] = why
        if why.startswith("price source failure"):
            status[hit] = UNPRICED
    rows["status"] = pd.Categorical(status, categories=[MATURED, PENDING, UNPRICED])
    rows["reason"] = pd.Categorical(reason)
    return rows
