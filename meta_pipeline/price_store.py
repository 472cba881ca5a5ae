"""The bar cache: which symbol-days are settled, and what the reconciliation may know about them.

``price_bars`` keeps one Parquet file of 1-minute bars per day plus a JSON sidecar with one entry
per instrument (where the bars came from, how many were expected and present, when they were
fetched). The sidecar decides whether a symbol-day must be fetched again:

* *complete* (every minute present, fetched after the day ended) → final, never fetched again;
* the symbol is listed by no source (``unpriceable``) for a day that had ended → final;
* a past day with an exchange gap → fetched again on later runs until it was last fetched
  :data:`GAP_SETTLE` after the day ended (exchanges do not backfill after that), then final;
* today, a failed fetch, or a day fetched before it ended → fetched again.

From the same sidecars :func:`coverage` tells the reconciliation, per instrument, up to which
instant bars are known (so a missing bar after that means "not known yet", not "gap"), and which
instruments no source lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

import pandas as pd

GAP_SETTLE = pd.Timedelta(hours=24)
ASSET = "price_bars"


def day_start(day: date) -> pd.Timestamp:
    return pd.Timestamp(day.isoformat(), tz="UTC")


def is_final(entry: Mapping | None, day: date) -> bool:
    """Whether a stored sidecar entry for ``day`` needs no further fetch."""
    if not entry:
        return False
    fetched_at = pd.Timestamp(entry["fetched_at"])
    day_end = day_start(day) + pd.Timedelta(days=1)
    if fetched_at < day_end:
        return False
    if entry.get("unpriceable"):
        return True
    if entry.get("error") or not entry.get("source"):
        return False
    return bool(entry.get("complete")) or fetched_at >= day_end + GAP_SETTLE


def sidecar_entry(fetch) -> dict:
    """The JSON-friendly record of a :class:`~meta_pipeline.prices.model.DayFetch`."""
    return {
        "source": fetch.source,
        "requests": fetch.requests,
        "expected_bars": fetch.expected_bars,
        "present_bars": fetch.present_bars,
        "gaps": [[a.isoformat(), b.isoformat()] for a, b in fetch.gaps],
        "complete": fetch.complete,
        "unpriceable": fetch.unpriceable,
        "error": fetch.error,
        "attempts": list(fetch.attempts),
        "fetched_at": fetch.fetched_at.isoformat(),
    }


def known_through(entry: Mapping | None, day: date) -> pd.Timestamp:
    """The instant up to which this symbol-day's bars are known: the day's end if it was fetched
    after the day ended, the fetch time if it was fetched during the day, the day's start if it
    was never fetched or the fetch failed."""
    start = day_start(day)
    if not entry or entry.get("error") or not entry.get("source"):
        return start
    return min(pd.Timestamp(entry["fetched_at"]), start + pd.Timedelta(days=1))


@dataclass
class Coverage:
    """What the stored bars say about a window of days, per instrument."""

    known_until: dict[str, pd.Timestamp] = field(default_factory=dict)
    unpriceable: dict[str, str] = field(default_factory=dict)
    # instrument → (instant the missing data starts, why), for rows that can't mature
    blocked: dict[str, tuple[pd.Timestamp, str]] = field(default_factory=dict)


def coverage(
    instruments: Iterable[str], days: list[date], sidecars: Mapping[date, Mapping | None]
) -> Coverage:
    """Fold the sidecars of consecutive ``days`` into per-instrument coverage.

    Bars are known contiguously from the first day until the first day that is not fully known;
    the first failed or missing symbol-day is recorded in ``blocked`` with a reason.
    """
    result = Coverage()
    for instrument in instruments:
        known = day_start(days[0])
        for day in days:
            sidecar = sidecars.get(day)
            entry = (sidecar or {}).get(instrument)
            if entry and entry.get("unpriceable"):
                result.unpriceable[instrument] = f"unknown symbol: {entry['unpriceable']}"
                break
            known = known_through(entry, day)
            if sidecar is None:
                result.blocked[instrument] = (known, f"price_bars for {day} not materialized yet")
                break
            if entry is None:
                result.blocked[instrument] = (known, f"price_bars for {day} has no {instrument} bars yet")
                break
            if entry.get("error"):
                result.blocked[instrument] = (known, f"price source failure on {day}: {entry['error']}")
                break
            if known < day_start(day) + pd.Timedelta(days=1):
                break  # fetched during the day: known up to the fetch time
        result.known_until[instrument] = known
    return result


def window(day: date, reach_days: int) -> list[date]:
    return [day + timedelta(days=offset) for offset in range(reach_days + 1)]
