"""Per-agent statistics of realized PnL (docs/rules.md, *Supervisor rules*).

Input: rows of ``reconciled_trades`` (one per signal and horizon). Only ``matured`` rows count: a
pending or unpriced row has no PnL yet and is in no statistic.
"""

from __future__ import annotations

import pandas as pd

from meta_pipeline.reconcile import MATURED

FOCUS_HORIZON_HOURS = 24.0  # the supervisor judges agents on their 24 h trades


def pnl_by_agent(rows: pd.DataFrame, horizon_hours: float = FOCUS_HORIZON_HOURS) -> pd.DataFrame:
    """Matured trades at ``horizon_hours`` summed per agent.

    Returns a frame indexed by ``agent`` with ``trades`` (count), ``pnl_sum_bps`` (sum of
    ``realized_pnl_bps``, bps) and ``hit_rate`` (share of trades with PnL > 0), sorted by
    ``pnl_sum_bps`` ascending. Empty (same columns) when nothing has matured.
    """
    status = rows["status"].astype(str) if len(rows) else pd.Series(dtype=str)
    matured = rows[(status == MATURED) & (rows["horizon_hours"] == horizon_hours)] if len(rows) else rows
    if matured.empty:
        return pd.DataFrame(columns=["trades", "pnl_sum_bps", "hit_rate"], index=pd.Index([], name="agent"))
    pnl = matured.assign(agent=matured["agent"].astype(str)).groupby("agent")["realized_pnl_bps"]
    table = pd.DataFrame(
        {"trades": pnl.count(), "pnl_sum_bps": pnl.sum(), "hit_rate": pnl.apply(lambda s: (s > 0).mean())}
    )
    return table.sort_values("pnl_sum_bps")
