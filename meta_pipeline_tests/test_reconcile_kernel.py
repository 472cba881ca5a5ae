"""The reconciliation kernel against real Binance 1-minute klines (docs/rules.md, *Pricing and PnL*).

Every expected number here is computed in plain Python from the CSV files (``csv`` module, ``float``
arithmetic, ``datetime``), never by the kernel or by numpy: a minute-by-minute walk over a dict
``open_time → open`` is the oracle for "the open of the first bar whose open time is ≥ t, if it opens
within 5 minutes of t".
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone

import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from meta_pipeline.reconcile import RECONCILED_COLUMNS, reconcile
from meta_pipeline_tests import market_data as md

HORIZONS = [1.0, 4.0, 24.0]
US = 1_000_000
MINUTE_US = 60 * US
GAP_US = 5 * MINUTE_US
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))
PROPERTY_SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def to_us(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


# ---------------------------------------------------------------------------------------------------
# The plain-Python oracle
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sig:
    ts: datetime
    instrument: str
    direction: str


@dataclass(frozen=True)
class Expected:
    status: str  # matured / pending / unpriced
    cause: str | None  # None, "pending", "entry", "exit", "unpriceable"
    reason: str | None
    entry_us: int | None
    entry_price: float | None
    exit_us: int | None
    exit_price: float | None
    gross: float | None
    net: float | None
    cutoff_us: int  # no bar opening after this instant can influence the row


def price_at(opens_ms: dict[int, float], target_us: int, limit_us: int, gap_us: int = GAP_US):
    """("found", bar_open_us, price) | ("wait", None, None) | ("gap", None, None).

    Walks whole minutes from the first one ≥ target; bars here are all minute-aligned.
    """
    minute = -(-target_us // MINUTE_US) * MINUTE_US
    while minute - target_us <= gap_us and minute <= limit_us:
        if (minute // 1000) in opens_ms:
            return "found", minute, opens_ms[minute // 1000]
        minute += MINUTE_US
    if target_us + gap_us > limit_us:
        return "wait", None, None
    return "gap", None, None


def oracle(
    sigs: list[Sig],
    opens: dict[str, dict[int, float]],
    horizons: list[float],
    as_of: datetime,
    *,
    known_until: dict[str, datetime] | None = None,
    unpriceable: dict[str, str] | None = None,
    cost: float = 0.0,
    gap_us: int = GAP_US,
) -> list[Expected]:
    known_until = known_until or {}
    unpriceable = unpriceable or {}
    as_of_us = to_us(as_of)
    rows = []
    for sig in sigs:
        ts_us = to_us(sig.ts)
        for h in horizons:
            exit_target = ts_us + round(h * 3600) * US
            if sig.instrument in unpriceable:
                rows.append(
                    Expected(
                        "unpriced",
                        "unpriceable",
                        unpriceable[sig.instrument],
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        ts_us,
                    )
                )
                continue
            limit = as_of_us
            if sig.instrument in known_until:
                limit = min(limit, to_us(known_until[sig.instrument]))
            bars = opens.get(sig.instrument, {})
            e_kind, e_time, e_price = price_at(bars, ts_us, limit, gap_us)
            x_kind, x_time, x_price = price_at(bars, exit_target, limit, gap_us)
            if e_kind == "gap":
                rows.append(
                    Expected("unpriced", "entry", None, None, None, None, None, None, None, ts_us + gap_us)
                )
            elif e_kind == "wait" or x_kind == "wait":
                rows.append(
                    Expected("pending", "pending", None, e_time, e_price, None, None, None, None, as_of_us)
                )
            elif x_kind == "gap":
                rows.append(
                    Expected(
                        "unpriced",
                        "exit",
                        None,
                        e_time,
                        e_price,
                        None,
                        None,
                        None,
                        None,
                        exit_target + gap_us,
                    )
                )
            else:
                if sig.direction == "LONG":
                    gross = (x_price / e_price - 1.0) * 1e4
                else:
                    gross = (1.0 - x_price / e_price) * 1e4
                rows.append(
                    Expected(
                        "matured", None, None, e_time, e_price, x_time, x_price, gross, gross - cost, x_time
                    )
                )
    return rows


def close(actual: float, expected: float) -> bool:
    return math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-9)


def is_missing(value) -> bool:
    return value is None or pd.isna(value)


def assert_matches(out: pd.DataFrame, expected: list[Expected], horizons: list[float] = HORIZONS) -> None:
    assert len(out) == len(expected)
    for i, (row, exp) in enumerate(zip(out.to_dict("records"), expected, strict=True)):
        where = f"row {i} ({row['ts']}, {row['instrument']}, {row['direction']}, {row['horizon_hours']}h)"
        assert row["horizon_hours"] == horizons[i % len(horizons)], where
        assert row["status"] == exp.status, (where, row["status"], row["reason"], exp)
        if exp.status == "matured":
            assert row["entry_time"] == from_us(exp.entry_us), where
            assert row["exit_time"] == from_us(exp.exit_us), where
            assert row["entry_price"] == exp.entry_price, where
            assert row["exit_price"] == exp.exit_price, where
            assert close(row["realized_pnl_bps"], exp.gross), (where, row["realized_pnl_bps"], exp.gross)
            assert close(row["net_pnl_bps"], exp.net), (where, row["net_pnl_bps"], exp.net)
            assert is_missing(row["reason"]), where
            continue
        # pending / unpriced: no exit price, no PnL, so the row can count in no statistic
        assert is_missing(row["exit_price"]), where
        assert is_missing(row["exit_time"]), where
        assert is_missing(row["realized_pnl_bps"]), where
        assert is_missing(row["net_pnl_bps"]), where
        assert not is_missing(row["reason"]), where
        if exp.cause in ("entry", "unpriceable"):
            assert is_missing(row["entry_price"]), where
        elif not is_missing(row["entry_price"]):  # an entry price shown must be the right one
            assert row["entry_price"] == exp.entry_price, where
            assert row["entry_time"] == from_us(exp.entry_us), where
        if exp.cause == "entry":
            assert "gap" in row["reason"] and "entry" in row["reason"], (where, row["reason"])
        elif exp.cause == "exit":
            assert "gap" in row["reason"] and "exit" in row["reason"], (where, row["reason"])
        elif exp.cause == "unpriceable":
            assert row["reason"] == exp.reason, where


# ---------------------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------------------


def signals_frame(sigs: list[Sig], *, extras: bool = False) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "ts": pd.to_datetime([s.ts for s in sigs], utc=True),
            "agent": [f"agent-{i % 3}" for i in range(len(sigs))],
            "run_id": [f"run-{i:03d}" for i in range(len(sigs))],
            "symbol": [s.instrument.removesuffix("USDT") + "/USD" for s in sigs],
            "instrument": [s.instrument for s in sigs],
            "direction": [s.direction for s in sigs],
        }
    )
    if extras:
        frame["date"] = [s.ts.astimezone(UTC).date().isoformat() for s in sigs]
        frame["regime"] = [["trend", "range", "shock"][i % 3] for i in range(len(sigs))]
        frame["confidence"] = [0.5 + i / 100 for i in range(len(sigs))]
        frame["score_final"] = [-1.25 + i * 0.75 for i in range(len(sigs))]
    return frame


def without(klines: list[md.Kline], start: datetime, minutes: int) -> list[md.Kline]:
    """The klines minus the ``minutes`` bars opening at ``start``, ``start``+1 min, …"""
    gone = {md.datetime_to_ms(start + timedelta(minutes=i)) for i in range(minutes)}
    assert all(any(k.open_time_ms == g for k in klines) for g in gone), "gap must remove real bars"
    return [k for k in klines if k.open_time_ms not in gone]


def until(klines: list[md.Kline], moment: datetime) -> list[md.Kline]:
    return [k for k in klines if k.open_time <= moment]


def run(sigs, klines_by_instr, horizons=HORIZONS, *, as_of, extras=False, **kwargs):
    bars = pd.concat([md.bars_frame(i, k) for i, k in klines_by_instr.items()], ignore_index=True)
    return reconcile(signals_frame(sigs, extras=extras), bars, horizons, as_of=pd.Timestamp(as_of), **kwargs)


def expect(
    sigs,
    klines_by_instr,
    horizons=HORIZONS,
    *,
    as_of,
    known_until=None,
    unpriceable=None,
    round_trip_cost_bps=0.0,
):
    opens = {i: md.open_by_ms(k) for i, k in klines_by_instr.items()}
    return oracle(
        sigs,
        opens,
        list(horizons),
        as_of,
        known_until=known_until,
        unpriceable=unpriceable,
        cost=round_trip_cost_bps,
    )


@pytest.fixture(scope="module")
def btc24() -> list[md.Kline]:
    return md.btc_2024()


@pytest.fixture(scope="module")
def btc25() -> list[md.Kline]:
    return md.btc_2025()


@pytest.fixture(scope="module")
def eth25() -> list[md.Kline]:
    return md.eth_2025()


def open_at(klines: list[md.Kline], moment: datetime) -> float:
    return md.open_by_ms(klines)[md.datetime_to_ms(moment)]


# ---------------------------------------------------------------------------------------------------
# Exact prices and PnL
# ---------------------------------------------------------------------------------------------------


def test_literal_prices_straight_from_the_file(btc24):
    """First line of BTCUSDT-1m-2024-03-01.csv: 00:00 opens 61130.99, 00:01 opens 61196.0, 01:00 ..."""
    sigs = [
        Sig(utc(2024, 3, 1, 0, 0), "BTCUSDT", "LONG"),
        Sig(utc(2024, 3, 1, 0, 0, 0, 1000), "BTCUSDT", "SHORT"),
    ]  # 1 ms past the minute
    out = run(sigs, {"BTCUSDT": btc24}, [1], as_of=utc(2024, 3, 22))
    assert list(out["entry_price"]) == [61130.99, 61196.0]
    assert list(out["entry_time"]) == [utc(2024, 3, 1, 0, 0), utc(2024, 3, 1, 0, 1)]
    exit_0100, exit_0101 = open_at(btc24, utc(2024, 3, 1, 1, 0)), open_at(btc24, utc(2024, 3, 1, 1, 1))
    assert list(out["exit_price"]) == [exit_0100, exit_0101]
    assert close(out["realized_pnl_bps"][0], (exit_0100 / 61130.99 - 1) * 10_000)
    assert close(out["realized_pnl_bps"][1], (1 - exit_0101 / 61196.0) * 10_000)


def test_exact_entry_exit_and_pnl_btc_2024(btc24):
    sigs = [
        Sig(utc(2024, 3, 5, 14, 0), "BTCUSDT", "LONG"),  # on the minute: that bar's open
        Sig(utc(2024, 3, 5, 14, 0, 0, 250_000), "BTCUSDT", "SHORT"),  # fractional: next minute's open
        Sig(datetime(2024, 3, 5, 16, 0, tzinfo=PLUS_TWO), "BTCUSDT", "LONG"),  # = 14:00Z
        Sig(datetime(2024, 3, 5, 16, 0, tzinfo=PLUS_TWO), "BTCUSDT", "SHORT"),
        Sig(utc(2024, 3, 10, 23, 59, 59, 999_000), "BTCUSDT", "SHORT"),  # crosses into the next day's file
        Sig(utc(2024, 3, 12, 8, 30), "BTCUSDT", "SHORT"),
        Sig(utc(2024, 3, 12, 8, 30, 59, 999_999), "BTCUSDT", "LONG"),
    ]
    as_of, cost = utc(2024, 3, 22, 10, 0), 7.5
    out = run(sigs, {"BTCUSDT": btc24}, as_of=as_of, round_trip_cost_bps=cost)
    assert_matches(out, expect(sigs, {"BTCUSDT": btc24}, as_of=as_of, round_trip_cost_bps=cost))
    assert (out["status"] == "matured").all()

    by_h = {h: out[out["horizon_hours"] == h].reset_index(drop=True) for h in HORIZONS}
    for h in HORIZONS:
        rows = by_h[h]
        # on-the-minute signal: entry bar is that minute, exit bar is exactly ts + h
        assert rows["entry_time"][0] == utc(2024, 3, 5, 14, 0)
        assert rows["exit_time"][0] == utc(2024, 3, 5, 14, 0) + timedelta(hours=h)
        assert rows["entry_price"][0] == open_at(btc24, utc(2024, 3, 5, 14, 0))
        # fractional seconds: the next minute, for entry and exit alike
        assert rows["entry_time"][1] == utc(2024, 3, 5, 14, 1)
        assert rows["exit_time"][1] == utc(2024, 3, 5, 14, 1) + timedelta(hours=h)
        assert rows["entry_price"][1] == open_at(btc24, utc(2024, 3, 5, 14, 1))
        # +02:00 is the same instant as the UTC signal: identical numbers
        for col in ["entry_time", "entry_price", "exit_time", "exit_price", "realized_pnl_bps"]:
            assert rows[col][2] == rows[col][0], col
        # and its SHORT twin has exactly the opposite gross, net = gross − cost
        assert rows["realized_pnl_bps"][3] == -rows["realized_pnl_bps"][2]
        assert close(rows["net_pnl_bps"][3], rows["realized_pnl_bps"][3] - cost)
        assert rows["entry_time"][4] == utc(2024, 3, 11, 0, 0)
    # sanity: the data really distinguishes "this minute" from "next minute"
    assert open_at(btc24, utc(2024, 3, 5, 14, 0)) != open_at(btc24, utc(2024, 3, 5, 14, 1))
    assert open_at(btc24, utc(2024, 3, 10, 23, 59)) != open_at(btc24, utc(2024, 3, 11, 0, 0))


def test_exact_prices_two_instruments_2025(btc25, eth25):
    sigs = [
        Sig(utc(2025, 10, 29, 4, 22), "BTCUSDT", "LONG"),  # the very first bar of the data
        Sig(utc(2025, 10, 30, 12, 0), "ETHUSDT", "LONG"),
        Sig(utc(2025, 10, 30, 12, 0, 30, 500_000), "BTCUSDT", "SHORT"),
        Sig(datetime(2025, 10, 31, 5, 17, tzinfo=PLUS_TWO), "ETHUSDT", "SHORT"),
        Sig(utc(2025, 10, 31, 4, 21), "BTCUSDT", "LONG"),  # 24h exit = the very last bar
        Sig(utc(2025, 10, 30, 23, 59, 0, 1), "ETHUSDT", "LONG"),
    ]
    data = {"BTCUSDT": btc25, "ETHUSDT": eth25}
    as_of = utc(2025, 11, 1, 4, 30)
    out = run(sigs, data, as_of=as_of, round_trip_cost_bps=3.0)
    assert_matches(out, expect(sigs, data, as_of=as_of, round_trip_cost_bps=3.0))
    assert (out["status"] == "matured").all()
    assert out["entry_price"][0] == 112731.29
    assert out["exit_price"][14] == 110226.63  # 2025-11-01 04:21 open, last file line
    assert out["exit_time"][14] == utc(2025, 11, 1, 4, 21)
    eth_rows = out[out["instrument"] == "ETHUSDT"]
    assert (eth_rows["entry_price"] < 5_000).all()  # ETH prices, not BTC's


def test_offset_timestamps_give_the_same_rows(btc24):
    moments = [utc(2024, 3, 7, 9, 0), utc(2024, 3, 7, 9, 0, 12, 345_000), utc(2024, 3, 8, 21, 59, 59)]
    sigs = [Sig(m, "BTCUSDT", d) for m, d in zip(moments, ["LONG", "SHORT", "LONG"], strict=True)]
    bars = md.bars_frame("BTCUSDT", btc24)
    as_of = pd.Timestamp("2024-03-20", tz="UTC")
    frame_utc = signals_frame(sigs)
    frame_tz = frame_utc.assign(ts=frame_utc["ts"].dt.tz_convert("+02:00"))
    frame_str = frame_utc.assign(
        ts=pd.to_datetime([m.astimezone(PLUS_TWO).isoformat() for m in moments], format="ISO8601")
    )
    assert str(frame_str["ts"].dt.tz) == "UTC+02:00"
    assert "+02:00" in frame_str["ts"][0].isoformat()
    base = reconcile(frame_utc, bars, HORIZONS, as_of=as_of)
    assert_matches(base, expect(sigs, {"BTCUSDT": btc24}, as_of=as_of.to_pydatetime()))
    for other in (frame_tz, frame_str):
        out = reconcile(other, bars, HORIZONS, as_of=as_of.tz_convert("+02:00"))
        assert list(out["ts"]) == list(base["ts"])  # same instants
        assert_frame_equal(out.drop(columns="ts"), base.drop(columns="ts"))


# ---------------------------------------------------------------------------------------------------
# Row layout
# ---------------------------------------------------------------------------------------------------


def test_one_row_per_signal_and_horizon_in_order_with_passthrough(btc24):
    sigs = [
        Sig(utc(2024, 3, 9, 3, 0), "BTCUSDT", "SHORT"),
        Sig(utc(2024, 3, 2, 17, 45, 1), "BTCUSDT", "LONG"),  # not in time order on purpose
        Sig(utc(2024, 3, 9, 3, 0), "BTCUSDT", "LONG"),
    ]
    signals = signals_frame(sigs, extras=True)
    signals.index = [10, 3, 7]  # a filtered frame: positions, not labels, decide the order
    before = signals.copy()
    out = reconcile(
        signals, md.bars_frame("BTCUSDT", btc24), HORIZONS, as_of=pd.Timestamp("2024-03-21", tz="UTC")
    )
    assert_frame_equal(signals, before)  # input untouched
    assert list(out.columns) == RECONCILED_COLUMNS
    assert len(out) == 9
    assert list(out.index) == list(range(9))
    assert list(out["horizon_hours"]) == HORIZONS * 3
    for col in [
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
    ]:
        expected = [v for v in signals[col].tolist() for _ in HORIZONS]
        assert out[col].tolist() == expected, col
    assert_matches(out, expect(sigs, {"BTCUSDT": btc24}, as_of=utc(2024, 3, 21)))


def test_empty_signals_give_the_documented_columns(btc24):
    bars = md.bars_frame("BTCUSDT", btc24[:100])
    as_of = pd.Timestamp("2024-03-02", tz="UTC")
    signals = signals_frame([Sig(utc(2024, 3, 1, 0, 5), "BTCUSDT", "LONG")], extras=True)
    empty = reconcile(signals.iloc[:0], bars, HORIZONS, as_of=as_of)
    assert list(empty.columns) == RECONCILED_COLUMNS
    assert len(empty) == 0
    one = reconcile(signals, bars, HORIZONS, as_of=as_of)
    for col in [
        "ts",
        "horizon_hours",
        "entry_time",
        "entry_price",
        "exit_time",
        "exit_price",
        "realized_pnl_bps",
        "net_pnl_bps",
    ]:
        assert empty[col].dtype == one[col].dtype, col  # appending an empty batch keeps the schema
    # no bars at all either
    none = reconcile(signals.iloc[:0], bars.iloc[:0], HORIZONS, as_of=as_of)
    assert list(none.columns) == RECONCILED_COLUMNS and len(none) == 0


# ---------------------------------------------------------------------------------------------------
# Pending and maturing
# ---------------------------------------------------------------------------------------------------


def test_future_exit_is_pending_and_matures_later(btc24):
    ts = utc(2024, 3, 20, 12, 0)
    sigs = [Sig(ts, "BTCUSDT", "LONG"), Sig(ts + timedelta(seconds=0.5), "BTCUSDT", "SHORT")]
    early = utc(2024, 3, 20, 14, 0)
    # what a run at 14:00 would really have: bars up to 14:00
    out_early = run(sigs, {"BTCUSDT": until(btc24, early)}, as_of=early, round_trip_cost_bps=2.0)
    assert list(out_early["status"]) == ["matured", "pending", "pending"] * 2
    pending = out_early[out_early["status"] == "pending"]
    assert pending["exit_price"].isna().all() and pending["exit_time"].isna().all()
    assert pending["realized_pnl_bps"].isna().all() and pending["net_pnl_bps"].isna().all()
    # the statistics a consumer computes skip them: only the two 1h rows count
    assert out_early["realized_pnl_bps"].count() == 2
    assert_matches(out_early, expect(sigs, {"BTCUSDT": btc24}, as_of=early, round_trip_cost_bps=2.0))
    # bars known beyond as_of do not change the early run
    assert_frame_equal(run(sigs, {"BTCUSDT": btc24}, as_of=early, round_trip_cost_bps=2.0), out_early)

    late = utc(2024, 3, 21, 13, 0)
    out_late = run(sigs, {"BTCUSDT": until(btc24, late)}, as_of=late, round_trip_cost_bps=2.0)
    assert (out_late["status"] == "matured").all()
    assert_matches(out_late, expect(sigs, {"BTCUSDT": btc24}, as_of=late, round_trip_cost_bps=2.0))
    # the 1h rows did not move; the matured rows equal a fresh run over all the data
    assert_frame_equal(out_late[out_late["horizon_hours"] == 1], out_early[out_early["horizon_hours"] == 1])
    fresh = run(sigs, {"BTCUSDT": btc24}, as_of=utc(2024, 3, 22, 10, 0), round_trip_cost_bps=2.0)
    assert_frame_equal(out_late, fresh)


def test_pending_exactly_around_the_exit_instant(btc24):
    ts = utc(2024, 3, 14, 6, 0)
    sigs = [Sig(ts, "BTCUSDT", "LONG"), Sig(ts + timedelta(milliseconds=500), "BTCUSDT", "LONG")]
    exit_1h = ts + timedelta(hours=1)
    # 1 ms before the exit instant: both 1h rows pending
    out = run(sigs, {"BTCUSDT": btc24}, [1], as_of=exit_1h - timedelta(milliseconds=1))
    assert list(out["status"]) == ["pending", "pending"]
    # 30 s after: the on-the-minute signal's exit bar (07:00) exists, the fractional one's (07:01) not yet
    out = run(sigs, {"BTCUSDT": btc24}, [1], as_of=exit_1h + timedelta(seconds=30))
    assert list(out["status"]) == ["matured", "pending"]
    assert out["exit_price"][0] == open_at(btc24, exit_1h)
    out = run(sigs, {"BTCUSDT": btc24}, [1], as_of=exit_1h + timedelta(minutes=1))
    assert list(out["status"]) == ["matured", "matured"]
    assert out["exit_price"][1] == open_at(btc24, exit_1h + timedelta(minutes=1))


def test_signal_after_as_of_is_pending(btc24):
    sigs = [Sig(utc(2024, 3, 15, 10, 0), "BTCUSDT", "SHORT")]
    out = run(sigs, {"BTCUSDT": btc24}, as_of=utc(2024, 3, 15, 9, 58))
    assert (out["status"] == "pending").all()
    assert out["entry_price"].isna().all() and out["realized_pnl_bps"].isna().all()


# ---------------------------------------------------------------------------------------------------
# Exchange gaps and known_until
# ---------------------------------------------------------------------------------------------------

T_GAP = utc(2024, 3, 13, 2, 0)
AS_OF_LATE = utc(2024, 3, 22, 10, 0)


def test_entry_gap_longer_than_five_minutes_is_unpriced(btc24):
    klines = without(btc24, T_GAP, 6)  # 02:00..02:05 gone; first bar ≥ 02:00 opens 02:06
    sigs = [Sig(T_GAP, "BTCUSDT", "LONG"), Sig(T_GAP - timedelta(minutes=1), "BTCUSDT", "LONG")]
    out = run(sigs, {"BTCUSDT": klines}, as_of=AS_OF_LATE)
    assert list(out["status"]) == ["unpriced"] * 3 + ["matured"] * 3
    for reason in out["reason"][:3]:
        assert "gap" in reason and "entry" in reason
    assert out["entry_price"][:3].isna().all()
    assert out["entry_price"][3] == open_at(btc24, T_GAP - timedelta(minutes=1))  # a bar before the gap
    assert_matches(out, expect(sigs, {"BTCUSDT": klines}, as_of=AS_OF_LATE))


def test_entry_gap_of_exactly_five_minutes_still_prices(btc24):
    klines = without(btc24, T_GAP, 5)  # 02:00..02:04 gone; 02:05 opens exactly 5 min after
    sigs = [Sig(T_GAP, "BTCUSDT", "SHORT")]
    out = run(sigs, {"BTCUSDT": klines}, as_of=AS_OF_LATE)
    assert (out["status"] == "matured").all()
    assert (out["entry_time"] == T_GAP + timedelta(minutes=5)).all()
    assert (out["entry_price"] == open_at(btc24, T_GAP + timedelta(minutes=5))).all()
    assert_matches(out, expect(sigs, {"BTCUSDT": klines}, as_of=AS_OF_LATE))


def test_fractional_signal_gap_is_measured_from_the_signal_not_the_minute(btc24):
    ts = T_GAP + timedelta(milliseconds=500)
    sigs = [Sig(ts, "BTCUSDT", "LONG")]
    # bars 02:01..02:05 gone: next bar 02:06 is 5 min 59.5 s after ts → missing
    out = run(sigs, {"BTCUSDT": without(btc24, T_GAP + timedelta(minutes=1), 5)}, [1], as_of=AS_OF_LATE)
    assert out["status"][0] == "unpriced" and "entry" in out["reason"][0]
    # bars 02:01..02:04 gone: 02:05 is 4 min 59.5 s after → priced with 02:05's open
    out = run(sigs, {"BTCUSDT": without(btc24, T_GAP + timedelta(minutes=1), 4)}, [1], as_of=AS_OF_LATE)
    assert out["status"][0] == "matured"
    assert out["entry_time"][0] == T_GAP + timedelta(minutes=5)
    assert out["entry_price"][0] == open_at(btc24, T_GAP + timedelta(minutes=5))


def test_exit_gap_is_unpriced_only_for_that_horizon(btc24):
    exit_4h = T_GAP + timedelta(hours=4)
    klines = without(btc24, exit_4h, 7)
    sigs = [Sig(T_GAP, "BTCUSDT", "LONG"), Sig(T_GAP, "BTCUSDT", "SHORT")]
    out = run(sigs, {"BTCUSDT": klines}, as_of=AS_OF_LATE)
    assert list(out["status"]) == ["matured", "unpriced", "matured"] * 2
    for reason in out["reason"][[1, 4]]:
        assert "gap" in reason and "exit" in reason and "entry" not in reason
    assert_matches(out, expect(sigs, {"BTCUSDT": klines}, as_of=AS_OF_LATE))
    # the exact-5-minute exit gap prices with the bar 5 min after
    out = run(sigs, {"BTCUSDT": without(btc24, exit_4h, 5)}, as_of=AS_OF_LATE)
    assert (out["status"] == "matured").all()
    assert out["exit_time"][1] == exit_4h + timedelta(minutes=5)
    assert out["exit_price"][1] == open_at(btc24, exit_4h + timedelta(minutes=5))


def test_known_until_before_the_exit_window_is_pending_not_unpriced(btc24):
    exit_4h = T_GAP + timedelta(hours=4)
    sigs = [Sig(T_GAP, "BTCUSDT", "LONG")]
    # the data source has only delivered bars up to 05:30 although as_of is much later
    known = exit_4h - timedelta(minutes=30)
    klines = until(btc24, known)
    out = run(sigs, {"BTCUSDT": klines}, as_of=AS_OF_LATE, known_until={"BTCUSDT": pd.Timestamp(known)})
    assert list(out["status"]) == ["matured", "pending", "pending"]
    assert_matches(out, expect(sigs, {"BTCUSDT": klines}, as_of=AS_OF_LATE, known_until={"BTCUSDT": known}))
    # without known_until the same bars say "definitely missing"
    out = run(sigs, {"BTCUSDT": klines}, as_of=AS_OF_LATE)
    assert list(out["status"]) == ["matured", "unpriced", "unpriced"]

    # a real gap at the exit, but the window [exit, exit+5min] is not fully known yet → pending
    gapped = without(btc24, exit_4h, 10)
    partly = exit_4h + timedelta(minutes=3)
    out = run(sigs, {"BTCUSDT": gapped}, as_of=AS_OF_LATE, known_until={"BTCUSDT": pd.Timestamp(partly)})
    assert list(out["status"]) == ["matured", "pending", "pending"]
    # once the whole window is known and still empty → unpriced
    whole = exit_4h + timedelta(minutes=5)
    out = run(sigs, {"BTCUSDT": gapped}, as_of=AS_OF_LATE, known_until={"BTCUSDT": pd.Timestamp(whole)})
    assert list(out["status"][:2]) == ["matured", "unpriced"]
    assert "exit" in out["reason"][1]
    # known_until later than as_of does not let bars after as_of in
    early = T_GAP + timedelta(hours=2)
    out = run(sigs, {"BTCUSDT": btc24}, as_of=early, known_until={"BTCUSDT": pd.Timestamp(AS_OF_LATE)})
    assert list(out["status"]) == ["matured", "pending", "pending"]


def test_custom_max_gap(btc24):
    klines = without(btc24, T_GAP, 3)  # next bar 3 minutes after
    sigs = [Sig(T_GAP, "BTCUSDT", "LONG")]
    out = run(sigs, {"BTCUSDT": klines}, [1], as_of=AS_OF_LATE, max_gap=pd.Timedelta(minutes=2))
    assert out["status"][0] == "unpriced" and "2 min" in out["reason"][0]
    out = run(sigs, {"BTCUSDT": klines}, [1], as_of=AS_OF_LATE, max_gap=pd.Timedelta(minutes=3))
    assert out["status"][0] == "matured" and out["entry_time"][0] == T_GAP + timedelta(minutes=3)


# ---------------------------------------------------------------------------------------------------
# Instruments no source can price
# ---------------------------------------------------------------------------------------------------


def test_unpriceable_and_unknown_instruments(btc24):
    sigs = [
        Sig(utc(2024, 3, 4, 8, 0), "FOOUSDT", "LONG"),
        Sig(utc(2024, 3, 4, 8, 0), "BTCUSDT", "LONG"),
        Sig(utc(2024, 3, 4, 8, 0), "SOLUSDT", "SHORT"),
    ]  # no bars at all
    unpriceable = {"FOOUSDT": "Invalid symbol (-1121)"}
    out = run(sigs, {"BTCUSDT": btc24}, as_of=AS_OF_LATE, unpriceable=unpriceable)
    assert list(out["status"]) == ["unpriced"] * 3 + ["matured"] * 3 + ["unpriced"] * 3
    assert list(out["reason"][:3]) == ["Invalid symbol (-1121)"] * 3
    assert out.loc[out["instrument"] != "BTCUSDT", "entry_price"].isna().all()
    assert_matches(out, expect(sigs, {"BTCUSDT": btc24}, as_of=AS_OF_LATE, unpriceable=unpriceable))
    # a brand-new signal on an instrument without bars yet: its window is not known → pending
    recent = [Sig(AS_OF_LATE - timedelta(minutes=1), "SOLUSDT", "LONG")]
    out = run(recent, {"BTCUSDT": btc24}, as_of=AS_OF_LATE)
    assert (out["status"] == "pending").all()
    # unpriceable wins even when it is a recent signal
    out = run(
        [Sig(AS_OF_LATE, "FOOUSDT", "LONG")], {"BTCUSDT": btc24}, as_of=AS_OF_LATE, unpriceable=unpriceable
    )
    assert (out["status"] == "unpriced").all() and (out["reason"] == "Invalid symbol (-1121)").all()


# ---------------------------------------------------------------------------------------------------
# No look-ahead
# ---------------------------------------------------------------------------------------------------


def test_bars_after_as_of_are_ignored(btc24):
    as_of = utc(2024, 3, 16, 12, 0, 30)
    sigs = [
        Sig(utc(2024, 3, 16, 11, 0), "BTCUSDT", "LONG"),  # 1h exit 12:00 ≤ as_of
        Sig(utc(2024, 3, 16, 11, 0, 1), "BTCUSDT", "SHORT"),  # 1h exit needs 12:01 > as_of
        Sig(utc(2024, 3, 16, 12, 0, 10), "BTCUSDT", "LONG"),  # entry needs 12:01 > as_of
        Sig(utc(2024, 3, 15, 11, 0), "BTCUSDT", "SHORT"),
    ]  # 24h exit 03-16 11:00 ≤ as_of
    known = until(btc24, as_of)
    base = run(sigs, {"BTCUSDT": known}, as_of=as_of)
    assert_matches(base, expect(sigs, {"BTCUSDT": btc24}, as_of=as_of))
    # fake future bars: every minute for two days at an absurd price, plus off-minute ones
    start = utc(2024, 3, 16, 12, 1)
    fake = [
        md.Kline(md.datetime_to_ms(start + timedelta(minutes=i)), 1e9, 1e9, 1e9, 1e9, 1.0)
        for i in range(2 * 1440)
    ]
    fake += [md.Kline(md.datetime_to_ms(as_of + timedelta(milliseconds=1)), 5.0, 5, 5, 5, 1.0)]
    assert_frame_equal(run(sigs, {"BTCUSDT": known + fake}, as_of=as_of), base)
    # … and the real future bars, too
    assert_frame_equal(run(sigs, {"BTCUSDT": btc24}, as_of=as_of), base)


# ---------------------------------------------------------------------------------------------------
# Properties over the real data
# ---------------------------------------------------------------------------------------------------

PROP_DAY0 = utc(2024, 3, 10)
_PROP_CACHE: dict[str, list[md.Kline]] = {}


def prop_klines() -> list[md.Kline]:
    if "btc" not in _PROP_CACHE:
        _PROP_CACHE["btc"] = md.load_klines("BTCUSDT", date(2024, 3, 9), date(2024, 3, 15))
    return _PROP_CACHE["btc"]


SUBMINUTE_MS = st.sampled_from([0, 0, 0, 1, 500, 30_000, 59_999])


@st.composite
def scenarios(draw, max_signals: int = 6):
    """Random signals over 3 days of real BTC data, an as_of, and exchange gaps near the targets."""
    n = draw(st.integers(1, max_signals))
    sigs = []
    for _ in range(n):
        minute = draw(st.integers(0, 3 * 1440))
        ts = PROP_DAY0 + timedelta(minutes=minute, milliseconds=draw(SUBMINUTE_MS))
        sigs.append(Sig(ts, "BTCUSDT", draw(st.sampled_from(["LONG", "SHORT"]))))
    as_of = PROP_DAY0 + timedelta(minutes=draw(st.integers(0, 5 * 1440 - 1)), milliseconds=draw(SUBMINUTE_MS))
    removed: set[int] = set()
    for _ in range(draw(st.integers(0, 3))):
        anchor = sigs[draw(st.integers(0, n - 1))].ts + timedelta(hours=draw(st.sampled_from([0, 1, 4, 24])))
        start = anchor.replace(second=0, microsecond=0) + timedelta(minutes=draw(st.integers(-6, 2)))
        for i in range(draw(st.integers(1, 9))):
            removed.add(md.datetime_to_ms(start + timedelta(minutes=i)))
    klines = [k for k in prop_klines() if k.open_time_ms not in removed]
    return sigs, as_of, klines


@PROPERTY_SETTINGS
@given(scenarios(), st.sampled_from([0.0, 10.0]))
def test_property_kernel_equals_plain_python_oracle(scenario, cost):
    sigs, as_of, klines = scenario
    out = run(sigs, {"BTCUSDT": klines}, as_of=as_of, round_trip_cost_bps=cost)
    expected = expect(sigs, {"BTCUSDT": klines}, as_of=as_of, round_trip_cost_bps=cost)
    for exp in expected:
        event(f"{exp.status}/{exp.cause}")
    assert_matches(out, expected)


@PROPERTY_SETTINGS
@given(scenarios(), st.data())
def test_property_bars_after_a_rows_window_do_not_matter(scenario, data):
    sigs, as_of, klines = scenario
    out = run(sigs, {"BTCUSDT": klines}, as_of=as_of)
    expected = expect(sigs, {"BTCUSDT": klines}, as_of=as_of)
    cutoffs = sorted({e.cutoff_us for e in expected})
    # change everything strictly after one of the rows' cutoffs (or just after it)
    x_us = data.draw(st.sampled_from(cutoffs)) + data.draw(st.sampled_from([0, 1, 59 * US, 61 * US]))
    factor = data.draw(st.sampled_from([0.5, 1.1, 3.0]))
    drop_every = data.draw(st.sampled_from([0, 2, 7]))
    changed = []
    for i, k in enumerate(klines):
        if k.open_time_ms * 1000 <= x_us:
            changed.append(k)
        elif drop_every and i % drop_every == 0:
            continue  # deleted
        else:
            changed.append(md.Kline(k.open_time_ms, k.open * factor, k.high, k.low, k.close, k.volume))
    # bars inserted between the minutes after x, and in minutes that were missing
    later_ms = x_us // 1000 + 1
    changed += [md.Kline(later_ms + j * 37_000, 1234.5 + j, 1, 1, 1, 1) for j in range(40)]
    mutated = run(sigs, {"BTCUSDT": changed}, as_of=as_of)
    same = [i for i, e in enumerate(expected) if e.cutoff_us <= x_us]
    event(f"{len(same)} of {len(expected)} rows shielded")
    assert same, "the cutoff chosen always shields at least its own row"
    assert_frame_equal(mutated.iloc[same], out.iloc[same])


@PROPERTY_SETTINGS
@given(scenarios())
def test_property_long_and_short_are_exact_opposites(scenario):
    sigs, as_of, klines = scenario
    longs = [Sig(s.ts, s.instrument, "LONG") for s in sigs]
    shorts = [Sig(s.ts, s.instrument, "SHORT") for s in sigs]
    out_long = run(longs, {"BTCUSDT": klines}, as_of=as_of)
    out_short = run(shorts, {"BTCUSDT": klines}, as_of=as_of)
    for a, b in zip(
        out_long["realized_pnl_bps"].tolist(), out_short["realized_pnl_bps"].tolist(), strict=True
    ):
        if math.isnan(a):
            assert math.isnan(b)
        else:
            assert a == -b
    same_cols = ["entry_time", "entry_price", "exit_time", "exit_price", "status", "reason"]
    assert_frame_equal(out_long[same_cols], out_short[same_cols])


@PROPERTY_SETTINGS
@given(scenarios())
def test_property_running_twice_is_identical(scenario):
    sigs, as_of, klines = scenario
    signals = signals_frame(sigs, extras=True)
    bars = md.bars_frame("BTCUSDT", klines)
    signals_before, bars_before = signals.copy(), bars.copy()
    first = reconcile(signals, bars, HORIZONS, as_of=pd.Timestamp(as_of), round_trip_cost_bps=4.0)
    second = reconcile(signals, bars, HORIZONS, as_of=pd.Timestamp(as_of), round_trip_cost_bps=4.0)
    assert_frame_equal(first, second)
    assert_frame_equal(signals, signals_before)
    assert_frame_equal(bars, bars_before)


@st.composite
def two_instrument_scenarios(draw):
    day0 = utc(2025, 10, 29, 5, 0)
    sigs = []
    for _ in range(draw(st.integers(1, 6))):
        ts = day0 + timedelta(minutes=draw(st.integers(0, 2 * 1440)), milliseconds=draw(SUBMINUTE_MS))
        sigs.append(
            Sig(ts, draw(st.sampled_from(["BTCUSDT", "ETHUSDT"])), draw(st.sampled_from(["LONG", "SHORT"])))
        )
    as_of = day0 + timedelta(minutes=draw(st.integers(0, 3 * 1440)))
    return sigs, as_of, draw(st.integers(0, 2**32 - 1))


@PROPERTY_SETTINGS
@given(scenario=two_instrument_scenarios())
def test_property_bar_row_order_does_not_matter(scenario, btc25, eth25):
    sigs, as_of, seed = scenario
    bars = pd.concat([md.bars_frame("BTCUSDT", btc25), md.bars_frame("ETHUSDT", eth25)], ignore_index=True)
    order = list(range(len(bars)))
    random.Random(seed).shuffle(order)
    shuffled = bars.iloc[order]
    signals = signals_frame(sigs)
    base = reconcile(signals, bars, HORIZONS, as_of=pd.Timestamp(as_of))
    assert_frame_equal(reconcile(signals, shuffled, HORIZONS, as_of=pd.Timestamp(as_of)), base)
    assert_matches(base, expect(sigs, {"BTCUSDT": btc25, "ETHUSDT": eth25}, as_of=as_of))


# ---------------------------------------------------------------------------------------------------
# Bugs found
# ---------------------------------------------------------------------------------------------------


def test_signal_without_timestamp_is_never_priced(btc24):
    """A NaT ``ts`` must not become a matured trade.

    Found: ``_price_at`` computes ``bar_time - targets`` in int64; NaT is int64-min, the subtraction
    overflows to a negative number, which passes ``<= gap_ns``, so the row is "matured" at the first
    bar of the data (entry = exit = 2024-03-01 00:00 open, 0 bps).
    """
    signals = signals_frame([Sig(utc(2024, 3, 5, 14, 0), "BTCUSDT", "LONG")] * 2)
    signals.loc[1, "ts"] = pd.NaT
    try:
        out = reconcile(signals, md.bars_frame("BTCUSDT", btc24), HORIZONS, as_of=pd.Timestamp(AS_OF_LATE))
    except (TypeError, ValueError):
        return  # refusing the input is fine too
    assert (out["status"][:3] == "matured").all()
    assert (out["status"][3:] != "matured").all(), out.iloc[3:].to_string()
    assert out["entry_price"][3:].isna().all()
    assert out["realized_pnl_bps"][3:].isna().all()


@pytest.mark.parametrize(
    ("column", "value"), [("direction", "long"), ("direction", "FLAT"), ("instrument", None)]
)
def test_inputs_the_kernel_cannot_price_correctly_are_refused(btc24, column, value):
    signals = signals_frame([Sig(utc(2024, 3, 5, 14, 0), "BTCUSDT", "LONG")] * 2)
    signals[column] = signals[column].astype(object)
    signals.loc[1, column] = value
    with pytest.raises(ValueError, match=column):
        reconcile(signals, md.bars_frame("BTCUSDT", btc24), HORIZONS, as_of=pd.Timestamp(AS_OF_LATE))


def test_an_unpriceable_reason_equal_to_a_built_in_one_does_not_crash(btc24):
    signals = signals_frame([Sig(utc(2024, 3, 5, 14, 0), "FOOUSDT", "LONG")])
    out = reconcile(
        signals,
        md.bars_frame("BTCUSDT", btc24),
        HORIZONS,
        as_of=pd.Timestamp(AS_OF_LATE),
        unpriceable={"FOOUSDT": "exit price not known yet"},
    )
    assert (out["status"] == "unpriced").all() and (out["reason"] == "exit price not known yet").all()
