"""Capital weights (docs/rules.md, *Supervisor rules*, *Allocation*).

The cap oracle is the rule as written: cap the agents above it, spread the excess over the others
in proportion, repeat until none is above; a plain Python loop over lists.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meta_pipeline.supervisor.allocation import allocation_weights

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def stats(rows: dict[str, tuple]) -> pd.DataFrame:
    """agent → (pnl_sum_bps, hit_rate, error_rate, decision)."""
    return pd.DataFrame.from_dict(
        rows, orient="index", columns=["pnl_sum_bps", "hit_rate", "error_rate", "decision"]
    ).rename_axis("agent")


def test_the_rules_example():
    weights = allocation_weights(
        stats({"A": (300, 0.60, 0.0, "HOLD"), "B": (200, 0.50, 0.0, "PROMOTE")}), {"B": 0.75}
    )
    assert weights.to_dict() == pytest.approx({"A": 0.6875, "B": 0.3125}, rel=1e-15)
    assert weights.name == "weight"
    assert weights.index.name == "agent"
    assert weights.dtype == np.float64


@pytest.mark.parametrize("decision", ["KILL", "RETIRE", "KILLED", "killed", "Retire"])
def test_killed_or_retired_agents_get_no_weight_even_with_positive_pnl(decision):
    weights = allocation_weights(stats({"A": (300, 0.6, 0.0, "HOLD"), "X": (5_000, 0.9, 0.0, decision)}), {})
    assert weights.to_dict() == {"A": 1.0}


@pytest.mark.parametrize("decision", ["HOLD", "WATCH", "PROMOTE"])
def test_other_decisions_get_weight(decision):
    assert allocation_weights(stats({"A": (100, 0.5, 0.0, decision)}), {}).to_dict() == {"A": 1.0}


def test_error_rate_threshold_is_strict():
    table = stats(
        {
            "at": (100, 0.5, 0.05, "HOLD"),
            "above": (100, 0.5, 0.0501, "HOLD"),
            "below": (100, 0.5, 0.0499, "HOLD"),
            "unknown": (100, 0.5, np.nan, "HOLD"),
        }
    )
    assert sorted(allocation_weights(table, {}).index) == ["at", "below"]
    assert sorted(allocation_weights(table, {}, max_error_rate=0.0).index) == []


def test_pnl_must_be_positive():
    table = stats(
        {"zero": (0.0, 0.9, 0.0, "HOLD"), "neg": (-1.0, 0.9, 0.0, "HOLD"), "tiny": (1e-9, 0.0, 0.0, "HOLD")}
    )
    assert allocation_weights(table, {}).to_dict() == {"tiny": 1.0}


def test_empty_when_no_agent_qualifies():
    table = stats({"A": (0.0, 0.5, 0.0, "HOLD"), "B": (100, 0.5, 0.2, "HOLD"), "C": (100, 0.5, 0.0, "KILL")})
    weights = allocation_weights(table, {"A": 1.0})
    assert weights.empty
    assert weights.dtype == np.float64
    assert weights.to_dict() == {}
    assert allocation_weights(stats({}), {}).empty


def test_multipliers_missing_are_one_and_may_come_in_three_shapes():
    table = stats({"A": (100, 0.5, 0.0, "HOLD"), "B": (100, 0.5, 0.0, "HOLD"), "C": (100, 0.5, 0.0, "HOLD")})
    mults = {"A": 0.5, "C": float("nan"), "ghost": 3.0}
    expected = {"A": 0.2, "B": 0.4, "C": 0.4}  # q = 50, 100, 100
    assert allocation_weights(table, mults).to_dict() == pytest.approx(expected, rel=1e-15)
    assert allocation_weights(table, pd.Series(mults)).to_dict() == pytest.approx(expected, rel=1e-15)
    state = pd.DataFrame({"mult": pd.Series(mults), "updates": 1})
    assert allocation_weights(table, state).to_dict() == pytest.approx(expected, rel=1e-15)


def test_zero_multiplier_or_missing_hit_rate_excludes():
    table = stats(
        {"A": (100, 0.5, 0.0, "HOLD"), "B": (100, 0.5, 0.0, "HOLD"), "C": (100, np.nan, 0.0, "HOLD")}
    )
    assert allocation_weights(table, {"B": 0.0}).to_dict() == {"A": 1.0}


def test_full_precision():
    table = stats({a: (100, 0.5, 0.0, "HOLD") for a in "ABC"})
    assert allocation_weights(table, {}).tolist() == [1 / 3, 1 / 3, 1 / 3]
    weights = allocation_weights(stats({"A": (1, 0.5, 0.0, "HOLD"), "B": (2, 0.5, 0.0, "HOLD")}), {})
    assert weights["A"] == 1 / 3


def test_missing_column_raises():
    with pytest.raises(ValueError, match="decision"):
        allocation_weights(stats({"A": (1, 0.5, 0.0, "HOLD")}).drop(columns=["decision"]), {})


# -------------------------------------------------------------------------------------- the cap
def capped_by_the_rule(q: list[float], cap: float) -> list[float]:
    """Cap, spread the excess pro rata over the uncapped, repeat (plain Python)."""
    weights = [v / sum(q) for v in q]
    capped = [False] * len(q)
    while True:
        over = [i for i, w in enumerate(weights) if not capped[i] and w > cap * (1 + 1e-12)]
        if not over:
            return weights
        for i in over:
            capped[i] = True
        free = 1.0 - cap * sum(capped)
        rest = sum(v for v, c in zip(q, capped, strict=True) if not c)
        weights = [cap if c else free * v / rest for v, c in zip(q, capped, strict=True)]


def test_cap_redistributes_pro_rata():
    table = stats({"A": (60, 0.5, 0.0, "HOLD"), "B": (30, 0.5, 0.0, "HOLD"), "C": (10, 0.5, 0.0, "HOLD")})
    weights = allocation_weights(table, {}, cap=0.5)
    assert weights.to_dict() == pytest.approx({"A": 0.5, "B": 0.375, "C": 0.125}, rel=1e-12)


def test_cap_cascades_until_none_is_above():
    # A is capped; the excess pushes B above the cap too; C and D share what is left
    table = stats({a: (v, 0.5, 0.0, "HOLD") for a, v in {"A": 70, "B": 20, "C": 5, "D": 5}.items()})
    weights = allocation_weights(table, {}, cap=0.3)
    assert weights.to_dict() == pytest.approx({"A": 0.3, "B": 0.3, "C": 0.2, "D": 0.2}, rel=1e-12)
    assert weights.tolist() == pytest.approx(capped_by_the_rule([70, 20, 5, 5], 0.3), rel=1e-12)


def test_cap_not_binding_changes_nothing():
    table = stats({"A": (60, 0.5, 0.0, "HOLD"), "B": (40, 0.5, 0.0, "HOLD")})
    assert allocation_weights(table, {}, cap=0.6).tolist() == allocation_weights(table, {}).tolist()
    assert allocation_weights(table, {}, cap=1.0).tolist() == allocation_weights(table, {}).tolist()


def test_cap_exactly_feasible_gives_everyone_the_cap():
    table = stats({a: (v, 0.5, 0.0, "HOLD") for a, v in {"A": 90, "B": 5, "C": 3, "D": 2}.items()})
    assert allocation_weights(table, {}, cap=0.25).tolist() == pytest.approx([0.25] * 4, rel=1e-12)
    three = stats({a: (v, 0.5, 0.0, "HOLD") for a, v in {"A": 90, "B": 5, "C": 3}.items()})
    assert allocation_weights(three, {}, cap=1 / 3).sum() == pytest.approx(1.0, abs=1e-12)


def test_cap_that_cannot_sum_to_one_raises():
    table = stats({"A": (60, 0.5, 0.0, "HOLD"), "B": (40, 0.5, 0.0, "HOLD"), "K": (900, 0.5, 0.0, "KILL")})
    with pytest.raises(ValueError, match=r"cap 0\.4 × 2 eligible"):
        allocation_weights(table, {}, cap=0.4)
    with pytest.raises(ValueError, match="cap must be"):
        allocation_weights(table, {}, cap=0.0)
    with pytest.raises(ValueError, match="cap must be"):
        allocation_weights(table, {}, cap=1.5)
    # nobody eligible: empty, whatever the cap
    assert allocation_weights(table.assign(decision="KILL"), {}, cap=0.1).empty


# ---------------------------------------------------------------------------------- properties
agent_rows = st.tuples(
    st.one_of(st.floats(-500, 5_000, allow_nan=False), st.sampled_from([0.0, 1e-6, 150.0])),
    st.floats(0.0, 1.0),
    st.sampled_from([0.0, 0.01, 0.05, 0.0501, 0.2, float("nan")]),
    st.sampled_from(["HOLD", "PROMOTE", "WATCH", "KILL", "RETIRE", "KILLED"]),
    st.one_of(st.none(), st.floats(0.2, 1.2)),
)


@PROPERTY
@given(st.lists(agent_rows, max_size=30), st.one_of(st.none(), st.floats(0.02, 1.0)))
def test_weights_sum_to_one_and_follow_the_rule(rows, cap):
    table = stats({f"a{i:02d}": row[:4] for i, row in enumerate(rows)})
    mults = {f"a{i:02d}": row[4] for i, row in enumerate(rows) if row[4] is not None}
    eligible = {
        agent: pnl * (0.5 + hit) * mults.get(agent, 1.0)
        for agent, (pnl, hit, err, decision, _) in zip(table.index, rows, strict=True)
        if decision not in ("KILL", "RETIRE", "KILLED") and err <= 0.05 and pnl > 0
    }
    eligible = {a: q for a, q in eligible.items() if q > 0}
    if cap is not None and eligible and cap * len(eligible) < 1 - 1e-12:
        with pytest.raises(ValueError):
            allocation_weights(table, mults, cap=cap)
        return
    weights = allocation_weights(table, mults, cap=cap)
    assert sorted(weights.index) == sorted(eligible)
    if not eligible:
        assert weights.empty
        return
    assert math.isclose(weights.sum(), 1.0, abs_tol=1e-9)
    assert (weights > 0).all()
    q = [eligible[a] for a in weights.index]
    expected = capped_by_the_rule(q, cap) if cap is not None else [v / sum(q) for v in q]
    assert weights.tolist() == pytest.approx(expected, rel=1e-9, abs=1e-12)
    if cap is not None:
        assert (weights <= cap * (1 + 1e-12)).all()
