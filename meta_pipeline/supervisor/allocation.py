"""Capital weights per agent (docs/rules.md, *Supervisor rules*, *Allocation*; the users' rule, with
killed and retired agents excluded as the rules' fix #9 requires).

* An agent is **excluded** when its decision is ``KILL``, ``RETIRE`` or ``KILLED``, when its
  ``error_rate`` > 0.05 (strictly: 0.05 is kept), or when its ``pnl_sum_bps`` ≤ 0.
* Every other agent gets a raw score q = ``pnl_sum_bps`` · (0.5 + ``hit_rate``) · confidence
  multiplier (1.0 when the agent has none yet).
* Weights are q / Σ q and sum to 1; no eligible agent gives no weights at all.
* An optional per-agent ``cap`` sets the agents above it to the cap and spreads the excess over the
  others in proportion to their q, again until no agent is above the cap.

Example from the rules: A (300 bps, hit 0.60, mult 1.00) → q = 330; B (200, 0.50, 0.75) → q = 150;
weights 0.6875 and 0.3125.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

__all__ = ["STATS_COLUMNS", "allocation_weights"]

STATS_COLUMNS = ("pnl_sum_bps", "hit_rate", "error_rate", "decision")
_CAP_SLACK = 1e-12  # cap × n that rounds to just below 1 (e.g. 1/3 × 3) still counts as feasible


def _multipliers(multipliers, agents: pd.Index) -> np.ndarray:
    if isinstance(multipliers, pd.DataFrame):  # a confidence state: its ``mult`` column
        multipliers = multipliers["mult"]
    series = pd.Series(
        dict(multipliers) if isinstance(multipliers, Mapping) else multipliers, dtype=np.float64
    )
    series.index = series.index.astype(str)
    values = series.groupby(level=0).last().reindex(agents).to_numpy(dtype=np.float64)
    return np.where(np.isfinite(values), values, 1.0)


def _capped(q: np.ndarray, cap: float) -> np.ndarray:
    """min(cap, λ·q) with λ such that the weights sum to 1 (the fixed point of capping the agents
    above the cap and spreading the excess pro rata over the others, repeated until none is above).

    The agents at the cap are the k largest q. For k capped, the others get (1 − k·cap)·q / S_k,
    S_k = Σ of the q outside the top k; the answer is the smallest k whose largest uncapped weight
    is within the cap (it then also puts every capped agent at or above the cap).
    """
    n = len(q)
    order = np.argsort(-q, kind="stable")
    qs = q[order]
    tail = np.cumsum(qs[::-1])[::-1]  # tail[k] = Σ qs[k:]
    k = np.arange(n)
    scale = (1.0 - k * cap) / tail
    fits = qs * scale <= cap
    top = int(np.argmax(fits)) if fits.any() else n - 1
    sorted_weights = np.where(k < top, cap, np.minimum(qs * scale[top], cap))
    weights = np.empty(n)
    weights[order] = sorted_weights
    return weights


def allocation_weights(
    stats: pd.DataFrame,
    multipliers: pd.Series | Mapping[str, float] | pd.DataFrame,
    *,
    max_error_rate: float = 0.05,
    excluded_decisions: Iterable[str] = ("KILL", "RETIRE", "KILLED"),
    cap: float | None = None,
) -> pd.Series:
    """Capital weights of the eligible agents (see the module docstring).

    Parameters
    ----------
    stats
        indexed by agent, with ``pnl_sum_bps`` (bps), ``hit_rate`` and ``error_rate`` (shares 0..1)
        and ``decision`` (str).
    multipliers
        agent → confidence multiplier (a Series, a dict, or a confidence state with a ``mult``
        column). A missing or non-finite multiplier counts as 1.0; agents not in ``stats`` are ignored.
    max_error_rate
        an agent whose ``error_rate`` is strictly above this is excluded. An unknown (NaN) error rate
        is excluded too: the rule needs the rate to be at most this, and capital needs evidence.
    excluded_decisions
        decisions that get no capital, compared case-insensitively.
    cap
        optional maximum weight per agent, in (0, 1]; the excess is redistributed pro rata to the
        agents below the cap, until none is above it.

    Returns
    -------
    pandas.Series
        agent (str, sorted) → weight (float64, full precision), named ``weight``; the weights sum to 1
        up to float rounding. Only eligible agents with a positive raw score appear; empty when none
        qualifies. An agent whose q is not > 0 (a zero multiplier, a NaN hit rate) is excluded.

    Raises
    ------
    ValueError
        when a column is missing, when ``cap`` is not in (0, 1], or when ``cap`` × the number of
        eligible agents is below 1: then no weights within the cap can sum to 1. The caller decides
        (raise the cap, or report the allocation as blocked); weights summing to less than 1 would
        silently leave capital unallocated, which the report and the app do not expect.
    """
    missing = [c for c in STATS_COLUMNS if c not in stats.columns]
    if missing:
        raise ValueError(f"stats lacks column(s) {missing}")
    if cap is not None and not (0.0 < cap <= 1.0):
        raise ValueError(f"cap must be in (0, 1], got {cap}")
    agents = pd.Index(stats.index.to_numpy(object), name="agent").astype(str)
    pnl = pd.to_numeric(stats["pnl_sum_bps"], errors="coerce").to_numpy(dtype=np.float64)
    hit = pd.to_numeric(stats["hit_rate"], errors="coerce").to_numpy(dtype=np.float64)
    errors = pd.to_numeric(stats["error_rate"], errors="coerce").to_numpy(dtype=np.float64)
    blocked = {str(d).upper() for d in excluded_decisions}
    decision = stats["decision"].astype(str).str.upper().isin(blocked).to_numpy()
    mult = _multipliers(multipliers, agents)

    with np.errstate(invalid="ignore"):
        q = pnl * (0.5 + hit) * mult
        eligible = ~decision & (errors <= max_error_rate) & (pnl > 0.0) & np.isfinite(q) & (q > 0.0)
    if not eligible.any():
        return pd.Series([], index=pd.Index([], dtype=str, name="agent"), dtype=np.float64, name="weight")
    q = q[eligible]
    if cap is not None and cap < 1.0:
        if cap * len(q) < 1.0 - _CAP_SLACK:
            raise ValueError(
                f"allocation cap {cap} × {len(q)} eligible agent(s) = {cap * len(q):.6g} < 1: "
                f"weights within the cap cannot sum to 1 (at least {int(np.ceil(1.0 / cap - _CAP_SLACK))} "
                "eligible agents are needed)"
            )
        weights = _capped(q, cap)
    else:
        weights = q / q.sum()
    return pd.Series(weights, index=agents[eligible], name="weight").sort_index()
