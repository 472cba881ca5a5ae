"""The forensics on a simulated fleet (simulate.py, fixed seed): does a clean agent come out clean, and
is a real cause found?

Fleet: 180 days of 200 zero-skill agents signalling every 30 minutes (views persisting about a day,
confidence held with the view, regimes persisting about three days shared per symbol, AR(1) latency,
tokens and cost rising with latency, random-walk prices at 3 % daily volatility, 24 h trades), plus 20
agents that lose 85 % of their trades in one regime and 45 % in the others. 1,900,800 trades.

Measured with the seed below (run with ``-s`` to see them printed):

* after the fleet-wide Benjamini–Yekutieli correction (q = 0.05), on each agent's chain of
  non-overlapping trades (180 per agent): **0 of 200** zero-skill agents (0 %) have any hypothesis
  ``supported``; **19 of 20** regime-effect agents (95 %) have ``regime_mismatch`` ``supported``, and
  no other hypothesis is supported for them;
* the uncorrected chain p-values of the zero-skill agents are below 0.05 as often as they should be
  (regime 4.5 %, latency 3.5 %, overconfidence 2.5 %, volatility 2.0 %, cost 8.0 % of agents);
* **the same Fisher tests on all 8,640 trades of each agent (not the chain), uncorrected,
  p < 0.05: 81.5 % of the zero-skill agents for the regime hypothesis** (latency 23.5 %,
  overconfidence 37.0 %), and 93.5 % have at least one of the three Fisher hypotheses below 0.05 —
  what a per-trade test with no correction would have blamed on noise.

The whole file runs in about 15 s on 2 cores, imports included (simulation ~2–4 s, forensics ~2–5 s,
the all-trades comparison ~3 s).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from meta_pipeline.forensics import (
    SUPPORTED,
    evaluate_hypotheses,
    forensics_json,
    join_telemetry,
    run_forensics,
)
from meta_pipeline_tests.forensics.simulate import simulate_fleet

SEED = 20240101
FISHER_HYPOTHESES = ("regime_mismatch", "latency", "overconfidence")


@pytest.fixture(scope="module")
def simulated():
    fleet = simulate_fleet(SEED)
    result = run_forensics(fleet.trades, fleet.runs)
    on_all = evaluate_hypotheses(join_telemetry(fleet.trades, fleet.runs), chain=False)
    return fleet, result, on_all


def _share(mask) -> float:
    return float(np.mean(mask))


def test_zero_skill_agents_come_out_clean(simulated, record_property):
    fleet, result, _ = simulated
    table = result.hypotheses
    zero = table[table.agent.isin(fleet.zero_skill)]
    flagged = zero.groupby("agent")["verdict"].agg(lambda v: (v == SUPPORTED).any())
    assert len(flagged) == 200
    share = _share(flagged)
    raw = {h: _share(g["p_value"] < 0.05) for h, g in zero.groupby("hypothesis")}
    print(f"\nzero-skill agents with any hypothesis supported after BY: {flagged.sum()}/200 = {share:.3f}")
    print(
        "zero-skill agents with chain p < 0.05 before correction:", {h: round(v, 3) for h, v in raw.items()}
    )
    record_property("zero_skill_supported_share", share)
    assert share <= 0.05
    assert (zero["n_left"] + zero["n_right"]).max() <= 180  # one chain trade a day at most


def test_real_regime_effects_are_found(simulated, record_property):
    fleet, result, _ = simulated
    table = result.hypotheses
    mine = table[table.agent.isin(fleet.regime_effect)]
    regime = mine[mine.hypothesis == "regime_mismatch"].set_index("agent")
    found = regime["verdict"] == SUPPORTED
    share = _share(found)
    print(f"\nregime-effect agents with regime_mismatch supported: {found.sum()}/20 = {share:.2f}")
    record_property("regime_effect_power", share)
    assert share >= 0.8
    for agent in regime.index[found]:  # the right regime is named
        assert f" in {fleet.bad_regime[agent]} vs " in regime.loc[agent, "effect"]
    others = mine[mine.hypothesis != "regime_mismatch"]
    assert (others["verdict"] != SUPPORTED).all()


def test_all_trades_without_correction_blames_noise(simulated, record_property):
    """The figure the chain and the correction prevent: Fisher on all trades, uncorrected, p < 0.05
    (measured: regime 81.5 % of zero-skill agents, any Fisher hypothesis 93.5 %; module docstring)."""
    fleet, result, on_all = simulated
    zero_all = on_all[on_all.agent.isin(fleet.zero_skill)]
    fisher = zero_all[zero_all.hypothesis.isin(FISHER_HYPOTHESES)]
    per_hypothesis = {h: _share(g["p_value"] < 0.05) for h, g in fisher.groupby("hypothesis")}
    any_fisher = _share(fisher.groupby("agent")["p_value"].agg(lambda p: (p < 0.05).any()))
    zero_chain = result.hypotheses[result.hypotheses.agent.isin(fleet.zero_skill)]
    supported = _share(zero_chain.groupby("agent")["verdict"].agg(lambda v: (v == SUPPORTED).any()))
    print(
        "\nzero-skill agents, Fisher on all trades (not the chain), uncorrected p < 0.05:",
        {h: round(v, 3) for h, v in per_hypothesis.items()},
        f"any of the three: {any_fisher:.3f}; chain + BY: {supported:.3f}",
    )
    record_property("all_trades_regime_p05_share", per_hypothesis["regime_mismatch"])
    record_property("all_trades_any_fisher_p05_share", any_fisher)
    assert (fisher["n_left"] + fisher["n_right"]).max() > 8000  # every trade counted
    assert per_hypothesis["regime_mismatch"] >= 0.5
    assert any_fisher >= max(0.5, 10 * supported)


def test_report_of_the_simulated_fleet_is_json_safe(simulated):
    fleet, result, _ = simulated
    document = forensics_json(result, generated_at="2024-07-01T08:30:00Z")
    json.dumps(document, allow_nan=False)
    assert len(document["by_agent"]) == 220
    assert len(document["worst_runs"]) == 25
    worst = [row["net_bps"] for row in document["worst_runs"]]
    assert worst == sorted(worst) and worst[-1] <= float(np.partition(fleet.trades["net_bps"], 24)[24])
