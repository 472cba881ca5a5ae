"""The bar cache: which symbol-days are settled, how a day is refreshed, and what the reconciliation
may know about the stored bars (docs/rules.md, *Prices*).

``price_bars`` keeps one Parquet file of 1-minute bars per day. Its *sidecar* — one entry per
instrument: where the bars came from, how many were expected and present, how many were dropped as
invalid or as bars without a trade, when they were fetched — is stored in the same Parquet file's
key-value metadata, so the bars and the facts about them are written as one unit and can never
disagree. The sidecar decides whether a symbol-day must be fetched again:

* *complete* (every minute present, fetched after the day ended) → final, never fetched again;
* the symbol is listed by no source (``unpriceable``) for a day that had ended → final;
* a past day with an exchange gap → fetched again on later runs until it was last fetched
  :data:`GAP_SETTLE` after the day ended (exchanges do not backfill after that), then final;
* today, a failed fetch, or a day fetched before it ended → fetched again;
* an entry written by an older version of these rules (:data:`CACHE_VERSION`), or whose stored bars
  do not number what it says → fetched again.

From the same sidecars :func:`coverage` tells the reconciliation, per instrument, up to which
instant bars are known (so a missing bar after that means "not known yet", not "gap"), and which
instruments no source lists.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

import pandas as pd

from meta_pipeline.prices.model import DayFetch, empty_bars

GAP_SETTLE = pd.Timedelta(hours=24)
# Version 2: bars without a trade and invalid bars are no longer prices; days stored before that
# may hold them and are fetched again.
CACHE_VERSION = 2

CACHED, FETCHED, KEPT = "cached", "fetched", "kept (refetch failed)"


def day_start(day: date) -> pd.Timestamp:
    return pd.Timestamp(day.isoformat(), tz="UTC")


def days_reached(horizons_hours: Iterable[float], max_gap: pd.Timedelta) -> int:
    """How many days after a signal's day its exit price can fall in.

    The last signal of day D is just before D+1 00:00; its exit price is the first bar opening at or
    after ts + h, at most ``max_gap`` later, so it lies before D+1 + h + gap.
    """
    reach_hours = max(horizons_hours) + pd.Timedelta(max_gap) / pd.Timedelta(hours=1)
    return 1 + math.floor(reach_hours / 24.0)


def window(day: date, reach_days: int) -> list[date]:
    """``day`` and the ``reach_days`` days after it."""
    return [day + timedelta(days=offset) for offset in range(reach_days + 1)]


def is_final(entry: Mapping | None, day: date, stored_rows: int | None = None) -> bool:
    """Whether a stored sidecar entry for ``day`` needs no further fetch.

    ``stored_rows`` is the number of bars actually stored for the instrument; when given, an entry
    that claims a different number is not trusted (the day is fetched again).
    """
    if not entry or entry.get("cache_version", 1) < CACHE_VERSION:
        return False
    if stored_rows is not None and stored_rows != entry.get("present_bars", 0):
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


def sidecar_entry(fetch: DayFetch) -> dict:
    """The JSON-friendly record of a :class:`~meta_pipeline.prices.model.DayFetch`."""
    return {
        "cache_version": CACHE_VERSION,
        "source": fetch.source,
        "requests": fetch.requests,
        "expected_bars": fetch.expected_bars,
        "present_bars": fetch.present_bars,
        "gaps": [[a.isoformat(), b.isoformat()] for a, b in fetch.gaps],
        "complete": fetch.complete,
        # bars dropped on arrival, by reason (invalid prices, off-minute, duplicates; no_trade = bars
        # without a trade), so the UI can tell a quiet market from a broken feed
        "dropped_bars": {
            **fetch.rejected_bars,
            **({"no_trade": fetch.no_trade_bars} if fetch.no_trade_bars else {}),
        },
        "unpriceable": fetch.unpriceable,
        "error": fetch.error,
        "attempts": list(fetch.attempts),
        "fetched_at": fetch.fetched_at.isoformat(),
    }


@dataclass
class DayRefresh:
    """A day of ``price_bars`` after a refresh: the bars to store, their sidecar, and one report row
    per instrument (``action`` is ``cached``, ``fetched`` or ``kept (refetch failed)``)."""

    bars: pd.DataFrame
    sidecar: dict[str, dict]
    report: list[dict] = field(default_factory=list)


def needs_fetch(
    day: date,
    instruments: Iterable[str],
    stored_bars: pd.DataFrame | None,
    stored_sidecar: Mapping[str, dict] | None,
) -> list[str]:
    """The instruments of ``day`` whose stored bars are not settled (see :func:`is_final`)."""
    counts = stored_bars["instrument"].value_counts() if stored_bars is not None and len(stored_bars) else {}
    sidecar = stored_sidecar or {}
    return [i for i in sorted(set(instruments)) if not is_final(sidecar.get(i), day, int(counts.get(i, 0)))]


def refresh_day(
    day: date,
    instruments: Iterable[str],
    stored_bars: pd.DataFrame | None,
    stored_sidecar: Mapping[str, dict] | None,
    fetch_day: Callable[[str, date], DayFetch] | Mapping[str, DayFetch],
) -> DayRefresh:
    """Bring one day's bars up to date for ``instruments``: settled symbol-days are taken from the
    store, the others from ``fetch_day`` — a function, or the fetches already made for the
    instruments :func:`needs_fetch` named (so a run can fetch many symbol-days at once).

    A failed refetch keeps the bars an earlier run stored (a fault never throws data away), and
    instruments stored earlier but not asked for now are carried over unchanged, so a run that sees
    fewer signals (a missing or truncated input) never shrinks the cache.
    """
    fetched = fetch_day if isinstance(fetch_day, Mapping) else None
    stored_sidecar = dict(stored_sidecar or {})
    stored_bars = stored_bars if stored_bars is not None else empty_bars()
    by_instrument = dict(tuple(stored_bars.groupby("instrument", sort=False))) if len(stored_bars) else {}
    sidecar: dict[str, dict] = {}
    frames: list[pd.DataFrame] = []
    report: list[dict] = []

    def keep(instrument: str) -> None:
        sidecar[instrument] = stored_sidecar[instrument]
        if instrument in by_instrument:
            frames.append(by_instrument[instrument])

    wanted = sorted(set(instruments))
    for instrument in wanted:
        entry = stored_sidecar.get(instrument)
        stored_rows = len(by_instrument.get(instrument, ()))
        if is_final(entry, day, stored_rows):
            keep(instrument)
            report.append(_report(day, instrument, CACHED, entry, requests=0))
            continue
        fetch = fetched[instrument] if fetched is not None else fetch_day(instrument, day)
        consistent = entry is not None and stored_rows == entry.get("present_bars", 0)
        if fetch.error and entry and entry.get("source") and consistent:
            keep(instrument)
            report.append(_report(day, instrument, KEPT, entry, requests=fetch.requests, problem=fetch.error))
            continue
        sidecar[instrument] = new_entry = sidecar_entry(fetch)
        frames.append(fetch.bars)
        report.append(_report(day, instrument, FETCHED, new_entry, requests=fetch.requests))
    for instrument in sorted(set(stored_sidecar) - set(wanted)):
        keep(instrument)
    frames = [f for f in frames if len(f)]
    bars = pd.concat(frames, ignore_index=True) if frames else empty_bars()
    return DayRefresh(bars=bars, sidecar=sidecar, report=report)


def _report(
    day: date, instrument: str, action: str, entry: Mapping, *, requests: int, problem: str = ""
) -> dict:
    return {
        "day": day.isoformat(),
        "instrument": instrument,
        "action": action,
        "source": entry.get("source"),
        "expected": entry.get("expected_bars", 0),
        "present": entry.get("present_bars", 0),
        "gaps": len(entry.get("gaps") or []),
        "dropped": sum((entry.get("dropped_bars") or {}).values()),
        "requests": requests,
        "problem": problem or entry.get("unpriceable") or entry.get("error") or "",
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
