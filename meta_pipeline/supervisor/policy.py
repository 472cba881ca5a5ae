"""The supervisor's thresholds, in one place (docs/rules.md, *Supervisor rules*).

Each agent gets one **decision** per evaluation, with this precedence: KILLED (already on the kill
list), RETIRE, KILL, PROMOTE, HOLD; and a **label** from its retirement score: KEEP, WATCH or RETIRE.
Trading figures come from the agent's **matured** 24 h trades (net bps, see docs/rules.md, *Pricing
and PnL*); reliability figures from **all** of its telemetry runs, including the runs that emitted no
signal (counting only the runs that traded would hide an agent that fails most of the time and
trades only when it happens to work).

The rules, with the default values of :class:`SupervisorPolicy`:

* **PROMOTE** when every gate passes: summed PnL ≥ 150 bps, hit rate (share of trades with PnL > 0)
  ≥ 0.55, error rate 0 (no run with ``errors > 0``), average latency ≤ 900 ms, at least 10 matured
  trades, and a probabilistic Sharpe ratio ≥ 0.95 of the agent's *timing* returns on its chain of
  non-overlapping trades (:mod:`meta_pipeline.supervisor.significance`): evidence that the edge is
  neither luck on a few overlapping trades nor the market's drift. ``None`` turns a gate off; so does
  0 for the trade count, the PSR and the latency.
* **KILL** when summed PnL < −150 bps or the error rate is above 0.20.
* **Retirement score**, points added up: +40 with at least 10 matured trades and summed PnL < 0;
  +30 with summed PnL < −150 bps; +20 with an error rate above 0.10; +10 with more than 5 USD spent
  and summed PnL ≤ 0. Score ≥ 80 → label RETIRE and decision RETIRE; ≥ 55 → label WATCH.
* Anything else is **HOLD**.

"Share" and "rate" mean a fraction between 0 and 1, not a percentage.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SupervisorPolicy", "FOCUS_HORIZON_HOURS"]

FOCUS_HORIZON_HOURS = 24
"""The horizon the supervisor judges agents on (hours), as the app does."""


@dataclass(frozen=True)
class SupervisorPolicy:
    """Thresholds for decisions, labels, allocation and the checks that gate them; the defaults are
    the users' rules plus the evidence gates (docs/rules.md, *Supervisor rules*)."""

    # --- PROMOTE: all of these must hold
    promote_min_pnl_bps: float | None = 150.0
    """Summed 24 h PnL of the matured trades must be at least this (bps)."""
    promote_min_hit_rate: float | None = 0.55
    """Share of matured trades with PnL > 0 must be at least this."""
    promote_max_error_rate: float | None = 0.0
    """Share of all runs with ``errors > 0`` must be at most this (0: no erroring run at all)."""
    promote_max_avg_latency_ms: float | None = 900.0
    """Average latency over all runs must be at most this (ms)."""
    promote_min_trades: int | None = 10
    """Number of matured trades must be at least this (no promotion on a few lucky trades)."""
    promote_min_timing_psr: float | None = 0.95
    """Probabilistic Sharpe ratio of the timing returns on the chain of non-overlapping trades must
    be at least this (no promotion for luck on overlapping trades, or for the market's drift)."""

    # --- KILL: either of these
    kill_below_pnl_bps: float = -150.0
    """KILL when the summed PnL is strictly below this (bps)."""
    kill_above_error_rate: float = 0.20
    """KILL when the share of all runs with ``errors > 0`` is strictly above this."""

    # --- retirement score
    score_losing: int = 40
    """Points when the agent has ≥ ``losing_min_trades`` matured trades and summed PnL < 0 bps."""
    losing_min_trades: int = 10
    """Matured trades needed before a negative PnL scores ``score_losing``."""
    score_deep_loss: int = 30
    """Points when the summed PnL is strictly below ``deep_loss_below_pnl_bps``."""
    deep_loss_below_pnl_bps: float = -150.0
    """Summed PnL (bps) below which ``score_deep_loss`` is added."""
    score_errors: int = 20
    """Points when the share of all runs with ``errors > 0`` is strictly above ``errors_above_rate``."""
    errors_above_rate: float = 0.10
    """Error-rate share above which ``score_errors`` is added."""
    score_cost: int = 10
    """Points when the total cost is strictly above ``cost_above_usd`` and summed PnL ≤ 0 bps."""
    cost_above_usd: float = 5.0
    """Total token cost over all runs (USD) above which an agent that made no money scores ``score_cost``."""
    retire_min_score: int = 80
    """Label and decision RETIRE at this score or more; overrides KILL."""
    watch_min_score: int = 55
    """Label WATCH at this score or more (the decision is unchanged)."""

    # --- allocation
    allocation_max_error_rate: float = 0.05
    """Agents whose error rate is strictly above this get no capital."""
    allocation_cap: float | None = None
    """Largest weight one agent may get; the excess goes pro rata to the others (None: no cap)."""

    # --- evidence
    psr_probability: float = 0.95
    """Confidence level of the minimum track record length (and of the usual PSR gate)."""
    lookback_days: int | None = None
    """Judge agents on the trades and runs of the last N days only (None: all history, as the app)."""

    # --- blocking checks on the supervisor's inputs (fleet level: one young agent never fails them)
    check_min_fleet_trades: int = 20
    """Matured 24 h trades across the fleet in the window needed before any decision is taken."""
    check_max_unpriced_share: float = 0.05
    """Largest share of due (signal, horizon) rows that may be ``unpriced``."""
    check_min_telemetry_coverage: float = 0.99
    """Smallest share of traded runs that must have telemetry with a readable ``errors``."""
