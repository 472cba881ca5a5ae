"""The confidence fold (docs/rules.md, *Supervisor rules*, *Confidence decay*).

The oracle is a plain Python walk over the rule's text: per agent, per UTC day in order, the trades
matured by the end of the day sorted by (exit_ts, ts, run_id, instrument, direction), s5 summed
oldest to newest with Python floats, the factor, the clamp. The fold must give the same floats.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from meta_pipeline.supervisor.confidence import (
    ConfidenceRule,
    confidence_json,
    fold_confidence,
    recent_columns,
    state_from_json,
    state_to_json,
)

DAY = timedelta(days=1)
T0 = datetime(2024, 3, 1, tzinfo=UTC)
DEFAULT = ConfidenceRule()
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def trade(
    agent: str, exit_at, net: float, run_id: str | None = None, *, instrument="BTCUSDT", direction="LONG"
):
    exit_ts = pd.Timestamp(exit_at)
    exit_ts = exit_ts.tz_localize("UTC") if exit_ts.tzinfo is None else exit_ts.tz_convert("UTC")
    return {
        "agent": agent,
        "run_id": run_id or f"{agent}-{exit_ts.value}",
        "instrument": instrument,
        "ts": exit_ts - pd.Timedelta(hours=24),
        "exit_ts": exit_ts,
        "direction": direction,
        "gross_bps": net,
        "net_bps": net,
        "regime": "trend",
        "confidence": 0.5,
    }


def frame(rows) -> pd.DataFrame:
    columns = ["agent", "run_id", "instrument", "ts", "exit_ts", "direction", "gross_bps", "net_bps"]
    if not rows:
        return pd.DataFrame(
            {c: pd.Series(dtype="datetime64[ns, UTC]" if "ts" in c else object) for c in columns}
        )
    return pd.DataFrame(rows)


def daily(agent: str, values, *, start=T0, hour: int = 10) -> list[dict]:
    """One trade a day exiting at ``hour``:00, day after day."""
    return [trade(agent, start + i * DAY + timedelta(hours=hour), v) for i, v in enumerate(values)]


# --------------------------------------------------------------------------------------- oracle
def oracle(trades: pd.DataFrame, rule: ConfidenceRule = DEFAULT, since: dict | None = None) -> dict:
    """agent → (mult, updated_at, s5, last_change, updates), by a plain walk over the rule."""
    rows = trades.to_dict("records")
    since = since or {}
    out = {}
    for agent in sorted({str(r["agent"]) for r in rows}):
        mine = [r for r in rows if str(r["agent"]) == agent]
        if since.get(agent) is not None:
            mine = [r for r in mine if r["ts"] >= since[agent]]
        mine.sort(key=lambda r: (r["exit_ts"], r["ts"], r["run_id"], r["instrument"], r["direction"]))
        if not mine:
            continue
        mult, last, updates, s5, stamp = rule.start, math.nan, 0, math.nan, None
        for day in sorted({r["exit_ts"].date() for r in mine}):
            matured = [r for r in mine if r["exit_ts"].date() <= day]
            window = matured[-rule.lookback_trades :][-rule.recent_trades :]
            s5 = 0.0
            for r in window:
                s5 += float(r["net_bps"])
            if s5 < rule.deep_loss_below_bps:
                factor = rule.deep_loss_factor
            elif s5 < rule.loss_below_bps:
                factor = rule.loss_factor
            elif s5 > rule.gain_above_bps:
                factor = rule.gain_factor
            else:
                factor = 1.0
            last = mult
            mult = min(max(mult * factor, rule.floor), rule.cap)
            updates += 1
            stamp = max(r["exit_ts"] for r in mine if r["exit_ts"].date() == day)
        out[agent] = (mult, stamp, s5, last, updates)
    return out


def assert_matches_oracle(state: pd.DataFrame, expected: dict) -> None:
    assert sorted(state.index) == sorted(expected)
    for agent, (mult, stamp, s5, last, updates) in expected.items():
        row = state.loc[agent]
        assert row["mult"] == mult, agent  # the same float operations: exact
        assert row["updated_at"] == stamp
        assert row["recent_sum_bps"] == s5
        assert row["last_change"] == last
        assert row["updates"] == updates


# ---------------------------------------------------------------------------------- the rule
def test_the_rules_example():
    rows = [
        trade("a", "2024-03-01T10:00", -30),
        trade("a", "2024-03-01T11:00", -40),
        trade("a", "2024-03-02T10:00", 10),
        trade("a", "2024-03-04T10:00", 100),
    ]
    state = fold_confidence(frame(rows))
    by_day = [
        fold_confidence(frame(rows), through_day=f"2024-03-0{d}").loc["a", "mult"] for d in (1, 2, 3, 4)
    ]
    assert by_day == [0.85, 0.85 * 0.85, 0.85 * 0.85, 0.85 * 0.85]
    assert round(by_day[1], 4) == 0.7225
    row = state.loc["a"]
    assert row["updates"] == 3  # Mar 1, Mar 2, Mar 4: none on Mar 3
    assert row["recent_sum_bps"] == 40.0  # −30 − 40 + 10 + 100
    assert row["last_change"] == 0.85 * 0.85  # Mar 4 left it unchanged
    assert row["updated_at"] == pd.Timestamp("2024-03-04T10:00Z")
    assert state.attrs["folded_through"] == pd.Timestamp("2024-03-04", tz="UTC")


@pytest.mark.parametrize(
    ("s5", "factor"),
    [
        (-50.01, 0.85),
        (-50.0, 0.93),  # exactly −50: not a deep loss
        (-49.99, 0.93),
        (-0.01, 0.93),
        (0.0, 1.0),  # exactly 0: unchanged
        (0.01, 1.0),
        (50.0, 1.0),  # exactly 50: unchanged
        (50.01, 1.03),
    ],
)
def test_thresholds(s5, factor):
    state = fold_confidence(frame([trade("a", "2024-03-01T10:00", s5)]))
    assert state.loc["a", "mult"] == factor
    assert state.loc["a", "recent_sum_bps"] == s5


def test_threshold_reached_as_a_sum_of_several_trades():
    # −20 − 30 = −50 exactly on one day: 0.93, not 0.85
    state = fold_confidence(frame([trade("a", "2024-03-01T10:00", -20), trade("a", "2024-03-01T12:00", -30)]))
    assert state.loc["a", "mult"] == 0.93
    assert state.loc["a", "updates"] == 1


def test_repeated_losses_never_go_below_the_floor():
    rows = daily("a", [-100.0] * 40)
    path = [fold_confidence(frame(rows[: i + 1])).loc["a", "mult"] for i in range(len(rows))]
    assert min(path) == 0.20
    assert path[-1] == 0.20
    assert all(b <= a for a, b in zip(path, path[1:], strict=False))
    assert path.index(0.20) == 9  # 0.85^10 = 0.197 is the first value below the floor


def test_repeated_gains_never_go_above_the_cap():
    rows = daily("a", [100.0] * 40)
    state = fold_confidence(frame(rows))
    assert state.loc["a", "mult"] == 1.20
    path = [fold_confidence(frame(rows[: i + 1])).loc["a", "mult"] for i in range(10)]
    assert max(path) == 1.20
    assert path[6] == 1.20  # 1.03^7 = 1.2299 is clamped


def test_recovery_from_the_floor_multiplies_the_floor():
    rows = daily("a", [-100.0] * 20 + [100.0] * 5)
    state = fold_confidence(frame(rows))
    # after the floor, five days with s5 > 50 (the window still holds losses at first: s5 = 100 − 400 …)
    expected = 0.20
    window = [-100.0] * 5
    for _ in range(5):
        window = window[1:] + [100.0]
        s5 = sum(window)
        expected = min(
            max(expected * (0.85 if s5 < -50 else 0.93 if s5 < 0 else 1.03 if s5 > 50 else 1.0), 0.2), 1.2
        )
    assert state.loc["a", "mult"] == pytest.approx(expected, rel=0, abs=0)


def test_one_update_per_agent_and_day_however_many_trades_matured():
    # ten losing trades on one day: one update (0.85), not ten
    rows = [trade("a", T0 + timedelta(hours=h), -100.0) for h in range(10)]
    state = fold_confidence(frame(rows))
    assert state.loc["a", "mult"] == 0.85
    assert state.loc["a", "updates"] == 1
    assert state.loc["a", "recent_sum_bps"] == -500.0  # the last 5 of them
    assert state.loc["a", "updated_at"] == pd.Timestamp(T0 + timedelta(hours=9))


def test_s5_is_the_last_five_in_exit_time_order():
    # seven trades on one day, in shuffled rows: the two earliest exits (huge losses) are not in s5
    rows = [trade("a", T0 + timedelta(hours=1), -1000.0), trade("a", T0 + timedelta(hours=2), -1000.0)]
    rows += [trade("a", T0 + timedelta(hours=3 + h), 20.0) for h in range(5)]
    shuffled = frame(rows).sample(frac=1.0, random_state=3)
    state = fold_confidence(shuffled)
    assert state.loc["a", "recent_sum_bps"] == 100.0
    assert state.loc["a", "mult"] == 1.03


def test_s5_includes_the_trades_of_earlier_days():
    state = fold_confidence(frame(daily("a", [30.0, 30.0])))
    assert state.loc["a", "recent_sum_bps"] == 60.0
    assert state.loc["a", "mult"] == 1.03  # day 1: s5 = 30 unchanged; day 2: s5 = 60
    assert state.loc["a", "last_change"] == 1.0


def test_lookback_shorter_than_recent_window():
    rule = ConfidenceRule(recent_trades=5, lookback_trades=3)
    assert rule.window == 3
    state = fold_confidence(frame(daily("a", [-100.0, 10.0, 10.0, 10.0])), rule)
    assert state.loc["a", "recent_sum_bps"] == 30.0
    assert recent_columns(rule) == ["recent_1", "recent_2", "recent_3"]


def test_agents_are_independent_and_sorted():
    rows = daily("b", [-100.0, -100.0]) + daily("a", [100.0]) + daily("c", [0.0], start=T0 + 5 * DAY)
    state = fold_confidence(frame(rows))
    assert list(state.index) == ["a", "b", "c"]
    assert state["mult"].tolist() == [1.03, 0.85 * 0.85, 1.0]
    assert state.index.name == "agent"


def test_day_boundaries_are_utc_days():
    # 23:59:59.999999999 and 00:00 the next day are two days; a +02:00 time is read in UTC
    rows = [
        trade("a", pd.Timestamp("2024-03-01T23:59:59.999999999Z"), -100.0),
        trade("a", pd.Timestamp("2024-03-02T01:30:00+02:00"), -100.0),  # 2024-03-01T23:30Z
        trade("a", pd.Timestamp("2024-03-02T00:00:00Z"), -100.0),
    ]
    state = fold_confidence(frame(rows))
    assert state.loc["a", "updates"] == 2
    assert state.loc["a", "mult"] == 0.85 * 0.85


def test_empty_history():
    state = fold_confidence(frame([]))
    assert state.empty
    assert list(state.columns[:6]) == [
        "mult",
        "updated_at",
        "recent_sum_bps",
        "last_change",
        "updates",
        "since",
    ]
    assert state.attrs["folded_through"] is None
    assert confidence_json(state) == {}


def test_bad_inputs_raise():
    good = frame(daily("a", [1.0]))
    with pytest.raises(ValueError, match="net_bps"):
        fold_confidence(good.assign(net_bps=np.nan))
    with pytest.raises(ValueError, match="lacks column"):
        fold_confidence(good.drop(columns=["exit_ts"]))
    with pytest.raises(ValueError, match="missing timestamp"):
        fold_confidence(good.assign(exit_ts=pd.Series([pd.NaT], dtype="datetime64[ns, UTC]")))
    with pytest.raises(ValueError, match="without an agent"):
        fold_confidence(good.assign(agent=None))
    with pytest.raises(ValueError):
        ConfidenceRule(floor=1.5, cap=1.2)
    with pytest.raises(ValueError):
        ConfidenceRule(recent_trades=0)


# ------------------------------------------------------------------------- determinism, order
def test_the_fold_twice_is_identical():
    rows = daily("a", [-60.0, 10.0, 80.0, -5.0]) + daily("b", [100.0, 100.0])
    first, second = fold_confidence(frame(rows)), fold_confidence(frame(rows))
    assert_frame_equal(first, second)
    assert json.dumps(confidence_json(first)) == json.dumps(confidence_json(second))


def test_rows_in_another_order_give_the_same_state():
    rng = np.random.default_rng(7)
    rows = []
    for agent in ("a", "b", "c"):
        for i in range(60):
            exit_at = T0 + timedelta(minutes=int(rng.integers(0, 20 * 1440)))
            rows.append(trade(agent, exit_at, float(rng.normal(0, 60)), run_id=f"r{i:03d}"))
    # ties: same exit and ts, told apart by run_id, and by instrument within one run
    tie = T0 + 3 * DAY + timedelta(hours=5)
    rows += [trade("a", tie, -400.0, run_id="r9"), trade("a", tie, 400.0, run_id="r10")]
    rows += [trade("b", tie, -400.0, run_id="x", instrument="SOLUSDT"), trade("b", tie, 400.0, run_id="x")]
    base = frame(rows)
    expected = fold_confidence(base)
    for seed in range(5):
        assert_frame_equal(fold_confidence(base.sample(frac=1.0, random_state=seed)), expected)
    assert_matches_oracle(expected, oracle(base))


def test_categorical_and_text_columns_give_the_same_state():
    rows = daily("a", [-60.0, 10.0, 80.0]) + daily("b", [100.0, -100.0])
    text = frame(rows)
    cat = text.astype({"agent": "category", "instrument": "category", "direction": "category"})
    assert_frame_equal(fold_confidence(cat), fold_confidence(text))


# --------------------------------------------------------------------------- resume and since
def fold_day_by_day(trades: pd.DataFrame, rule=DEFAULT, since=None, *, via_json=False) -> pd.DataFrame:
    days = sorted(trades["exit_ts"].dt.floor("D").unique())
    state = None
    for day in days:
        part = trades[trades["exit_ts"].dt.floor("D") == day]  # only that day's trades: a real resume
        state = fold_confidence(part, rule, since, initial=state, through_day=day)
        if via_json:
            state = state_from_json(json.loads(json.dumps(state_to_json(state))))
    return state


def test_one_piece_or_day_by_day_gives_the_same_state():
    rng = np.random.default_rng(11)
    rows = [
        trade(f"agent{a}", T0 + timedelta(minutes=int(m)), float(v))
        for a in range(6)
        for m, v in zip(rng.integers(0, 30 * 1440, 80), rng.normal(0, 70, 80), strict=True)
    ]
    trades = frame(rows)
    whole = fold_confidence(trades)
    assert_frame_equal(fold_day_by_day(trades), whole)
    assert_frame_equal(fold_day_by_day(trades, via_json=True), whole)
    assert fold_day_by_day(trades).attrs == whole.attrs


def test_resume_from_a_snapshot_in_two_pieces():
    rows = daily("a", [-60.0, 10.0, 80.0, -5.0, 40.0, 40.0, -200.0]) + daily("b", [100.0] * 7)
    trades = frame(rows)
    snapshot = fold_confidence(trades, through_day=T0 + 2 * DAY)
    assert snapshot.attrs["folded_through"] == pd.Timestamp(T0 + 2 * DAY)
    later = trades[trades["exit_ts"] >= T0 + 3 * DAY]
    assert_frame_equal(fold_confidence(later, initial=snapshot), fold_confidence(trades))
    # the whole history may be passed too: the days already folded are skipped
    assert_frame_equal(fold_confidence(trades, initial=snapshot), fold_confidence(trades))


def test_a_tick_refolds_today_from_yesterdays_snapshot():
    rows = daily("a", [-60.0, -60.0]) + [trade("a", T0 + 2 * DAY + timedelta(hours=1), 30.0)]
    trades = frame(rows)
    snapshot = fold_confidence(trades, through_day=T0 + DAY)
    at_0100 = fold_confidence(trades[trades["exit_ts"] >= T0 + 2 * DAY], initial=snapshot)
    more = frame(rows + [trade("a", T0 + 2 * DAY + timedelta(hours=5), 30.0)])
    at_0500 = fold_confidence(more[more["exit_ts"] >= T0 + 2 * DAY], initial=snapshot)
    assert (
        at_0100.loc["a", "updates"] == at_0500.loc["a", "updates"] == 3
    )  # today's update replaced, not added
    assert_frame_equal(at_0500, fold_confidence(more))


def test_resume_needs_to_know_where_the_snapshot_ends():
    snapshot = fold_confidence(frame(daily("a", [1.0])))
    snapshot.attrs.pop("folded_through")
    with pytest.raises(ValueError, match="folded_through"):
        fold_confidence(frame(daily("a", [1.0, 2.0])), initial=snapshot)
    resumed = fold_confidence(frame(daily("a", [1.0, 2.0])), initial=snapshot, from_day=T0 + DAY)
    assert resumed.loc["a", "updates"] == 2
    with pytest.raises(ValueError, match="before the days"):
        fold_confidence(frame(daily("a", [1.0, 2.0])), initial=resumed, through_day=T0)
    assert_frame_equal(fold_confidence(frame([]), initial=resumed, through_day=T0 + DAY), resumed)
    with pytest.raises(ValueError, match="another rule"):
        fold_confidence(
            frame(daily("a", [1.0])), ConfidenceRule(floor=0.3), initial=fold_confidence(frame([]))
        )
    with pytest.raises(ValueError, match="lacks column"):
        fold_confidence(
            frame([]), ConfidenceRule(recent_trades=6), initial=resumed.drop(columns=["recent_5"])
        )


def test_since_restarts_the_agents_confidence():
    revive = pd.Timestamp(T0 + 10 * DAY)
    rows = daily("a", [-100.0] * 10 + [60.0, 60.0]) + daily("b", [-100.0] * 12)
    trades = frame(rows)
    state = fold_confidence(trades, since={"a": revive, "b": None})
    after = trades[(trades["agent"] == "a") & (trades["ts"] >= revive)]
    assert after["net_bps"].tolist() == [60.0]  # ts of the last trade only (exit = ts + 24 h)
    assert state.loc["a", "mult"] == 1.03  # restarted at 1.0, s5 over the new trades only = 60
    assert state.loc["a", "updates"] == 1
    assert state.loc["a", "since"] == revive
    assert state.loc["b", "mult"] == 0.20  # not revived
    assert pd.isna(state.loc["b", "since"])
    assert_matches_oracle(state, oracle(trades, since={"a": revive}))


def test_a_revive_after_a_snapshot_restarts_the_agent_on_resume():
    revive = pd.Timestamp(T0 + 3 * DAY + timedelta(hours=12))
    trades = frame(daily("a", [-100.0] * 8) + daily("b", [-100.0] * 8))
    snapshot = fold_confidence(trades, through_day=T0 + 4 * DAY)
    resumed = fold_confidence(trades, since={"a": revive}, initial=snapshot)
    assert_frame_equal(resumed, fold_confidence(trades, since={"a": revive}))
    assert resumed.loc["a", "updates"] == 3  # days 6, 7, 8 (signals from day 4 12:00 on)


@st.composite
def histories(draw):
    n = draw(st.integers(0, 60))
    agents = draw(st.lists(st.sampled_from(["a", "b", "é", "Z"]), min_size=n, max_size=n))
    # few distinct minutes and values: many ties, sums exactly at the thresholds
    minutes = draw(st.lists(st.integers(0, 6 * 1440), min_size=n, max_size=n))
    values = draw(
        st.lists(
            st.sampled_from([-60.0, -50.0, -25.0, -10.0, 0.0, 10.0, 25.0, 50.0, 0.1]), min_size=n, max_size=n
        )
    )
    runs = draw(st.lists(st.sampled_from(["r1", "r2", "r10"]), min_size=n, max_size=n))
    instruments = draw(st.lists(st.sampled_from(["BTCUSDT", "ETHUSDT"]), min_size=n, max_size=n))
    seen, rows = set(), []
    for i in range(n):
        key = (agents[i], minutes[i], runs[i], instruments[i])
        if key in seen:  # one row per signal
            continue
        seen.add(key)
        rows.append(
            trade(
                agents[i], T0 + timedelta(minutes=minutes[i]), values[i], runs[i], instrument=instruments[i]
            )
        )
    return frame(rows)


@PROPERTY
@given(histories(), st.integers(1, 6), st.integers(1, 8))
def test_matches_the_oracle(trades, recent, lookback):
    rule = ConfidenceRule(recent_trades=recent, lookback_trades=lookback)
    state = fold_confidence(trades, rule)
    assert_matches_oracle(state, oracle(trades, rule))
    if len(trades):
        assert_frame_equal(fold_confidence(trades.iloc[::-1], rule), state)
        assert_frame_equal(fold_day_by_day(trades, rule), state)


# ------------------------------------------------------------------------------------------ JSON
def test_confidence_json_shape_is_byte_stable():
    rows = [
        trade("b", "2024-03-01T10:00", -30),
        trade("b", "2024-03-01T11:00:00.5", -40.004),
        trade("b", "2024-03-02T10:30", 10),
        trade("a<\n", "2024-03-02T10:30", 0.001),
    ]
    document = confidence_json(fold_confidence(frame(rows)))
    assert json.dumps(document) == (
        '{"a<\\n": {"mult": 1.0, "updated_at": "2024-03-02T10:30:00Z", "horizon_hours": 24, '
        '"recent_sum_bps": 0.0}, '
        '"b": {"mult": 0.7225, "updated_at": "2024-03-02T10:30:00Z", "horizon_hours": 24, '
        '"recent_sum_bps": -60.0}}'
    )
    day_one = confidence_json(fold_confidence(frame(rows), through_day="2024-03-01"))
    assert day_one["b"] == {
        "mult": 0.85,
        "updated_at": "2024-03-01T11:00:00.5Z",  # the fraction only when there is one
        "horizon_hours": 24,
        "recent_sum_bps": -70.0,
    }
    assert list(document) == sorted(document)


def test_state_json_round_trip_is_exact():
    rng = np.random.default_rng(5)
    trades = frame(
        [
            trade(f"a{i % 4}", T0 + timedelta(minutes=int(m)), float(v))
            for i, (m, v) in enumerate(zip(rng.integers(0, 9 * 1440, 90), rng.normal(0, 55, 90), strict=True))
        ]
    )
    state = fold_confidence(trades, since={"a1": pd.Timestamp(T0 + 2 * DAY)})
    text = json.dumps(state_to_json(state))
    back = state_from_json(json.loads(text))
    assert_frame_equal(back, state)
    assert back.attrs == state.attrs
    assert json.dumps(state_to_json(back)) == text
