"""Failure forensics of the fleet: the worst trades with their runs, a loss summary per agent, the
tested hypotheses and the calibration of stated confidence (docs/rules.md, *Forensics and the LP
email*; the file ``meta_supervisor/research/failure_forensics.json``, *File contract*).

:func:`run_forensics` computes everything from the trades frame and the telemetry runs;
:func:`forensics_json` shapes it as the app's file: the app's keys ``generated_at``,
``horizon_hours``, ``worst_runs``, ``by_agent`` (with their old fields) plus ``hypotheses``,
``calibration`` and ``method``.

Decisions taken here:

* ``worst_runs``: the ``worst_n`` matured 24 h trades with the lowest ``net_bps``, ties in time order
  (``exit_ts``, ``ts``, ``run_id``, ...; :func:`meta_pipeline.supervisor.portfolio.time_order`). Each
  keeps its trade fields as they are; its run's telemetry sits beside them (``tel_*`` columns in the
  frame, a nested ``telemetry`` object in the JSON, null when the run has none), so telemetry never
  overwrites a trade field — the app's ``{**trade, **telemetry}`` let it overwrite ``ts``.
* ``by_agent``: one entry per agent with a matured trade, describing its **losses** (``net_bps`` < 0)
  over all its matured trades: ``loss_count``, ``avg_loss_bps`` (mean net bps of the losses),
  ``median_latency_ms`` and ``median_tokens`` (``tokens_in + tokens_out``) of the losing trades' runs,
  ``error_rate`` (share of the losing trades whose run reported ``errors`` > 0, among those whose
  ``errors`` is readable; a run behind several losing trades counts for each), ``example_runs`` (the
  run ids of its 5 worst trades, worst first). Added beside them: ``trades``, ``chain_trades``,
  ``brier`` and the agent's ``hypotheses``. The app's ``why_we_lost_hypotheses`` list of strings is
  kept and now holds only the effects of the agent's **supported** hypotheses (empty for a clean
  agent). Entries are sorted by ``avg_loss_bps`` ascending (the app's order), agents without a loss
  last.
* The app's ``example_runs`` held whole rows; here it holds run ids (the rows are in ``worst_runs``
  and the warehouse).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from meta_pipeline.forensics.calibration import BUCKET_LABELS, brier_scores, calibration_table
from meta_pipeline.forensics.hypotheses import (
    HYPOTHESES,
    SUPPORTED,
    TELEMETRY_PREFIX,
    TESTS,
    agent_codes,
    evaluate_hypotheses,
    group_order,
    group_quantile,
    join_telemetry,
)
from meta_pipeline.reports.meta_report import json_safe
from meta_pipeline.supervisor.portfolio import time_order
from meta_pipeline.supervisor.significance import chain_mask

__all__ = ["BY_AGENT_COLUMNS", "EXAMPLE_RUNS", "ForensicsResult", "forensics_json", "run_forensics"]

EXAMPLE_RUNS = 5
BY_AGENT_COLUMNS = (
    "agent",
    "trades",
    "chain_trades",
    "loss_count",
    "avg_loss_bps",
    "median_latency_ms",
    "median_tokens",
    "error_rate",
    "example_runs",
)


@dataclass(frozen=True)
class ForensicsResult:
    """What :func:`run_forensics` found.

    Attributes
    ----------
    worst_runs : DataFrame, the ``worst_n`` worst trades (worst first): every trade column as given
        plus the run's telemetry in ``tel_*`` columns.
    by_agent : DataFrame with :data:`BY_AGENT_COLUMNS`, one row per agent (module docstring).
    hypotheses : DataFrame of :func:`meta_pipeline.forensics.hypotheses.evaluate_hypotheses`.
    calibration : long DataFrame of :func:`meta_pipeline.forensics.calibration.calibration_table`.
    brier : DataFrame of :func:`meta_pipeline.forensics.calibration.brier_scores`, indexed by agent.
    q, min_side : the settings used.
    """

    worst_runs: pd.DataFrame
    by_agent: pd.DataFrame
    hypotheses: pd.DataFrame
    calibration: pd.DataFrame
    brier: pd.DataFrame
    q: float
    min_side: int


def _worst(joined: pd.DataFrame, worst_n: int) -> pd.DataFrame:
    """The ``worst_n`` rows with the lowest ``net_bps``, ties in time order; index reset."""
    if worst_n <= 0 or joined.empty:
        return joined.iloc[:0].reset_index(drop=True)
    net = joined["net_bps"].to_numpy(dtype=np.float64)
    if len(net) > worst_n:  # every row tying with the worst_n-th value stays a candidate
        cut = np.partition(net, worst_n - 1)[worst_n - 1]
        candidates = np.flatnonzero(net <= cut)
    else:
        candidates = np.arange(len(net))
    subset = joined.iloc[candidates]
    in_time = candidates[time_order(subset)]
    ranked = in_time[np.argsort(net[in_time], kind="stable")][:worst_n]
    return joined.iloc[ranked].reset_index(drop=True)


def _by_agent(joined: pd.DataFrame, codes: np.ndarray, agents: pd.Index, chain: np.ndarray) -> pd.DataFrame:
    n_agents = len(agents)
    net = joined["net_bps"].to_numpy(dtype=np.float64)
    loss = net < 0
    lc = codes[loss]
    loss_count = np.bincount(lc, minlength=n_agents)
    with np.errstate(invalid="ignore", divide="ignore"):
        avg_loss = np.bincount(lc, weights=net[loss], minlength=n_agents) / loss_count

    def numeric(name: str) -> np.ndarray:
        column = joined.get(TELEMETRY_PREFIX + name)
        if column is None:
            return np.full(len(joined), np.nan)
        return pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)

    latency = numeric("latency_ms")[loss]
    tokens = (numeric("tokens_in") + numeric("tokens_out"))[loss]
    errors = numeric("errors")[loss]
    ok = np.isfinite(latency)
    median_latency = group_quantile(lc[ok], latency[ok], n_agents, 0.5)
    ok = np.isfinite(tokens)
    median_tokens = group_quantile(lc[ok], tokens[ok], n_agents, 0.5)
    readable = np.isfinite(errors)
    with np.errstate(invalid="ignore", divide="ignore"):
        error_rate = np.bincount(
            lc[readable], weights=errors[readable] > 0, minlength=n_agents
        ) / np.bincount(lc[readable], minlength=n_agents)

    # The EXAMPLE_RUNS worst losing trades of each agent, worst first, ties by entry time then row:
    # one (agent, net) sort finds each agent's cut-off, and only the rows within it are fully ordered.
    rows = np.flatnonzero(loss)
    by_net = rows[group_order(codes[rows], net[rows], n_agents)]
    starts = np.concatenate([[0], np.cumsum(loss_count)[:-1]]).astype(np.int64)
    has = loss_count > 0
    cut = np.full(n_agents, -np.inf)
    cut[has] = net[by_net[starts[has] + np.minimum(EXAMPLE_RUNS, loss_count[has]) - 1]]
    pick = rows[net[rows] <= cut[codes[rows]]]
    ts_ns = pd.DatetimeIndex(joined["ts"].iloc[pick]).as_unit("ns").asi8
    pick = pick[np.lexsort((pick, ts_ns, net[pick], codes[pick]))]
    first = np.searchsorted(codes[pick], np.arange(n_agents))
    pick = pick[np.arange(len(pick)) - first[codes[pick]] < EXAMPLE_RUNS]
    examples: list[list[str]] = [[] for _ in range(n_agents)]
    run_ids = joined["run_id"].iloc[pick].astype(str).tolist()
    for code, run_id in zip(codes[pick].tolist(), run_ids, strict=True):
        if run_id not in examples[code]:
            examples[code].append(run_id)

    chain = np.bincount(codes[chain], minlength=n_agents)
    table = pd.DataFrame(
        {
            "agent": agents.to_numpy(dtype=object),
            "trades": np.bincount(codes, minlength=n_agents).astype(np.int64),
            "chain_trades": chain.astype(np.int64),
            "loss_count": loss_count.astype(np.int64),
            "avg_loss_bps": avg_loss,
            "median_latency_ms": median_latency,
            "median_tokens": median_tokens,
            "error_rate": error_rate,
            "example_runs": pd.Series(examples, dtype=object),
        },
        columns=list(BY_AGENT_COLUMNS),
    )
    key = np.where(np.isfinite(avg_loss), avg_loss, np.inf)
    return table.iloc[np.lexsort((np.arange(n_agents), key))].reset_index(drop=True)


def run_forensics(
    trades: pd.DataFrame, runs: pd.DataFrame, *, q: float = 0.05, worst_n: int = 25, min_side: int = 10
) -> ForensicsResult:
    """Forensics of every agent's losses (module docstring and :mod:`meta_pipeline.forensics.hypotheses`).

    Parameters
    ----------
    trades : the trades frame: matured 24 h trades (``agent``, ``run_id``, ``instrument``, ``ts``,
        ``exit_ts``, ``direction``, ``gross_bps``, ``net_bps``, ``regime``, ``confidence``), any row
        order; optionally ``vol_1h_before_entry`` and ``vol_30d_median``
        (:func:`meta_pipeline.forensics.hypotheses.entry_volatility`), without which the volatility
        hypothesis has not enough data.
    runs : telemetry runs (``run_id``, ``agent``, ``ts``, ``latency_ms``, ``tokens_in``,
        ``tokens_out``, ``errors``, ``cost_usd``; missing columns leave their figures empty).
    q : false discovery rate of the fleet-wide Benjamini–Yekutieli correction.
    worst_n : how many worst trades to list.
    min_side : fewest chain trades on each side of a test.

    Returns
    -------
    :class:`ForensicsResult`.

    Raises
    ------
    KeyError when a required column is missing; ValueError as
    :func:`~meta_pipeline.forensics.hypotheses.evaluate_hypotheses` and
    :func:`~meta_pipeline.forensics.hypotheses.join_telemetry` (e.g. a trade column named ``tel_*``).
    """
    joined = join_telemetry(trades, runs)
    codes, agents = agent_codes(joined["agent"])
    chain = chain_mask(joined)
    return ForensicsResult(
        worst_runs=_worst(joined, int(worst_n)),
        by_agent=_by_agent(joined, codes, agents, chain),
        hypotheses=evaluate_hypotheses(joined, q=q, min_side=min_side, chain=chain),
        calibration=calibration_table(trades),
        brier=brier_scores(trades),
        q=float(q),
        min_side=int(min_side),
    )


def _method(result: ForensicsResult) -> dict:
    return {
        "sample": (
            "Each hypothesis is tested on the agent's chain of non-overlapping 24 h trades (the first "
            "trade, then each first trade entering at or after the previous one's exit)."
        ),
        "loss": "A loss is a trade with net_bps < 0; a hit one with net_bps > 0.",
        "min_side": (
            f"Verdict 'not enough data' when either compared side has fewer than {result.min_side} "
            "chain trades."
        ),
        "tests": dict(TESTS),
        "correction": (
            "Benjamini-Yekutieli across every agent and hypothesis with a p-value "
            f"(scipy.stats.false_discovery_control, method 'by'); 'supported' when the adjusted p <= "
            f"{result.q}."
        ),
        "calibration": (
            "Descriptive, on all matured trades with a confidence: buckets "
            + ", ".join(BUCKET_LABELS)
            + "; hit rate and mean stated confidence per bucket (empty buckets omitted)."
        ),
        "brier": "Mean of (confidence - hit)^2 over the agent's matured trades with a confidence.",
        "worst_runs": (
            "The worst matured 24 h trades by net_bps, ties in time order; the run's telemetry is under "
            "'telemetry' and never overwrites a trade field."
        ),
    }


def _telemetry_entry(row: dict) -> dict | None:
    values = {k[len(TELEMETRY_PREFIX) :]: v for k, v in row.items() if k.startswith(TELEMETRY_PREFIX)}
    if all(v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NaT for v in values.values()):
        return None
    return values


def forensics_json(result: ForensicsResult, generated_at, horizon_hours: int = 24) -> dict:
    """The content of ``meta_supervisor/research/failure_forensics.json`` (docs/rules.md, *File
    contract*), JSON-safe: NaN and ±inf are null, times ISO-8601 UTC with ``Z``.

    Shape::

        {"generated_at": str, "horizon_hours": int,
         "worst_runs": [{trade fields..., "realized_pnl_bps", "net_pnl_bps",   # the app's names
                         "telemetry": {"latency_ms", "tokens_in", ...} | null}],
         "by_agent": [{"agent", "loss_count", "avg_loss_bps", "median_latency_ms", "median_tokens",
                       "error_rate", "example_runs": [run_id, ...], "why_we_lost_hypotheses": [str],
                       "trades", "chain_trades", "brier",
                       "hypotheses": [{"hypothesis", "test", "effect", "effect_size", "p_value",
                                       "p_adjusted", "n_left", "n_right", "verdict"}]}],
         "hypotheses": [{"agent", ...same fields}],          # the flat fleet table
         "calibration": [{"agent", "bucket", "bucket_low", "bucket_high", "count", "hit_rate",
                          "mean_confidence"}],                # non-empty buckets only
         "method": {...}}

    Parameters
    ----------
    result : from :func:`run_forensics`.
    generated_at : the report's time (datetime or ISO string).
    horizon_hours : the trades' horizon, 24.
    """
    worst = []
    for row in result.worst_runs.to_dict(orient="records"):
        entry = {k: v for k, v in row.items() if not str(k).startswith(TELEMETRY_PREFIX)}
        if "gross_bps" in entry:
            entry["realized_pnl_bps"] = entry["gross_bps"]
        if "net_bps" in entry:
            entry["net_pnl_bps"] = entry["net_bps"]
        entry["telemetry"] = _telemetry_entry(row)
        worst.append(entry)

    hyp = result.hypotheses
    flat = hyp.to_dict(orient="records")
    nested: dict[str, list[dict]] = {}
    supported: dict[str, list[str]] = {}
    for record in flat:
        agent = record["agent"]
        nested.setdefault(agent, []).append({k: v for k, v in record.items() if k != "agent"})
        if record["verdict"] == SUPPORTED:
            supported.setdefault(agent, []).append(f"{record['hypothesis']}: {record['effect']}")
    brier = result.brier["brier"]
    by_agent = []
    for row in result.by_agent.to_dict(orient="records"):
        agent = row["agent"]
        row["why_we_lost_hypotheses"] = supported.get(agent, [])
        row["brier"] = brier.get(agent, np.nan)
        row["hypotheses"] = nested.get(agent, [])
        by_agent.append(row)

    calibration = result.calibration[result.calibration["count"] > 0]
    document = {
        "generated_at": generated_at,
        "horizon_hours": horizon_hours,
        "worst_runs": worst,
        "by_agent": by_agent,
        "hypotheses": flat,
        "calibration": calibration,
        "method": _method(result) | {"hypotheses": list(HYPOTHESES)},
    }
    return json_safe(document)
