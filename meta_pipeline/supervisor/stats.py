"""Per-agent statistics: trading figures from matured 24 h trades, reliability from all telemetry runs
(docs/rules.md, *Supervisor rules*).

Inputs (pandas frames; any row order):

* ``trades`` — one row per matured trade at the focus horizon: ``agent``, ``run_id``, ``instrument``,
  ``ts`` and ``exit_ts`` (UTC), ``direction``, ``gross_bps``, ``net_bps``, ``regime``, ``confidence``
  (:func:`meta_pipeline.supervisor.history.matured_trades` builds it from ``reconciled_trades``).
* ``runs`` — one row per telemetry run: ``agent``, ``run_id``, ``ts`` (UTC), ``latency_ms``,
  ``errors`` (a count, NaN when unreadable or absent), ``cost_usd``.

Telemetry and trades are never merged row into row: a telemetry field can never overwrite a trade
field, and an agent's reliability counts every run, including the runs that emitted no signal.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from meta_pipeline.reconcile import MATURED
from meta_pipeline.supervisor import portfolio, significance

FOCUS_HORIZON_HOURS = 24.0  # the supervisor judges agents on their 24 h trades

TRADE_COLUMNS = ["trades", "pnl_sum_bps", "hit_rate", "mean_bps", "std_bps", "worst_trade_bps"]
RUN_COLUMNS = ["runs", "error_runs", "error_rate", "avg_latency_ms", "p95_latency_ms", "cost_usd"]


def pnl_by_agent(rows: pd.DataFrame, horizon_hours: float = FOCUS_HORIZON_HOURS) -> pd.DataFrame:
    """Matured trades at ``horizon_hours`` summed per agent, from ``reconciled_trades`` rows.

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


def agent_category(values: pd.Series) -> pd.Series:
    """``agent`` as a categorical with text categories: grouping 10⁶ rows by codes is several times
    faster than hashing the strings each time (and a Parquet read gives categoricals anyway)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        categories = values.cat.categories
        if categories.inferred_type in ("string", "empty"):
            return values
        text = categories.astype(str)
        if text.is_unique:
            return values.cat.rename_categories(text)
    return values.astype(str).astype("category")


def since_filter(frame: pd.DataFrame, since: Mapping[str, pd.Timestamp] | None) -> pd.DataFrame:
    """Rows of ``frame`` (with ``agent`` and ``ts``) whose ``ts`` is at or after ``since[agent]``;
    agents not in ``since`` keep every row. Used for an operator's revive: from then on the agent is
    judged on what it did after it."""
    if not since or frame.empty:
        return frame
    start = agent_category(frame["agent"]).map({str(k): pd.Timestamp(v) for k, v in since.items()})
    start = pd.to_datetime(start.astype(object), utc=True)
    keep = (
        start.isna().to_numpy()
        | (frame["ts"] >= start.fillna(pd.Timestamp.min.tz_localize("UTC"))).to_numpy()
    )
    return frame[keep]


def trade_stats(trades: pd.DataFrame) -> pd.DataFrame:
    """Per agent, on ``net_bps`` of its matured trades: ``trades``, ``pnl_sum_bps``, ``hit_rate``
    (share with net PnL > 0), ``mean_bps``, ``std_bps`` (ddof 1), ``worst_trade_bps``,
    ``max_drawdown_bps`` (additive, in time order), ``mean_gross_bps``, ``bias_bps`` and
    ``timing_bps`` (mean gross = bias + timing; net mean = bias + timing − cost)."""
    if trades.empty:
        return pd.DataFrame(
            columns=[*TRADE_COLUMNS, "max_drawdown_bps", "mean_gross_bps", "bias_bps", "timing_bps"],
            index=pd.Index([], name="agent"),
        )
    agent = agent_category(trades["agent"])
    net = trades["net_bps"].to_numpy(dtype="float64")
    grouped = pd.DataFrame({"agent": agent.to_numpy(), "net": net, "hit": net > 0}).groupby(
        "agent", sort=True, observed=True
    )
    table = pd.DataFrame(
        {
            "trades": grouped["net"].count(),
            "pnl_sum_bps": grouped["net"].sum(),
            "hit_rate": grouped["hit"].mean(),
            "mean_bps": grouped["net"].mean(),
            "std_bps": grouped["net"].std(ddof=1),
            "worst_trade_bps": grouped["net"].min(),
        }
    )
    table.index = table.index.astype(str).rename("agent")
    by_agent = portfolio.portfolio_breakdown(trades.assign(agent=agent), "agent")
    by_agent.index = by_agent.index.astype(str)
    table["max_drawdown_bps"] = by_agent["max_drawdown_bps"].reindex(table.index)
    split = significance.bias_timing_split(trades.assign(agent=agent))
    split.index = split.index.astype(str)
    return table.join(split[["mean_gross_bps", "bias_bps", "timing_bps"]])


def run_stats(runs: pd.DataFrame) -> pd.DataFrame:
    """Per agent, over **all** its telemetry runs (with or without a signal): ``runs``,
    ``error_runs`` (runs with ``errors > 0``), ``error_rate`` (error runs ÷ runs whose ``errors`` is
    readable; NaN when none is), ``avg_latency_ms`` and ``p95_latency_ms`` (over runs that reported
    one, ms), ``cost_usd`` (total, USD)."""
    if runs.empty:
        return pd.DataFrame(columns=RUN_COLUMNS, index=pd.Index([], name="agent"))
    errors = runs["errors"].to_numpy(dtype="float64")
    frame = pd.DataFrame(
        {
            "agent": agent_category(runs["agent"]).to_numpy(),
            "readable": ~np.isnan(errors),
            "failed": errors > 0,
            "latency": runs["latency_ms"].to_numpy(dtype="float64"),
            "cost": runs["cost_usd"].to_numpy(dtype="float64"),
        }
    )
    grouped = frame.groupby("agent", sort=True, observed=True)
    readable = grouped["readable"].sum()
    table = pd.DataFrame(
        {
            "runs": grouped["agent"].size(),
            "error_runs": grouped["failed"].sum(),
            "error_rate": grouped["failed"].sum() / readable.where(readable > 0),
            "avg_latency_ms": grouped["latency"].mean(),
            "p95_latency_ms": _group_quantile(frame["agent"], frame["latency"].to_numpy(), 0.95).to_numpy(),
            "cost_usd": grouped["cost"].sum(min_count=1).fillna(0.0),
        }
    )
    table.index = table.index.astype(str).rename("agent")
    return table


def _group_quantile(groups: pd.Series, values: np.ndarray, q: float) -> pd.Series:
    """Per-group ``q`` quantile of ``values`` ignoring NaN, with linear interpolation (pandas' and
    numpy's default), from one sort instead of a Python call per group. Indexed by sorted group."""
    if isinstance(groups.dtype, pd.CategoricalDtype):  # sorted, observed categories, as groupby has them
        groups = groups.cat.remove_unused_categories()
        groups = groups.cat.reorder_categories(groups.cat.categories.sort_values())
        codes, labels = groups.cat.codes.to_numpy().astype(np.int64), groups.cat.categories
    else:
        codes, labels = pd.factorize(groups, sort=True)
    keep = ~np.isnan(values)
    codes, values = codes[keep], values[keep]
    order = np.argsort(values, kind="stable")  # two cheap sorts beat one two-key lexsort
    order = order[np.argsort(codes[order], kind="stable")]
    codes, values = codes[order], values[order]
    counts = np.bincount(codes, minlength=len(labels))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = (counts - 1) * q
    lower = np.floor(position).astype(np.int64)
    frac = position - lower
    out = np.full(len(labels), np.nan)
    has = counts > 0
    low = values[starts[has] + lower[has]]
    high = values[starts[has] + np.minimum(lower[has] + 1, counts[has] - 1)]
    out[has] = low + (high - low) * frac[has]
    return pd.Series(out, index=pd.Index(labels, name="agent"))


def agent_stats(
    trades: pd.DataFrame,
    runs: pd.DataFrame,
    *,
    since: Mapping[str, pd.Timestamp] | None = None,
    n_trials: int | None = None,
    psr_probability: float = 0.95,
) -> pd.DataFrame:
    """Everything the decisions need, one row per agent seen in ``trades`` or ``runs``.

    ``since`` (agent → UTC time) drops an agent's trades and runs before that time (an operator's
    revive). ``n_trials`` is the number of agents ever evaluated, for the deflated Sharpe ratio
    (default: the agents in the input). Columns: :func:`trade_stats`, :func:`run_stats` and
    :func:`meta_pipeline.supervisor.significance.significance_by_agent` (chain of non-overlapping
    trades, PSR / DSR / minimum track record of the timing returns, PSR of the net PnL). An agent
    with runs but no trade has ``trades`` 0 and ``pnl_sum_bps`` 0.
    """
    agents = pd.Index(trades["agent"].astype(str).unique()).union(
        pd.Index(runs["agent"].astype(str).unique())
    )
    trades = since_filter(trades, since)
    runs = since_filter(runs, since)
    # an agent revived with nothing since keeps its row (0 trades), it does not vanish
    table = trade_stats(trades).join(run_stats(runs), how="outer").reindex(agents.rename("agent"))
    if not trades.empty:
        sig = significance.significance_by_agent(trades, n_trials=n_trials, prob=psr_probability)
        sig.index = sig.index.astype(str)
        table = table.join(sig, how="left")
    else:
        for column in significance.SIGNIFICANCE_COLUMNS:
            table[column] = pd.Series(dtype="object" if column == "psr_reason" else "float64")
    numeric = [c for c in table.columns if c != "psr_reason" and table[c].dtype == object]
    table = table.astype(dict.fromkeys(numeric, "float64"))  # an empty input gives object columns
    table["trades"] = table["trades"].fillna(0).astype("int64")
    table["pnl_sum_bps"] = table["pnl_sum_bps"].fillna(0.0)
    table["runs"] = table["runs"].fillna(0).astype("int64")
    table["error_runs"] = table["error_runs"].fillna(0).astype("int64")
    table["cost_usd"] = table["cost_usd"].fillna(0.0)
    if "chain_trades" in table:
        table["chain_trades"] = table["chain_trades"].fillna(0).astype("int64")
        no_trades = table["psr_reason"].isna() & table["timing_psr"].isna()
        table.loc[no_trades, "psr_reason"] = "no matured trades"
    table.index.name = "agent"
    return table.sort_index()
