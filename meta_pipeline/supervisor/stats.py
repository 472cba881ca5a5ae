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

Agents are grouped by integer codes (a categorical's own codes, ranked by name), never by hashing a
million strings. Counts come from ``np.bincount``; float sums and variances from pandas' groupby
kernels on those codes (compensated sums, Welford's variance), so sums, means and variances are, to
the last bit, those of a ``groupby("agent")`` on the names. :func:`agent_stats` reads and checks the trades once
for the trade figures and the significance.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from meta_pipeline.supervisor import portfolio, significance

TRADE_COLUMNS = ["trades", "pnl_sum_bps", "hit_rate", "mean_bps", "std_bps", "worst_trade_bps"]
RUN_COLUMNS = ["runs", "error_runs", "error_rate", "avg_latency_ms", "p95_latency_ms", "cost_usd"]


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
    agent = agent_category(frame["agent"])
    mapping = {str(k): pd.Timestamp(v) for k, v in since.items()}
    if isinstance(frame["ts"].dtype, pd.DatetimeTZDtype):  # one start per agent, then per row by code
        by_agent = pd.Series(np.asarray(agent.cat.categories, dtype=object)).map(mapping)
        by_agent = pd.to_datetime(by_agent.astype(object), utc=True).dt.as_unit("ns")
        nat = np.iinfo(np.int64).min
        start = np.append(by_agent.to_numpy(dtype="datetime64[ns]").view(np.int64), nat)
        start = start[agent.cat.codes.to_numpy()]  # code −1 (no agent) → NaT: kept
        ts = frame["ts"].dt.tz_convert("UTC").dt.as_unit("ns").to_numpy(dtype="datetime64[ns]").view(np.int64)
        return frame[(start == nat) | ((ts >= start) & (ts != nat))]
    start = agent.map(mapping)
    start = pd.to_datetime(start.astype(object), utc=True)
    keep = (
        start.isna().to_numpy()
        | (frame["ts"] >= start.fillna(pd.Timestamp.min.tz_localize("UTC"))).to_numpy()
    )
    return frame[keep]


def _agent_codes(values: pd.Series) -> tuple[np.ndarray, pd.Index, np.ndarray]:
    """The agents of ``values`` as text, coded without hashing the rows.

    Returns ``codes`` (int64, aligned with ``values``, −1 where missing), ``labels`` (the distinct
    names present, str, sorted by code point as pandas sorts text; ``codes`` index them) and
    ``factorized`` (a permutation of the labels: the order ``pd.factorize(values, sort=True)`` gives
    them, a categorical's category order).
    """
    if not isinstance(values.dtype, pd.CategoricalDtype):
        values = agent_category(values)
    codes = values.cat.codes.to_numpy().astype(np.int64)
    categories = values.cat.categories
    text = categories if categories.inferred_type in ("string", "empty") else categories.astype(str)
    used = np.flatnonzero(np.bincount(codes[codes >= 0], minlength=len(categories)))
    rank = portfolio._dense_text_rank(pd.Series(text[used]))  # equal text → one agent
    distinct, first = np.unique(rank, return_index=True)
    code_of_category = np.full(len(categories) + 1, -1, dtype=np.int64)  # code −1 (missing) stays −1
    code_of_category[used] = np.searchsorted(distinct, rank)
    labels = pd.Index(np.asarray(text[used[first]], dtype=object), name="agent").astype(str)
    return code_of_category[codes], labels, np.argsort(used[first])


def _grouper(codes: np.ndarray, k: int) -> pd.Categorical:
    """Codes in [0, k) as a groupby key pandas takes as is (no hash of the rows; with ``sort=True``
    and ``observed=False`` the groups are 0 … k − 1 in that order)."""
    return pd.Categorical.from_codes(codes, categories=pd.RangeIndex(k))


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
    return _trade_stats(trades, *_agent_codes(trades["agent"])[:2])[0]


def _trade_stats(trades: pd.DataFrame, codes: np.ndarray, labels: pd.Index) -> tuple[pd.DataFrame, dict]:
    """:func:`trade_stats` of a non-empty frame whose agents are ``codes`` into ``labels``, and the
    columns it read and checked (arrays aligned with the rows), for the significance."""
    net = trades["net_bps"].to_numpy(dtype="float64")
    # checked in the order portfolio_breakdown and bias_timing_split check them
    portfolio._check_columns(trades, ("agent",))
    x = portfolio._net_bps(trades)
    exit_ns = portfolio.utc_ns(trades["exit_ts"], name="exit_ts")
    ts_ns = portfolio.utc_ns(trades["ts"], name="ts")
    significance._require(trades, ("agent", "instrument", "direction", "gross_bps"))
    if (codes < 0).any():
        raise ValueError("column 'agent' has missing values")
    k = len(labels)
    # per agent in row order, as pandas sums (compensated; its mean is that sum ÷ count) and takes
    # the variance (Welford)
    grouped = pd.Series(net).groupby(_grouper(codes, k), observed=False, sort=True)
    count = np.bincount(codes, minlength=k)
    pnl = grouped.sum().to_numpy()
    table = pd.DataFrame(
        {
            "trades": count.astype(np.int64),
            "pnl_sum_bps": pnl,
            "hit_rate": np.bincount(codes, weights=net > 0, minlength=k) / count,
            "mean_bps": pnl / count,
            "std_bps": grouped.std(ddof=1).to_numpy(),
            "worst_trade_bps": grouped.min().to_numpy(),
        },
        index=labels,
    )
    # the portfolio's drawdown of each agent's trades: by agent, then in time order, i.e. each
    # agent's rows in the order the whole frame's time order has them, without settling the ties
    # of the whole fleet (text tie-breaks only within an agent)
    order = portfolio._sorted_rows(
        exit_ns, ts_ns, lambda tied: portfolio._text_ranks(trades, tied), group=codes, n_groups=k
    )
    table["max_drawdown_bps"] = portfolio._group_max_drawdown(x[order], codes[order], k)
    instrument_codes, n_instruments = significance._group_of(trades["instrument"])
    d = significance._direction(trades["direction"])
    gross = significance._finite(trades["gross_bps"])
    for column, values in significance._bias_timing(
        codes, k, instrument_codes, n_instruments, d, gross
    ).items():
        table[column] = values
    read = {"instrument_codes": instrument_codes, "n_instruments": n_instruments, "d": d, "gross": gross}
    return table, {**read, "net": x}


def run_stats(runs: pd.DataFrame) -> pd.DataFrame:
    """Per agent, over **all** its telemetry runs (with or without a signal): ``runs``,
    ``error_runs`` (runs with ``errors > 0``), ``error_rate`` (error runs ÷ runs whose ``errors`` is
    readable; NaN when none is), ``avg_latency_ms`` and ``p95_latency_ms`` (over runs that reported
    one, ms), ``cost_usd`` (total, USD)."""
    if runs.empty:
        return pd.DataFrame(columns=RUN_COLUMNS, index=pd.Index([], name="agent"))
    return _run_stats(runs, *_agent_codes(runs["agent"])[:2])


def _run_stats(runs: pd.DataFrame, codes: np.ndarray, labels: pd.Index) -> pd.DataFrame:
    """:func:`run_stats` of a non-empty frame whose agents are ``codes`` into ``labels``."""
    errors = runs["errors"].to_numpy(dtype="float64")
    latency = runs["latency_ms"].to_numpy(dtype="float64")
    cost = runs["cost_usd"].to_numpy(dtype="float64")
    if (codes < 0).any():  # a run without agent counts nowhere
        keep = codes >= 0
        codes, errors, latency, cost = codes[keep], errors[keep], latency[keep], cost[keep]
    k = len(labels)
    count = np.bincount(codes, minlength=k)
    readable = np.bincount(codes, weights=~np.isnan(errors), minlength=k)
    failed = np.bincount(codes, weights=errors > 0, minlength=k).astype(np.int64)
    # sums as pandas computes them (compensated, NaN skipped; 0 when nothing is summed), and the
    # mean as pandas' groupby mean is: that sum ÷ the count of values
    sums = (
        pd.DataFrame({"latency": latency, "cost": cost})
        .groupby(_grouper(codes, k), observed=False, sort=True)
        .sum()
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        error_rate = failed / np.where(readable > 0, readable, np.nan)
        avg_latency = sums["latency"].to_numpy() / np.bincount(codes, weights=~np.isnan(latency), minlength=k)
    return pd.DataFrame(
        {
            "runs": count.astype(np.int64),
            "error_runs": failed,
            "error_rate": error_rate,
            "avg_latency_ms": avg_latency,
            "p95_latency_ms": _quantile_by_code(codes, k, latency, 0.95),
            "cost_usd": sums["cost"].to_numpy(),
        },
        index=labels,
    )


def _quantile_by_code(codes: np.ndarray, k: int, values: np.ndarray, q: float) -> np.ndarray:
    """Per code in [0, k), the ``q`` quantile of ``values`` ignoring NaN, with linear interpolation
    (pandas' and numpy's default); NaN for a code without a value. One argsort of the values and one
    sort of (code, rank) packed in an int64, instead of a Python call per group."""
    keep = ~np.isnan(values)
    if not keep.all():
        codes, values = codes[keep], values[keep]
    n = len(values)
    order = np.argsort(values)  # equal values are interchangeable: no need for a stable sort
    row_bits = max(1, (n - 1).bit_length())
    if max(1, (k - 1).bit_length()) + row_bits <= 63:
        # then by code: one np.sort of (code, rank of the value) packed in an int64
        key = np.empty(n, dtype=np.int64)
        key[order] = np.arange(n, dtype=np.int64)
        key |= codes << row_bits
        key.sort()
        key &= (1 << row_bits) - 1
        values = values[order[key]]
    else:
        values = values[order[np.argsort(codes[order], kind="stable")]]
    counts = np.bincount(codes, minlength=k)
    starts = np.cumsum(counts) - counts
    position = (counts - 1) * q
    lower = np.floor(position).astype(np.int64)
    frac = position - lower
    out = np.full(k, np.nan)
    has = counts > 0
    low = values[starts[has] + lower[has]]
    high = values[starts[has] + np.minimum(lower[has] + 1, counts[has] - 1)]
    out[has] = low + (high - low) * frac[has]
    return out


def _agent_names(frame: pd.DataFrame, coded: tuple | None) -> pd.Index:
    """The distinct ``agent`` of ``frame`` as text (str Index), a missing one as NaN; from
    ``coded`` (:func:`_agent_codes` of the frame) when given."""
    if coded is not None and not (coded[0] < 0).any():
        return coded[1].rename(None)
    return pd.Index(frame["agent"].astype(str).unique())


def _significance(
    trades: pd.DataFrame,
    codes: np.ndarray,
    labels: pd.Index,
    factorized: np.ndarray,
    read: dict,
    n_trials: int | None,
    prob: float,
) -> pd.DataFrame:
    """:func:`meta_pipeline.supervisor.significance.significance_by_agent` of the trades that
    :func:`_trade_stats` has read and checked, indexed by ``labels`` (same figures)."""
    significance._require(trades, ("run_id", "ts", "exit_ts"))
    if not 0.0 < prob < 1.0:
        raise ValueError(f"prob must be in (0, 1), got {prob}")
    k = len(labels)
    if n_trials is None:
        n_trials = k
    elif n_trials < max(k, 1):
        raise ValueError(f"n_trials={n_trials} is below the {k} agent(s) in the trades frame")
    ts, exit_ts = significance._ns(trades["ts"]), significance._ns(trades["exit_ts"])
    mask = significance._chain(codes, k, ts, exit_ts, trades["run_id"])
    columns = significance._significance(
        codes,
        k,
        mask,
        read["instrument_codes"],
        read["n_instruments"],
        read["d"],
        read["gross"],
        read["net"],
        n_trials=n_trials,
        prob=prob,
        agent_order=factorized,  # the variance across agents sums them as significance_by_agent does
    )
    columns["psr_reason"] = pd.Series(columns["psr_reason"], index=labels, dtype=object)
    return pd.DataFrame(columns, index=labels)


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
    all_trades, all_runs = trades, runs
    coded = _agent_codes(trades["agent"]) if len(trades) else None
    coded_runs = _agent_codes(runs["agent"]) if len(runs) else None
    agents = _agent_names(trades, coded).union(_agent_names(runs, coded_runs))
    trades = since_filter(trades, since)
    runs = since_filter(runs, since)
    # an agent revived with nothing since keeps its row (0 trades), it does not vanish
    if trades.empty:
        by_trades = trade_stats(trades)
    else:
        codes, labels, factorized = coded if trades is all_trades else _agent_codes(trades["agent"])
        by_trades, read = _trade_stats(trades, codes, labels)
    same_runs = runs is all_runs and not runs.empty
    by_runs = _run_stats(runs, *coded_runs[:2]) if same_runs else run_stats(runs)
    sig = None
    if not trades.empty:
        sig = _significance(trades, codes, labels, factorized, read, n_trials, psr_probability)
    return assemble_table(by_trades, by_runs, sig, agents)


def assemble_table(
    by_trades: pd.DataFrame, by_runs: pd.DataFrame, sig: pd.DataFrame | None, agents: pd.Index
) -> pd.DataFrame:
    """The agent table from its parts — trade figures, run figures, significance (None: no trades) —
    joined on ``agents``, with the counts filled and typed; shared by :func:`agent_stats` and the
    ledger (``meta_pipeline.supervisor.ledger``), so both give the same columns and dtypes."""
    table = by_trades.join(by_runs, how="outer").reindex(agents.rename("agent"))
    if sig is not None:
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
