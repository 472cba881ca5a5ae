"""Retirement score and label, promotion gates and the decision of every agent (docs/rules.md,
*Supervisor rules*; thresholds in :class:`~meta_pipeline.supervisor.policy.SupervisorPolicy`).

Input: the table of :func:`meta_pipeline.supervisor.stats.agent_stats` (one row per agent). Every
rule is a vectorized comparison over all agents at once. A figure that cannot be computed (no
readable telemetry, an undefined PSR) fails the gate that needs it: promotion must be earned by
evidence, never granted by missing data; the KILL rule, on the contrary, acts only on figures that
exist.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from meta_pipeline.supervisor.policy import SupervisorPolicy

KILLED, RETIRE, KILL, PROMOTE, HOLD = "KILLED", "RETIRE", "KILL", "PROMOTE", "HOLD"
DECISIONS = (KILLED, RETIRE, KILL, PROMOTE, HOLD)  # in order of precedence
KEEP, WATCH = "KEEP", "WATCH"
LABELS = (KEEP, WATCH, RETIRE)


@dataclass(frozen=True)
class Gate:
    """One promotion gate: ``column`` compared with the policy field ``threshold`` by ``compare``."""

    name: str
    column: str
    threshold: str
    compare: Callable[[np.ndarray, float], np.ndarray]
    symbol: str
    zero_turns_off: bool = False


GATES = (
    Gate("pnl", "pnl_sum_bps", "promote_min_pnl_bps", operator.ge, "≥"),
    Gate("hit rate", "hit_rate", "promote_min_hit_rate", operator.ge, "≥"),
    Gate("error rate", "error_rate", "promote_max_error_rate", operator.le, "≤"),
    Gate(
        "avg latency", "avg_latency_ms", "promote_max_avg_latency_ms", operator.le, "≤", zero_turns_off=True
    ),
    Gate("trades", "trades", "promote_min_trades", operator.ge, "≥", zero_turns_off=True),
    Gate("timing PSR", "timing_psr", "promote_min_timing_psr", operator.ge, "≥", zero_turns_off=True),
)


def _active(gate: Gate, policy: SupervisorPolicy) -> float | None:
    threshold = getattr(policy, gate.threshold)
    if threshold is None or (gate.zero_turns_off and threshold == 0):
        return None
    return float(threshold)


def gate_results(stats: pd.DataFrame, policy: SupervisorPolicy) -> pd.DataFrame:
    """Pass/fail of every active promotion gate: a boolean frame indexed like ``stats``, one column
    per gate name. A missing value (NaN) fails."""
    passed = {}
    for gate in GATES:
        threshold = _active(gate, policy)
        if threshold is None:
            continue
        values = (
            stats[gate.column].to_numpy(dtype="float64")
            if gate.column in stats
            else np.full(len(stats), np.nan)
        )
        with np.errstate(invalid="ignore"):
            passed[gate.name] = gate.compare(values, threshold) & ~np.isnan(values)
    return pd.DataFrame(passed, index=stats.index)


def retirement_score(stats: pd.DataFrame, policy: SupervisorPolicy) -> pd.Series:
    """0 (keep) … 100 (retire), the users' points: losing with enough trades, deep loss, errors,
    cost without profit. Missing figures add no points."""
    pnl = stats["pnl_sum_bps"].to_numpy(dtype="float64")
    trades = stats["trades"].to_numpy(dtype="float64")
    error_rate = stats["error_rate"].to_numpy(dtype="float64")
    cost = stats["cost_usd"].to_numpy(dtype="float64")
    with np.errstate(invalid="ignore"):
        score = (
            np.where((trades >= policy.losing_min_trades) & (pnl < 0), policy.score_losing, 0)
            + np.where(pnl < policy.deep_loss_below_pnl_bps, policy.score_deep_loss, 0)
            + np.where(error_rate > policy.errors_above_rate, policy.score_errors, 0)
            + np.where((cost > policy.cost_above_usd) & (pnl <= 0), policy.score_cost, 0)
        )
    return pd.Series(np.clip(score, 0, 100).astype("int64"), index=stats.index, name="retirement_score")


def retirement_label(score: pd.Series, policy: SupervisorPolicy) -> pd.Series:
    """RETIRE at ``retire_min_score`` or more, WATCH at ``watch_min_score`` or more, else KEEP."""
    values = np.where(
        score >= policy.retire_min_score, RETIRE, np.where(score >= policy.watch_min_score, WATCH, KEEP)
    )
    return pd.Series(values, index=score.index, name="label")


def decide(stats: pd.DataFrame, policy: SupervisorPolicy, killed: Iterable[str] = ()) -> pd.DataFrame:
    """The decision of every agent in ``stats``.

    Returns a frame indexed like ``stats`` with ``decision`` (KILLED, RETIRE, KILL, PROMOTE or HOLD,
    in that precedence), ``label`` (KEEP / WATCH / RETIRE), ``retirement_score``, ``failed_gates``
    (a tuple of gate names, empty when every active gate passed) and ``kill_reason`` (why KILL or
    RETIRE, with the numbers; empty otherwise). ``killed`` are the names on the kill list now.
    """
    killed = {str(name) for name in killed}
    score = retirement_score(stats, policy)
    label = retirement_label(score, policy)
    gates = gate_results(stats, policy)
    promote = gates.all(axis=1).to_numpy() if len(gates.columns) else np.ones(len(stats), bool)
    pnl = stats["pnl_sum_bps"].to_numpy(dtype="float64")
    error_rate = stats["error_rate"].to_numpy(dtype="float64")
    with np.errstate(invalid="ignore"):
        kill_pnl = pnl < policy.kill_below_pnl_bps
        kill_errors = error_rate > policy.kill_above_error_rate
    on_list = stats.index.astype(str).isin(killed)
    decision = np.select(
        [on_list, label.to_numpy() == RETIRE, kill_pnl | kill_errors, promote],
        [KILLED, RETIRE, KILL, PROMOTE],
        default=HOLD,
    )
    failed_names = np.where(~gates.to_numpy(dtype=bool), np.asarray(gates.columns, dtype=object), None)
    failed = [tuple(name for name in row if name is not None) for row in failed_names.tolist()]
    if not len(gates.columns):
        failed = [()] * len(stats)
    reasons = np.full(len(stats), "", dtype=object)
    for i in np.flatnonzero((decision == RETIRE) | (decision == KILL)):  # only the few acted upon
        if decision[i] == RETIRE:
            reasons[i] = f"retirement score {int(score.iloc[i])} ≥ {policy.retire_min_score}"
            continue
        parts = []
        if kill_pnl[i]:
            parts.append(f"pnl {pnl[i]:.2f} bps < {policy.kill_below_pnl_bps:g}")
        if kill_errors[i]:
            parts.append(f"error rate {error_rate[i]:.3f} > {policy.kill_above_error_rate:g}")
        reasons[i] = "; ".join(parts)
    return pd.DataFrame(
        {
            "decision": decision,
            "label": label,
            "retirement_score": score,
            "failed_gates": failed,
            "kill_reason": reasons,
        },
        index=stats.index,
    )


def gate_table(stats: pd.DataFrame, policy: SupervisorPolicy) -> pd.DataFrame:
    """Long table agent × active gate — ``agent``, ``gate``, ``value``, ``rule`` (e.g. "≥ 150"),
    ``passed`` — that answers "why was X not promoted?"."""
    passed = gate_results(stats, policy)
    parts = []
    for gate in GATES:
        threshold = _active(gate, policy)
        if threshold is None:
            continue
        parts.append(
            pd.DataFrame(
                {
                    "agent": stats.index.astype(str),
                    "gate": gate.name,
                    "value": stats[gate.column].to_numpy(dtype="float64") if gate.column in stats else np.nan,
                    "rule": f"{gate.symbol} {threshold:g}",
                    "passed": passed[gate.name].to_numpy(),
                }
            )
        )
    if not parts:
        return pd.DataFrame(columns=["agent", "gate", "value", "rule", "passed"])
    return pd.concat(parts, ignore_index=True)
