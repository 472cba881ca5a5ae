"""The straightforward pandas implementation of ``validate_bars`` and ``normalize_bars`` (row
operations: ``duplicated``, ``drop_duplicates``, ``sort_values``), kept as the oracle that the
column-pass implementation in ``meta_pipeline.prices.model`` must match on any frame."""

from __future__ import annotations

import numpy as np
import pandas as pd

from meta_pipeline.prices.model import (
    BAR_COLUMNS,
    MAX_PRICE,
    MINUTE_NS,
    OHLC_COLUMNS,
    PRICE_COLUMNS,
    REJECT_REASONS,
    TRADES_COLUMN,
    empty_bars,
    times_ns,
    to_utc,
)


def reference_validate_bars(
    df: pd.DataFrame,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    *,
    duplicates: str = "drop",
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop the bars that cannot be used as prices; return ``(bars frame, {reason: bars dropped})``.

    ``df`` has :data:`BAR_COLUMNS` and optionally a ``trades`` column (the source's trade count, NaN
    where it gives none). Rows outside ``[start, end)`` are dropped first and not counted. Then each row
    is checked in this order and counted under the first reason that applies (names in
    :data:`REJECT_REASONS`):

    - ``not_finite``/``non_positive``/``too_large``: open, high, low and close must be finite, > 0 and
      <= :data:`MAX_PRICE` (1e9 USD);
    - ``bad_volume``: volume must be finite and >= 0;
    - ``low_above_high``, ``high_below_open_close`` (high < max(open, close)),
      ``low_above_open_close`` (low > min(open, close)): a bar whose range does not hold its own open
      and close is corrupt;
    - ``off_minute``: a 1-minute bar opens on a whole UTC minute; 16:00:14.8 is not one;
    - ``duplicate_minute`` (``duplicates="drop"``, for API responses): two or more rows for one
      (instrument, open_time) are all dropped and all counted, since the response cannot say which is
      right. With ``duplicates="last"`` (dump files) the LATER row wins silently before any check, as a
      collector writes a forming candle first and the final one later;
    - ``no_trade``: volume 0, or a trade count of 0 where the source reports one. Binance returns a bar
      for an idle minute with open = high = low = close = the last trade; that is not a price at that
      minute, so the minute is absent, as Coinbase's no-trade minutes already are.

    The returned frame has :data:`BAR_COLUMNS` only and passed :func:`normalize_bars`; the dict holds
    the non-zero counts in :data:`REJECT_REASONS` order. Raises ``ValueError`` for an unknown
    ``duplicates`` mode.
    """
    if duplicates not in ("drop", "last"):
        raise ValueError(f"duplicates must be 'drop' or 'last', got {duplicates!r}")
    if df.empty:
        return empty_bars(), {}
    out = df.copy()
    out["open_time"] = pd.to_datetime(out["open_time"], utc=True).astype("datetime64[ns, UTC]")
    keep = np.ones(len(out), dtype=bool)
    if start is not None:
        keep &= (out["open_time"] >= to_utc(start)).to_numpy()
    if end is not None:
        keep &= (out["open_time"] < to_utc(end)).to_numpy()
    out = out.loc[keep]
    if duplicates == "last":
        out = out.drop_duplicates(["instrument", "open_time"], keep="last")
    if out.empty:
        return empty_bars(), {}

    with np.errstate(invalid="ignore"):
        ohlc = out[OHLC_COLUMNS].to_numpy(dtype=np.float64)
        o, h, lo, c = ohlc.T
        vol = out["volume"].to_numpy(dtype=np.float64)
        if TRADES_COLUMN in out.columns:
            trades = out[TRADES_COLUMN].to_numpy(dtype=np.float64)
        else:
            trades = np.full(len(out), np.nan)
        finite = np.isfinite(ohlc).all(axis=1)
        t_ns = times_ns(out["open_time"])
        dup = (
            out.duplicated(["instrument", "open_time"], keep=False).to_numpy()
            if duplicates == "drop"
            else np.zeros(len(out), dtype=bool)
        )
        conditions = [
            ~finite,
            (ohlc <= 0).any(axis=1),
            (ohlc > MAX_PRICE).any(axis=1),
            ~np.isfinite(vol) | (vol < 0),
            lo > h,
            h < np.maximum(o, c),
            lo > np.minimum(o, c),
            t_ns % MINUTE_NS != 0,
            dup,
            (vol == 0) | (trades == 0),
        ]
    reason = np.select(conditions, list(range(len(REJECT_REASONS))), default=-1)
    counts = np.bincount(reason[reason >= 0], minlength=len(REJECT_REASONS))
    rejected = {name: int(n) for name, n in zip(REJECT_REASONS, counts, strict=True) if n}
    return reference_normalize_bars(out.loc[reason < 0]), rejected


def reference_normalize_bars(
    df: pd.DataFrame,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Enforce the bars-frame invariants: keep ``start <= open_time < end``, drop rows whose prices are
    not finite, de-duplicate ``(instrument, open_time)`` with the LATER row winning (a collector writes a
    forming candle first and the final one later), sort by instrument then open_time, reset the index,
    and coerce the dtypes."""
    if df.empty:
        return empty_bars()
    out = df.loc[:, BAR_COLUMNS].copy()
    out["open_time"] = pd.to_datetime(out["open_time"], utc=True).astype("datetime64[ns, UTC]")
    for col in PRICE_COLUMNS:
        out[col] = out[col].astype(np.float64)
    keep = np.isfinite(out[["open", "high", "low", "close"]].to_numpy()).all(axis=1)
    if start is not None:
        keep &= (out["open_time"] >= to_utc(start)).to_numpy()
    if end is not None:
        keep &= (out["open_time"] < to_utc(end)).to_numpy()
    out = out.loc[keep]
    out = out.drop_duplicates(["instrument", "open_time"], keep="last")
    out = out.sort_values(["instrument", "open_time"], kind="stable").reset_index(drop=True)
    out["instrument"] = out["instrument"].astype(str)
    out["source"] = out["source"].astype(str)
    return out
