"""The supervisor's decision thresholds, in one place (docs/rules.md, *Supervisor rules*).

Every agent gets one decision per evaluation: PROMOTE, HOLD, WATCH, KILL or RETIRE. The statistics
behind it are computed on the agent's **matured** 24 h signals (both prices known; see
docs/rules.md, *Pricing and PnL*) and, for reliability, on **all** of its telemetry runs, including
the runs that emitted no signal. Counting only the runs that traded would hide an agent that fails
most of the time and trades only when it happens to work.

The rules, with the default values of :class:`SupervisorPolicy`:

* **PROMOTE** when every gate passes: summed 24 h PnL ≥ 150 bps, hit rate (share of matured trades
  with PnL > 0) ≥ 0.55, error rate 0 (no run with ``errors > 0``), average latency ≤ 900 ms, and at
  least 10 matured trades, so that a few lucky trades cannot promote an agent.
* **KILL** when summed PnL < −150 bps or the error rate (share of all runs with ``errors > 0``) is
  above 0.20. KILL beats PROMOTE.
* **Retirement score**, points added up:

  - +40 when the agent has at least 10 matured trades and its summed PnL is below 0;
  - +30 when its summed PnL is below −150 bps;
  - +20 when its error rate is above 0.10;
  - +10 when it spent more than 5 USD and its summed PnL is ≤ 0.

  A score ≥ 80 means **RETIRE**, which overrides KILL. A score ≥ 55 turns a HOLD into **WATCH**.
* Anything else is **HOLD**.

"Share" below means a fraction between 0 and 1, not a percentage.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SupervisorPolicy"]


@dataclass(frozen=True)
class SupervisorPolicy:
    """Thresholds for PROMOTE / KILL / RETIRE / WATCH; the defaults are the project's rules."""

    # --- PROMOTE: all of these must hold
    promote_min_pnl_bps: float = 150.0
    """Summed 24 h PnL of the matured trades must be at least this (bps)."""
    promote_min_hit_rate: float = 0.55
    """Share of matured trades with PnL > 0 must be at least this."""
    promote_max_error_rate: float = 0.0
    """Share of all runs with ``errors > 0`` must be at most this (0: no erroring run at all)."""
    promote_max_avg_latency_ms: float = 900.0
    """Average latency over all runs must be at most this (ms)."""
    promote_min_trades: int = 10
    """Number of matured trades must be at least this (no promotion on a few lucky trades)."""

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
    """RETIRE at this score or more; overrides KILL."""
    watch_min_score: int = 55
    """WATCH at this score or more, for an agent that would otherwise HOLD."""
