"""The reconciliation kernel: signals × horizons × 1-minute bars → realized PnL rows.

Pure and vectorised (one ``numpy.searchsorted`` per instrument); no Dagster, no I/O. The rules
(docs/rules.md, *Pricing and PnL*):

* price at t = the **open** of the first 1-minute bar whose open time is ≥ t; if that bar opens
  more than ``max_gap`` after t, the price at t is missing (exchange gap). Never a bar that opened
  before t, never a close (a close is formed up to a minute later).
* entry = price at ``ts``; exit = price at ``ts + h``.
* LONG gross bps = (exit/entry − 1)·10⁴, SHORT gross bps = (1 − exit/entry)·10⁴ (a short sized in
  quote currency); ``realized_pnl_bps`` is the gross figure, ``net_pnl_bps`` = gross − round-trip cost.
* A row is ``matured`` once both prices exist. While a price could still appear (its window
  ``[t, t + max_gap]`` reaches past what the bar data is known to cover) the row is ``pending`` and
  counts in nothing. A price that is definitely missing, or an instrument no source can price, makes
  the row ``unpriced`` with a reason.

Bars that open after ``known_until`` (by default ``as_of``) are ignored, so a row's numbers can never
depend on data from after the moment the reconciliation claims to know.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

MATURED, PENDING, UNPRICED = "matured", "pending", "unpriced"
MAX_BAR_GAP = pd.Timedelta(minutes=5)

RECONCILED_COLUMNS = [
    "date",
    "ts",
    "agent",
    "run_id",
    "symbol",
    "instrument",
    "direction",
    "horizon_hours",
    "entry_time",
    "entry_price",
    "exit_time",
    "exit_price",
    "realized_pnl_bps",
    "net_pnl_bps",
    "status",
    "reason",
    "regime",
    "confidence",
    "score_final",
]
_PASSTHROUGH = [
    "date",
    "ts",
    "agent",
    "run_id",
    "symbol",
    "instrument",
    "direction",
    "regime",
    "confidence",
    "score_final",
]
_CATEGORICAL = {"date", "agent", "symbol", "instrument", "direction", "regime"}

_NS_PER_HOUR = 3_600 * 10**9
_NAT = np.iinfo(np.int64).min

# outcome codes of a single price lookup
_FOUND, _WAIT, _GAP = 0, 1, 2


def reconcile(
    signals: pd.DataFrame,
    bars: pd.DataFrame,
    horizons_hours: Sequence[float],
    *,
    as_of: pd.Timestamp,
    known_until: Mapping[str, pd.Timestamp] | None = None,
    unpriceable: Mapping[str, str] | None = None,
    round_trip_cost_bps: float = 0.0,
    max_gap: pd.Timedelta = MAX_BAR_GAP,
) -> pd.DataFrame:
    """One row per (signal, horizon), in signal order then horizon order.

    ``signals`` needs ``ts`` (tz-aware), ``instrument`` and ``direction`` (LONG/SHORT) and may carry the
    other pass-through fields. ``bars`` needs ``instrument``, ``open_time`` (tz-aware) and ``open``.
    ``known_until[instrument]`` is the instant up to which that instrument's bars are known to be
    complete (default ``as_of``); ``unpriceable[instrument]`` marks instruments no source can price.
    """
    horizons = np.asarray(sorted(float(h) for h in horizons_hours), dtype="float64")
    n, k = len(signals), len(horizons)
    as_of_ns = _ns_scalar(as_of)
    gap_ns = int(pd.Timedelta(max_gap).value)
    known_until = known_until or {}
    unpriceable = unpriceable or {}

    _check_signals(signals)
    ts_ns = _ns_array(signals["ts"]) if n else np.empty(0, dtype="int64")
    exit_targets = ts_ns[:, None] + np.round(horizons * _NS_PER_HOUR).astype("int64")[None, :]

    entry_time = np.full(n, _NAT, dtype="int64")
    entry_price = np.full(n, np.nan)
    entry_outcome = np.full(n, _GAP, dtype="int8")
    exit_time = np.full((n, k), _NAT, dtype="int64")
    exit_price = np.full((n, k), np.nan)
    exit_outcome = np.full((n, k), _GAP, dtype="int8")
    gap_minutes = gap_ns / 60e9
    reasons = [
        f"no bar opens within {gap_minutes:g} min after entry time (exchange gap)",
        "exit price not known yet",
        f"no bar opens within {gap_minutes:g} min after exit time (exchange gap)",
    ]
    reasons += sorted(set(unpriceable.values()) - set(reasons))
    unpriceable_code = np.full(n, -1, dtype="int16")

    bar_groups = _bars_by_instrument(bars)
    codes, uniques = pd.factorize(signals["instrument"]) if n else (np.empty(0, "int64"), [])
    for code, instrument in enumerate(uniques):
        rows = np.flatnonzero(codes == code)
        if instrument in unpriceable:
            unpriceable_code[rows] = reasons.index(unpriceable[instrument])
            continue
        limit = min(_ns_scalar(known_until[instrument]), as_of_ns) if instrument in known_until else as_of_ns
        times, opens = bar_groups.get(instrument, (np.empty(0, "int64"), np.empty(0)))
        # bars opening after what we claim to know do not exist for this computation
        usable = int(np.searchsorted(times, limit, side="right"))
        times, opens = times[:usable], opens[:usable]
        entry_time[rows], entry_price[rows], entry_outcome[rows] = _price_at(
            times, opens, ts_ns[rows], gap_ns, limit
        )
        t, p, o = _price_at(times, opens, exit_targets[rows].ravel(), gap_ns, limit)
        exit_time[rows], exit_price[rows], exit_outcome[rows] = (
            t.reshape(-1, k),
            p.reshape(-1, k),
            o.reshape(-1, k),
        )

    # ---- status and reason per (signal, horizon), as small integer codes → categoricals
    entry_o = np.repeat(entry_outcome, k)
    exit_o = exit_outcome.ravel()
    unpriceable_rows = np.repeat(unpriceable_code, k)
    # first match wins, most permanent cause first: (mask, status code, reason code)
    rules = [
        (unpriceable_rows >= 0, 2, unpriceable_rows),
        (entry_o == _GAP, 2, 0),
        ((entry_o == _WAIT) | (exit_o == _WAIT), 1, 1),
        (exit_o == _GAP, 2, 2),
    ]
    status_code = np.zeros(n * k, dtype="int8")  # 0 matured
    reason_code = np.full(n * k, -1, dtype="int16")
    decided = np.zeros(n * k, dtype=bool)
    for mask, code, why in rules:
        hit = mask & ~decided
        status_code[hit] = code
        reason_code[hit] = why[hit] if isinstance(why, np.ndarray) else why
        decided |= hit

    entry_p = np.repeat(entry_price, k)
    matured = status_code == 0
    exit_p = np.where(matured, exit_price.ravel(), np.nan)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = exit_p / entry_p
        is_long = np.repeat(
            signals["direction"].eq("LONG").to_numpy(dtype=bool) if n else np.empty(0, bool), k
        )
        gross = np.where(is_long, ratio - 1.0, 1.0 - ratio) * 1e4
    # bars are validated on arrival; a price that still is not a positive finite number, or a PnL
    # that overflows, is never reported as matured (and never reaches a JSON file as Infinity)
    broken = matured & ~(np.isfinite(gross) & (entry_p > 0) & (exit_p > 0))
    if broken.any():
        reasons.append("price is not a positive finite number")
        status_code[broken], reason_code[broken] = 2, len(reasons) - 1
        matured = status_code == 0
        exit_p, gross = np.where(matured, exit_p, np.nan), np.where(matured, gross, np.nan)

    # repeating low-cardinality text as categoricals is ~5x cheaper than copying strings
    passthrough = signals[[c for c in _PASSTHROUGH if c in signals.columns]]
    passthrough = passthrough.astype({c: "category" for c in passthrough.columns if c in _CATEGORICAL})
    out = passthrough.take(np.repeat(np.arange(n), k)).reset_index(drop=True)
    out["ts"] = _to_timestamps(np.repeat(ts_ns, k))  # UTC, ns, whatever zone the input was in
    # whole hours (the configured horizons always are) are stored as integers, as the app writes them
    whole = bool(np.all(horizons == np.round(horizons)))
    out["horizon_hours"] = np.tile(horizons.astype("int64") if whole else horizons, n)
    out["entry_time"] = _to_timestamps(np.repeat(entry_time, k))
    out["entry_price"] = entry_p
    out["exit_time"] = _to_timestamps(np.where(matured, exit_time.ravel(), _NAT))
    out["exit_price"] = exit_p
    out["realized_pnl_bps"] = gross
    out["net_pnl_bps"] = gross - float(round_trip_cost_bps)
    out["status"] = pd.Categorical.from_codes(status_code, categories=[MATURED, PENDING, UNPRICED])
    out["reason"] = pd.Categorical.from_codes(reason_code, categories=reasons)
    return out[[c for c in RECONCILED_COLUMNS if c in out.columns]]


def _check_signals(signals: pd.DataFrame) -> None:
    """The kernel trusts nothing it cannot price correctly: ingestion guarantees these, other
    callers get an error instead of a plausible-looking wrong row."""
    if not len(signals):
        return
    if signals["ts"].isna().any():
        raise ValueError("signals without ts cannot be reconciled (ingestion quarantines them)")
    if signals["instrument"].isna().any():
        raise ValueError("signals without instrument cannot be reconciled")
    bad = set(signals["direction"].unique()) - {"LONG", "SHORT"}
    if bad:
        raise ValueError(f"direction must be 'LONG' or 'SHORT', got {sorted(map(str, bad))}")


def _price_at(
    times: np.ndarray, opens: np.ndarray, targets: np.ndarray, gap_ns: int, limit_ns: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open of the first bar with open time ≥ target, if it opens within ``gap_ns``.

    Outcome per target: found; wait (the window [target, target+gap] reaches past ``limit_ns``, so a
    bar may still appear); gap (the window is fully known and holds no bar).
    """
    idx = np.searchsorted(times, targets, side="left")
    has_next = idx < len(times)
    safe = np.minimum(idx, max(len(times) - 1, 0))
    bar_time = times[safe] if len(times) else np.full(len(targets), _NAT, dtype="int64")
    found = has_next & (bar_time - targets <= gap_ns)
    outcome = np.where(found, _FOUND, np.where(targets + gap_ns > limit_ns, _WAIT, _GAP)).astype("int8")
    price = np.where(found, opens[safe] if len(opens) else np.nan, np.nan)
    return np.where(found, bar_time, _NAT), price, outcome


def _bars_by_instrument(bars: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if bars is None or bars.empty:
        return {}
    frame = pd.DataFrame(
        {
            "instrument": bars["instrument"].to_numpy(),
            "t": _ns_array(bars["open_time"]),
            "open": bars["open"].to_numpy(dtype="float64"),
        }
    )
    frame = frame.sort_values(["instrument", "t"], kind="stable").drop_duplicates(
        ["instrument", "t"], keep="last"
    )
    groups = {}
    for instrument, group in frame.groupby("instrument", sort=False):
        groups[instrument] = (group["t"].to_numpy(), group["open"].to_numpy())
    return groups


def _ns_array(values: pd.Series) -> np.ndarray:
    series = pd.Series(values)
    if not isinstance(series.dtype, pd.DatetimeTZDtype):
        raise TypeError(f"expected tz-aware timestamps, got {series.dtype}")
    return pd.DatetimeIndex(series).as_unit("ns").asi8


def _ns_scalar(value: pd.Timestamp) -> int:
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        raise TypeError(f"expected a tz-aware timestamp, got {value!r}")
    return int(stamp.as_unit("ns").value)


def _to_timestamps(ns: np.ndarray) -> pd.Series:
    # the int64 minimum is numpy's NaT, so missing times need no mask
    return pd.Series(ns.view("datetime64[ns]")).dt.tz_localize("UTC")
