"""Data model shared by every price-bar source: the bars frame, the errors, and :class:`DayFetch`.

A *bars frame* has exactly :data:`BAR_COLUMNS`:

==============  ==========================  =============================================
column          dtype                       meaning
==============  ==========================  =============================================
instrument      str                         storage key, Binance symbol ``BASEUSDT``
open_time       ``datetime64[ns, UTC]``     the 1-minute bar's *open* time
open … close    float64                     prices (quote currency, USD ≈ USDT ≈ USDC)
volume          float64                     base-asset volume
source          str                         ``binance`` / ``coinbase`` / ``files``
==============  ==========================  =============================================

sorted by ``open_time`` with one row per (instrument, open_time). :func:`normalize_bars` is the one
place that enforces this; every source passes its output through it.

:func:`validate_bars` is the one place that decides which bars an exchange or a file sent are
*impossible* or *hold no trade*; every source (and the fetcher, for any other source) drops those on
arrival and counts them by reason, so that their minutes are gaps (docs/rules.md, *Prices*).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from meta_pipeline.symbols import SymbolError, base_of

BAR_COLUMNS = ["instrument", "open_time", "open", "high", "low", "close", "volume", "source"]
PRICE_COLUMNS = ["open", "high", "low", "close", "volume"]
OHLC_COLUMNS = ["open", "high", "low", "close"]
TRADES_COLUMN = "trades"  # optional extra column on arrival only (NaN = the source gives no count)

# Highest price (quote currency, USD ≈ USDT ≈ USDC) accepted for one unit of a base asset. No asset
# trades anywhere near it (BTC's all-time high is ~1.3e5); a larger number is a unit or parsing fault
# (e.g. 1e300), and a bound well below float64's range keeps PnL arithmetic finite.
MAX_PRICE = 1e9

# Why validate_bars drops a bar, in the order the checks are applied (a bar counts under the first).
NOT_FINITE = "not_finite"  # a price is NaN or ±inf
NON_POSITIVE = "non_positive"  # a price is <= 0
TOO_LARGE = "too_large"  # a price is > MAX_PRICE
BAD_VOLUME = "bad_volume"  # volume is NaN, ±inf or negative
LOW_ABOVE_HIGH = "low_above_high"
HIGH_BELOW_OPEN_CLOSE = "high_below_open_close"  # high < max(open, close)
LOW_ABOVE_OPEN_CLOSE = "low_above_open_close"  # low > min(open, close)
OFF_MINUTE = "off_minute"  # open time not on a whole UTC minute (e.g. 16:00:14.8)
DUPLICATE_MINUTE = "duplicate_minute"  # two or more bars for one minute in one response
NO_TRADE = "no_trade"  # volume 0, or a reported trade count of 0: not a price
INVALID_REASONS = (
    NOT_FINITE,
    NON_POSITIVE,
    TOO_LARGE,
    BAD_VOLUME,
    LOW_ABOVE_HIGH,
    HIGH_BELOW_OPEN_CLOSE,
    LOW_ABOVE_OPEN_CLOSE,
    OFF_MINUTE,
    DUPLICATE_MINUTE,
)
REJECT_REASONS = (*INVALID_REASONS, NO_TRADE)
MINUTE = pd.Timedelta(minutes=1)
DAY = pd.Timedelta(days=1)
MINUTE_NS = 60_000_000_000
MINUTES_PER_DAY = 1440


# --------------------------------------------------------------------------------------------- errors
class PriceSourceError(Exception):
    """A request to a price source failed after its retries (network, 5xx, 429, malformed or
    truncated JSON, unreadable file, missing day file …). The fetcher falls back to the next source."""


class SymbolNotListed(PriceSourceError):
    """The source does not list the symbol (Binance -1121 "Invalid symbol", Coinbase 404 NotFound,
    no directory for the symbol in the bars directory)."""


class SourceBanned(PriceSourceError):
    """HTTP 418: the exchange banned this IP. The source must not be called again in this run."""


class TimeBudgetExhausted(PriceSourceError):
    """The run's time budget (:class:`~meta_pipeline.prices.fetcher.PriceFetcher`
    ``time_budget_seconds``) ran out before or during a request: no further request is made. Not a
    fault of the source, so it does not count towards the source's circuit breaker."""


# ------------------------------------------------------------------------------------------- protocol
@runtime_checkable
class PriceSource(Protocol):
    """One client per price source. ``requests_made`` counts every HTTP attempt, retries included."""

    name: str

    @property
    def requests_made(self) -> int:
        """HTTP attempts made so far (0 for a source that makes none)."""
        ...

    def fetch_bars(self, instrument: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Bars with ``start <= open_time < end`` (a bars frame), or raise a :class:`PriceSourceError`."""
        ...


# ------------------------------------------------------------------------------------------ timestamps
def base_asset(instrument: str) -> str:
    """``BTCUSDT`` → ``BTC``; anything that is not an instrument key no source can list."""
    try:
        return base_of(instrument)
    except SymbolError as exc:
        raise SymbolNotListed(f"{instrument!r} is not an instrument key") from exc


def to_utc(ts: pd.Timestamp | dt.datetime | str) -> pd.Timestamp:
    """A tz-aware UTC :class:`pandas.Timestamp` (naive input is taken to be UTC)."""
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def day_bounds(day: dt.date) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``[day 00:00, day+1 00:00)`` in UTC."""
    start = pd.Timestamp(day.year, day.month, day.day, tz="UTC")
    return start, start + DAY


def epoch_to_ns(values: np.ndarray) -> np.ndarray:
    """Epoch timestamps in seconds, milliseconds or microseconds → int64 nanoseconds.

    The unit is detected per value by magnitude (valid for dates between 1973 and 5138):
    < 1e11 seconds, < 1e14 milliseconds, < 1e17 microseconds, else nanoseconds. Binance's newer
    spot dumps write microseconds, the API and the older dumps milliseconds, Coinbase seconds.
    """
    v = np.asarray(values, dtype=np.int64)
    a = np.abs(v)
    return np.where(
        a < 10**11, v * 1_000_000_000, np.where(a < 10**14, v * 1_000_000, np.where(a < 10**17, v * 1_000, v))
    ).astype(np.int64)


def times_ns(open_time: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """A tz-aware datetime column → int64 nanoseconds since the epoch (UTC)."""
    ser = pd.Series(open_time)
    if ser.dt.tz is not None:
        ser = ser.dt.tz_convert(None)
    return ser.astype("datetime64[ns]").to_numpy().view(np.int64)


# ------------------------------------------------------------------------------------------ bar frames
def empty_bars() -> pd.DataFrame:
    """A bars frame with no rows and the right dtypes."""
    none = np.array([], dtype=np.float64)
    return make_bars("", np.array([], dtype=np.int64), none, none, none, none, none, source="")


def make_bars(
    instrument: str,
    open_time_ns: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    *,
    source: str,
    trades: np.ndarray | None = None,
) -> pd.DataFrame:
    """Build a bars frame from columns (not yet sorted, de-duplicated or validated: see
    :func:`validate_bars` and :func:`normalize_bars`).

    ``trades`` (the source's trade count per bar, NaN where unknown) adds an extra ``trades`` float64
    column after :data:`BAR_COLUMNS`, read by :func:`validate_bars` and dropped by it."""
    n = len(open_time_ns)
    df = pd.DataFrame(
        {
            "instrument": pd.Series([instrument] * n, dtype=str),
            "open_time": pd.to_datetime(np.asarray(open_time_ns, dtype=np.int64), unit="ns", utc=True),
            "open": np.asarray(open_, dtype=np.float64),
            "high": np.asarray(high, dtype=np.float64),
            "low": np.asarray(low, dtype=np.float64),
            "close": np.asarray(close, dtype=np.float64),
            "volume": np.asarray(volume, dtype=np.float64),
            "source": pd.Series([source] * n, dtype=str),
        }
    )
    df["open_time"] = df["open_time"].astype("datetime64[ns, UTC]")
    if trades is not None:
        df[TRADES_COLUMN] = np.asarray(trades, dtype=np.float64)
    return df


def validate_bars(
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
    - ``off_minute``: a 1-minute bar opens on a whole UTC minute; 16:00:14.8 is not one (nor is a
      missing open time);
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

    Every step works on NumPy columns (one day of one symbol is checked several times per fetch: by
    each page and by the fetcher), so the cost is a few column passes, not pandas row operations.
    """
    if duplicates not in ("drop", "last"):
        raise ValueError(f"duplicates must be 'drop' or 'last', got {duplicates!r}")
    if df.empty:
        return empty_bars(), {}
    cols = _BarColumns.of(df)
    rows = np.flatnonzero(_in_window(cols.t_ns, start, end))
    if duplicates == "last":
        rows = rows[_last_of_each_key(cols.codes[rows], cols.t_ns[rows])]
    if len(rows) == 0:
        return empty_bars(), {}

    t_ns = cols.t_ns[rows]
    ohlc = cols.ohlc[rows]
    o, h, lo, c = ohlc.T
    vol = cols.volume[rows]
    trades = cols.trades[rows]
    with np.errstate(invalid="ignore"):
        dup = _duplicated_keys(cols.codes[rows], t_ns) if duplicates == "drop" else np.zeros(len(rows), bool)
        conditions = [
            ~np.isfinite(ohlc).all(axis=1),
            (ohlc <= 0).any(axis=1),
            (ohlc > MAX_PRICE).any(axis=1),
            ~np.isfinite(vol) | (vol < 0),
            lo > h,
            h < np.maximum(o, c),
            lo > np.minimum(o, c),
            (t_ns % MINUTE_NS != 0) | (t_ns == _NAT),
            dup,
            (vol == 0) | (trades == 0),
        ]
    reason = np.select(conditions, list(range(len(REJECT_REASONS))), default=-1)
    counts = np.bincount(reason[reason >= 0], minlength=len(REJECT_REASONS))
    rejected = {name: int(n) for name, n in zip(REJECT_REASONS, counts, strict=True) if n}
    good = rows[reason < 0]
    return cols.frame(good[_sorted_order(cols.codes[good], cols.t_ns[good])]), rejected


def describe_counts(counts: dict[str, int]) -> str:
    """``{"off_minute": 3, "no_trade": 2}`` → ``"off_minute 3, no_trade 2"`` (``""`` when empty)."""
    return ", ".join(f"{k} {n}" for k, n in counts.items() if n)


def merge_counts(*counts: dict[str, int]) -> dict[str, int]:
    """Sum ``{reason: n}`` dicts, keeping :data:`REJECT_REASONS` order (unknown reasons last)."""
    total: dict[str, int] = {}
    for c in counts:
        for k, n in c.items():
            total[k] = total.get(k, 0) + int(n)
    order = {r: i for i, r in enumerate(REJECT_REASONS)}
    return {k: total[k] for k in sorted(total, key=lambda k: order.get(k, len(order))) if total[k]}


def normalize_bars(
    df: pd.DataFrame,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Enforce the bars-frame invariants: keep ``start <= open_time < end``, drop rows whose prices are
    not finite or whose open time is missing, de-duplicate ``(instrument, open_time)`` with the LATER
    row winning (a collector writes a forming candle first and the final one later), sort by
    instrument then open_time, reset the index, and coerce the dtypes (NumPy column passes, as
    :func:`validate_bars`)."""
    if df.empty:
        return empty_bars()
    cols = _BarColumns.of(df)
    keep = _in_window(cols.t_ns, start, end) & np.isfinite(cols.ohlc).all(axis=1) & (cols.t_ns != _NAT)
    rows = np.flatnonzero(keep)
    rows = rows[_last_of_each_key(cols.codes[rows], cols.t_ns[rows])]
    if len(rows) == 0:
        return empty_bars()
    return cols.frame(rows)


_NAT = np.iinfo(np.int64).min  # pandas' NaT as int64 nanoseconds


@dataclass
class _BarColumns:
    """A bars frame (any index, extra columns ignored) as NumPy columns: ``codes`` ranks the
    instruments in sorted order (a missing instrument last), ``t_ns`` is UTC epoch nanoseconds."""

    df: pd.DataFrame
    codes: np.ndarray
    t_ns: np.ndarray
    ohlc: np.ndarray
    volume: np.ndarray
    trades: np.ndarray

    @classmethod
    def of(cls, df: pd.DataFrame) -> _BarColumns:
        instrument = df["instrument"]
        first = instrument.iloc[0]
        if isinstance(first, str) and instrument.nunique(dropna=False) == 1:
            codes = np.zeros(len(df), dtype=np.int64)  # one instrument: the common case, no factorize
        else:
            codes, uniques = pd.factorize(instrument, sort=True)
            codes = np.where(codes < 0, len(uniques), codes)  # a missing instrument sorts last
        t_ns = pd.to_datetime(df["open_time"], utc=True).array.as_unit("ns").asi8
        ohlc = np.column_stack([df[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in OHLC_COLUMNS])
        volume = df["volume"].to_numpy(dtype=np.float64, na_value=np.nan)
        if TRADES_COLUMN in df.columns:
            trades = df[TRADES_COLUMN].to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            trades = np.full(len(df), np.nan)
        return cls(df, codes, t_ns, ohlc, volume, trades)

    def frame(self, rows: np.ndarray) -> pd.DataFrame:
        """The rows at positions ``rows`` (in that order) as a bars frame with a fresh index."""
        strings = {
            c: self.df[c].iloc[rows].reset_index(drop=True).astype(str) for c in ("instrument", "source")
        }
        return pd.DataFrame(
            {
                "instrument": strings["instrument"],
                "open_time": pd.Series(pd.to_datetime(self.t_ns[rows], unit="ns", utc=True)),
                "open": self.ohlc[rows, 0],
                "high": self.ohlc[rows, 1],
                "low": self.ohlc[rows, 2],
                "close": self.ohlc[rows, 3],
                "volume": self.volume[rows],
                "source": strings["source"],
            }
        )


def _in_window(t_ns: np.ndarray, start: pd.Timestamp | None, end: pd.Timestamp | None) -> np.ndarray:
    keep = t_ns != _NAT if (start is not None or end is not None) else np.ones(len(t_ns), dtype=bool)
    if start is not None:
        keep &= t_ns >= to_utc(start).as_unit("ns").value
    if end is not None:
        keep &= t_ns < to_utc(end).as_unit("ns").value
    return keep


def _sorted_order(codes: np.ndarray, t_ns: np.ndarray) -> np.ndarray:
    """Positions that sort by (instrument, open time), stable; the identity when already sorted."""
    if len(t_ns) < 2 or (not codes.any() and bool((np.diff(t_ns) > 0).all())):
        return np.arange(len(t_ns))
    return np.lexsort((t_ns, codes))


def _last_of_each_key(codes: np.ndarray, t_ns: np.ndarray) -> np.ndarray:
    """Positions, in (instrument, open time) order, of the last row of each key in the input order."""
    order = _sorted_order(codes, t_ns)
    c, t = codes[order], t_ns[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = (c[1:] != c[:-1]) | (t[1:] != t[:-1])  # stable sort: the last of a run came last
    return order[last]


def _duplicated_keys(codes: np.ndarray, t_ns: np.ndarray) -> np.ndarray:
    """True for every row whose (instrument, open time) appears more than once."""
    order = _sorted_order(codes, t_ns)
    c, t = codes[order], t_ns[order]
    same_as_next = np.zeros(len(order), dtype=bool)
    same_as_next[:-1] = (c[1:] == c[:-1]) & (t[1:] == t[:-1])
    dup_sorted = same_as_next.copy()
    dup_sorted[1:] |= same_as_next[:-1]
    dup = np.empty(len(order), dtype=bool)
    dup[order] = dup_sorted
    return dup


# -------------------------------------------------------------------------------------------- DayFetch
def _now_utc() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


@dataclass(eq=False)
class DayFetch:
    """What the fetcher obtained for one (instrument, UTC day).

    ``bars`` holds only bars with open_time in ``[day 00:00, day+1 00:00)``; for today only up to the
    minute of ``fetched_at`` (that forming bar's *open* is final, its close is not).
    ``gaps`` are half-open ``[start, end)`` open-time ranges: a single missing minute at 12:00 is
    ``(12:00, 12:01)``.

    ``rejected_bars`` counts, by reason (:data:`INVALID_REASONS`), the impossible bars the supplying
    source sent for the day and :func:`validate_bars` dropped; ``no_trade_bars`` counts the bars it
    dropped because they hold no trade. Both kinds of minute are gaps, so a day made of them is not
    ``complete``. Other sources' rejects are named in ``attempts``.
    """

    instrument: str
    day: dt.date
    bars: pd.DataFrame = field(default_factory=empty_bars)
    source: str | None = None
    requests: int = 0
    attempts: list[str] = field(default_factory=list)
    unpriceable: str | None = None
    error: str | None = None
    fetched_at: pd.Timestamp = field(default_factory=_now_utc)
    rejected_bars: dict[str, int] = field(default_factory=dict)
    no_trade_bars: int = 0

    def __post_init__(self) -> None:
        self.fetched_at = to_utc(self.fetched_at)

    # -- the expected part of the day --------------------------------------------------------------
    @property
    def day_start(self) -> pd.Timestamp:
        return day_bounds(self.day)[0]

    @property
    def day_end(self) -> pd.Timestamp:
        return day_bounds(self.day)[1]

    @property
    def expected_end(self) -> pd.Timestamp:
        """Exclusive end of the minutes that have opened by ``fetched_at``."""
        start, end = day_bounds(self.day)
        if self.fetched_at < start:
            return start
        return min(end, self.fetched_at.floor("min") + MINUTE)

    @property
    def expected_bars(self) -> int:
        """Minutes of the day whose bar has opened by ``fetched_at`` (1440 for a past day, fewer for
        today, 0 for a future day)."""
        return int((self.expected_end - self.day_start) // MINUTE)

    @property
    def present_bars(self) -> int:
        """Distinct bars held within the expected part of the day."""
        return int(len(self._present_ns()))

    @property
    def gaps(self) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        """Half-open ``[start, end)`` ranges of missing minutes within the expected part of the day."""
        n = self.expected_bars
        if n == 0:
            return []
        start_ns = self.day_start.value
        expected = start_ns + np.arange(n, dtype=np.int64) * MINUTE_NS
        missing = ~np.isin(expected, self._present_ns())
        if not missing.any():
            return []
        edges = np.diff(np.concatenate(([0], missing.astype(np.int8), [0])))
        starts = np.flatnonzero(edges == 1)
        ends = np.flatnonzero(edges == -1)
        return [
            (pd.Timestamp(int(expected[s]), tz="UTC"), pd.Timestamp(int(start_ns + e * MINUTE_NS), tz="UTC"))
            for s, e in zip(starts, ends, strict=True)
        ]

    @property
    def missing_bars(self) -> int:
        return self.expected_bars - self.present_bars

    @property
    def complete(self) -> bool:
        """Every minute of the day is present and the day had fully ended when it was fetched."""
        return self.fetched_at >= self.day_end and self.present_bars == self.expected_bars

    @property
    def ok(self) -> bool:
        """A source supplied bars (possibly with gaps)."""
        return self.source is not None

    def summary(self) -> dict[str, object]:
        """A flat, JSON-friendly record (for logs, Dagster metadata tables)."""
        return {
            "instrument": self.instrument,
            "day": self.day.isoformat(),
            "source": self.source,
            "requests": self.requests,
            "expected_bars": self.expected_bars,
            "present_bars": self.present_bars,
            "gaps": len(self.gaps),
            "complete": self.complete,
            "unpriceable": self.unpriceable,
            "error": self.error,
            "attempts": "; ".join(self.attempts),
            "fetched_at": self.fetched_at.isoformat(),
            "rejected_bars": sum(self.rejected_bars.values()),
            "rejected_by_reason": describe_counts(self.rejected_bars),
            "no_trade_bars": self.no_trade_bars,
        }

    def _present_ns(self) -> np.ndarray:
        if self.bars.empty:
            return np.array([], dtype=np.int64)
        ot = self.bars["open_time"]
        sel = (ot >= self.day_start) & (ot < self.expected_end)
        return np.unique(times_ns(ot[sel]))
