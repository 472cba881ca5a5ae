"""Why an agent lost: five hypotheses tested on the agent's own trades (docs/rules.md, *Forensics and
the LP email*).

The app printed the same "why we lost" strings for every agent. Here each agent's losses are tested
for five causes, on its own matured 24 h trades, and a cause is reported only when the data support it
after a correction across the whole fleet.

Inputs
------
The supervisor's trades frame (one row per matured 24 h trade, any row order): ``agent``, ``run_id``,
``ts`` and ``exit_ts`` (UTC), ``net_bps`` (bps), ``regime`` (text or missing), ``confidence`` (0..1 or
NaN), joined with the telemetry of each trade's run by :func:`join_telemetry` (new columns prefixed
``tel_``: ``tel_latency_ms`` in ms, ``tel_tokens_in``, ``tel_tokens_out``, ``tel_cost_usd`` in USD,
``tel_errors``, ...), and for the volatility hypothesis the columns ``vol_1h_before_entry`` and
``vol_30d_median`` (:func:`entry_volatility`). A missing column makes its hypothesis ``not enough
data``; it never raises.

Definitions shared by every hypothesis
--------------------------------------
* A **loss** is a trade with ``net_bps < 0``; a **hit** one with ``net_bps > 0`` (a trade at exactly
  0 is neither, as for the hit rate of docs/rules.md, *Per-agent statistics*).
* **Effective sample**: the agent's chain of non-overlapping trades
  (:func:`meta_pipeline.supervisor.significance.chain_mask`). Trades opened every 30 minutes and held
  24 h share most of their price path; a test that counted them as independent would find "causes"
  in noise (the simulation in the tests measures how often).
* Each test compares a **left** and a **right** side of the agent's chain trades. The verdict is
  ``not enough data`` when either side has fewer than ``min_side`` (10) trades; its p-value is then
  NaN and it takes no part in the correction.
* **Fleet correction**: Benjamini & Yekutieli (2001), "The control of the false discovery rate in
  multiple testing under dependency", Annals of Statistics 29(4) — valid under any dependence between
  the tests (agents trading one symbol share its prices and regimes) — through
  ``scipy.stats.false_discovery_control(p, method="by")`` over every p-value of every agent and
  hypothesis. Verdict ``supported`` when the adjusted p ≤ q (0.05), else ``not supported``.
* ``effect_size`` is signed so that a positive value points the way of the hypothesis.

The hypotheses (left side first; one-sided tests in the direction of the cause)
-------------------------------------------------------------------------------
1. ``regime_mismatch`` — for each regime R of the agent: losses in R vs in its other regimes, Fisher's
   exact test, one-sided (the loss rate in R is greater). The worst regime (smallest p) is reported,
   and since it was picked out of k tested regimes its p-value is multiplied by k (Bonferroni, capped
   at 1): the minimum of k p-values is not a p-value. Trades without a regime take no part.
   effect_size = loss rate in R − loss rate elsewhere.
2. ``latency`` — the slowest quarter of runs (``tel_latency_ms`` ≥ the 0.75 quantile, linear
   interpolation, of the agent's chain trades with a latency) vs the rest. Primary test: **Fisher's
   exact test on the loss rate**, one-sided (slow runs lose more often). Chosen over a Mann–Whitney
   test of the bps because the question is "why did it lose", because it is the same test as the
   regime's, and because a loss count is not moved by one huge price move. The mean bps of each side
   is reported in the effect text. effect_size = loss rate slow − loss rate rest.
3. ``overconfidence`` — signals with confidence above the agent's median confidence (on its chain
   trades with a confidence) vs those at or below it. H1: the high-confidence hit rate is **lower**
   than the low-confidence one; Fisher's exact test, one-sided, on misses (``net_bps ≤ 0``, the
   complement of a hit). effect_size = hit rate low − hit rate high. The descriptive calibration
   table and Brier score are in :mod:`meta_pipeline.forensics.calibration`.
4. ``volatility_shock`` — the ratio ``vol_1h_before_entry / vol_30d_median`` of losses vs the other
   chain trades; Mann–Whitney U, one-sided (losses had the higher ratio). effect_size = rank-biserial
   correlation 2U/(n₁n₂) − 1 (Cureton 1956), in [−1, 1].
5. ``cost`` — tokens per run (``tel_tokens_in + tel_tokens_out``) of losses vs the other chain
   trades; Mann–Whitney U, one-sided (losing runs spent more); rank-biserial effect size. An agent
   whose runs report no tokens on enough trades is tested on ``tel_cost_usd`` instead (the effect text
   names the measure). Tokens come first because they measure the run's effort whatever the model's
   price, which changes over time.

Mann–Whitney p-values use the normal approximation with tie and continuity corrections, exactly as
``scipy.stats.mannwhitneyu(..., method="asymptotic")``; with 10 or more values a side this is also
what scipy's default ``method="auto"`` chooses. Fisher p-values are the hypergeometric tail
``scipy.stats.hypergeom.sf(a − 1, N, K, n)``, exactly ``scipy.stats.fisher_exact(...,
alternative="greater")``. Both are computed for every agent at once (no Python loop over agents).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control, hypergeom, norm

from meta_pipeline.supervisor.significance import chain_mask

__all__ = [
    "HYPOTHESES",
    "NOT_ENOUGH_DATA",
    "NOT_SUPPORTED",
    "RESULT_COLUMNS",
    "SUPPORTED",
    "TELEMETRY_FIELDS",
    "TELEMETRY_PREFIX",
    "TESTS",
    "VOL_1H",
    "VOL_30D",
    "agent_codes",
    "entry_volatility",
    "evaluate_hypotheses",
    "fisher_greater",
    "fleet_correction",
    "group_order",
    "group_quantile",
    "join_telemetry",
    "mann_whitney_greater",
]

HYPOTHESES = ("regime_mismatch", "latency", "overconfidence", "volatility_shock", "cost")
SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
NOT_ENOUGH_DATA = "not enough data"
RESULT_COLUMNS = (
    "agent",
    "hypothesis",
    "test",
    "effect",
    "effect_size",
    "p_value",
    "p_adjusted",
    "n_left",
    "n_right",
    "verdict",
)
TESTS = {
    "regime_mismatch": (
        "Fisher exact, one-sided: loss rate in the regime > in the agent's other regimes; worst of k "
        "regimes, p × k (Bonferroni)"
    ),
    "latency": "Fisher exact, one-sided: loss rate of the slowest quarter of runs > the rest",
    "overconfidence": "Fisher exact, one-sided: hit rate above the median confidence < at or below it",
    "volatility_shock": (
        "Mann-Whitney U, one-sided: vol_1h_before_entry / vol_30d_median higher before losses"
    ),
    "cost": "Mann-Whitney U, one-sided: losing runs used more tokens (cost_usd when no tokens)",
}

TELEMETRY_PREFIX = "tel_"
TELEMETRY_FIELDS = ("agent", "ts", "latency_ms", "tokens_in", "tokens_out", "errors", "cost_usd")
VOL_1H = "vol_1h_before_entry"
VOL_30D = "vol_30d_median"

_NS_PER_MINUTE = 60 * 10**9


# ------------------------------------------------------------------------------------------ inputs
def _label_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes (int64, −1 for a missing value) and the distinct labels they index, as text,
    sorted. Only the distinct values are turned into text (a categorical or pyarrow column is
    factorized without hashing Python strings); values that print alike are one label."""
    raw, uniques = pd.factorize(values)
    text = np.asarray([str(u) for u in np.asarray(uniques, dtype=object)], dtype=object)
    labels, remap = np.unique(text, return_inverse=True) if len(text) else (text, np.zeros(0, np.int64))
    codes = np.where(raw >= 0, remap.astype(np.int64)[np.maximum(raw, 0)] if len(remap) else -1, -1)
    return codes.astype(np.int64, copy=False), labels


def agent_codes(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Integer codes (int64, aligned with ``values``) and the agent names they index, sorted as text.

    Raises
    ------
    ValueError on a missing agent.
    """
    codes, labels = _label_codes(values)
    if len(codes) and codes.min() < 0:
        raise ValueError("column 'agent' has missing values")
    return codes, pd.Index(labels, dtype=object, name="agent")


def _column(trades: pd.DataFrame, name: str) -> np.ndarray:
    """A numeric column as float64; all NaN when the column is absent (its hypothesis lacks data)."""
    if name not in trades.columns:
        return np.full(len(trades), np.nan)
    return pd.to_numeric(trades[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def join_telemetry(
    trades: pd.DataFrame, runs: pd.DataFrame, *, prefix: str = TELEMETRY_PREFIX
) -> pd.DataFrame:
    """The trades with their run's telemetry in new columns ``prefix + field`` (docs/rules.md,
    *Inputs to every rule*: telemetry is joined by ``run_id`` and never overwrites a trade field).

    Parameters
    ----------
    trades : the trades frame (needs ``run_id``), any row order.
    runs : telemetry runs: ``run_id`` and any of ``agent``, ``ts`` (UTC), ``latency_ms`` (ms),
        ``tokens_in``, ``tokens_out``, ``errors`` (count, NaN when unreadable), ``cost_usd`` (USD);
        other columns are joined too. A ``run_id`` present twice counts once: the first by ``ts``
        (then row order), as :func:`meta_pipeline.supervisor.history.telemetry_runs` keeps it.

    Returns
    -------
    A new frame: every row and column of ``trades`` unchanged (same index), plus one column per
    telemetry field, ``tel_latency_ms`` etc. Each of :data:`TELEMETRY_FIELDS` is present (NaN / NaT /
    missing when the runs lack it); a trade whose run has no telemetry gets missing values.

    Raises
    ------
    KeyError when ``run_id`` is missing from either frame; ValueError when a prefixed name is already a
    column of ``trades`` (the join would overwrite it).
    """
    if "run_id" not in trades.columns or "run_id" not in runs.columns:
        raise KeyError("both trades and runs need a 'run_id' column")
    fields = [c for c in runs.columns if c != "run_id"]
    fields += [f for f in TELEMETRY_FIELDS if f not in fields]
    clash = [prefix + f for f in fields if prefix + f in trades.columns]
    if clash:
        raise ValueError(f"trades already have column(s) {clash}: telemetry would overwrite them")
    # One hash of every run id (runs and trades together, as text) instead of an index lookup: about
    # three times faster on millions of pyarrow-backed strings.
    run_text = runs["run_id"].astype(str)
    trade_ids = trades["run_id"]
    categorical = isinstance(trade_ids.dtype, pd.CategoricalDtype)  # hash each category once
    trade_text = pd.Series(trade_ids.cat.categories).astype(str) if categorical else trade_ids.astype(str)
    codes, uniques = pd.factorize(pd.concat([run_text, trade_text], ignore_index=True))
    trade_missing = np.zeros(len(trade_text), dtype=bool) if categorical else trade_ids.isna().to_numpy()
    codes[np.r_[runs["run_id"].isna().to_numpy(), trade_missing]] = -1  # a missing id matches nothing
    run_codes, trade_codes = codes[: len(runs)], codes[len(runs) :]
    if categorical:
        raw = trade_ids.cat.codes.to_numpy()
        trade_codes = np.where(raw >= 0, trade_codes[np.maximum(raw, 0)], -1)
    # a run id stored twice: its first row by ts, then row order
    order = np.arange(len(runs))
    if "ts" in runs.columns and len(runs):
        order = np.argsort(pd.DatetimeIndex(runs["ts"]).as_unit("ns").asi8, kind="stable")
    first_row = np.full(len(uniques) + 1, -1, dtype=np.int64)  # the last slot answers code −1
    present, first = np.unique(run_codes[order], return_index=True)
    keep = present >= 0
    first_row[present[keep]] = order[first[keep]]
    pos = first_row[trade_codes]
    found = pos >= 0
    new = {}
    for field in fields:
        if field in runs.columns:
            column = runs[field].reset_index(drop=True)
            taken = column.take(np.where(found, pos, 0)) if len(runs) else column.reindex(range(len(pos)))
            new[prefix + field] = taken.where(found).set_axis(trades.index)
        elif field == "ts":
            new[prefix + field] = pd.Series(pd.NaT, index=trades.index, dtype="datetime64[ns, UTC]")
        elif field == "agent":
            new[prefix + field] = pd.Series(None, index=trades.index, dtype=object)
        else:
            new[prefix + field] = pd.Series(np.nan, index=trades.index)
    return pd.concat([trades, pd.DataFrame(new, index=trades.index)], axis=1)


# -------------------------------------------------------------------------------------- volatility
def entry_volatility(
    bars: pd.DataFrame,
    trades: pd.DataFrame,
    *,
    min_returns: int = 30,
    min_hours: int = 24 * 7,
    baseline_days: int = 30,
) -> pd.DataFrame:
    """The volatility before each trade's entry and its symbol's usual level, from 1-minute bars.

    * ``vol_1h_before_entry``: standard deviation (ddof=1) of the 1-minute log returns
      ln(close_k / close_{k−1}) of the bars that **closed by the entry**: the 60 bars opening in
      [m − 60 min, m − 1 min], m = ``ts`` floored to the minute. A return needs the bar of the minute
      before (a gap breaks it). NaN when fewer than ``min_returns`` returns are available.
    * ``vol_30d_median``: the median, over the whole hours H of the trailing ``baseline_days`` (30)
      days — H_e − 30 days < H ≤ H_e, H_e = ``ts`` floored to the hour — of the same 1-hour figure
      computed on the bars opening in [H − 60 min, H − 1 min]; hours without a figure are skipped.
      NaN when fewer than ``min_hours`` (168, one week) hours have one.

    Both are per-minute log-return volatilities (dimensionless); only their ratio is used. Nothing after
    the entry is read. Vectorized: each instrument's bars are laid on a dense minute grid and windows
    are differences of cumulative sums (count, Σr, Σr²); the rolling median is pandas' (one call per
    instrument, of which there are few).

    Parameters
    ----------
    bars : 1-minute bars with ``instrument``, ``open_time`` (datetime64, UTC; naive read as UTC) and
        ``close`` (price > 0); any row order; a duplicated (instrument, open_time) keeps its first row.
        Only the bars up to each entry and its 30 days before are needed.
    trades : frame with ``instrument`` and ``ts`` (UTC).

    Returns
    -------
    DataFrame with the index of ``trades`` and float columns ``vol_1h_before_entry``,
    ``vol_30d_median``; NaN where the bars are missing (the volatility hypothesis then lacks data).

    Raises
    ------
    KeyError when a column is missing.
    """
    for frame, columns in ((bars, ("instrument", "open_time", "close")), (trades, ("instrument", "ts"))):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise KeyError(f"missing column(s) {missing}")
    out_1h = np.full(len(trades), np.nan)
    out_base = np.full(len(trades), np.nan)
    if len(bars) and len(trades):
        open_time = pd.DatetimeIndex(bars["open_time"])
        minute = open_time.as_unit("ns").asi8 // _NS_PER_MINUTE
        bar_valid = ~open_time.isna()
        close = pd.to_numeric(bars["close"], errors="coerce").to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            log_close = np.where(close > 0, np.log(close), np.nan)
        ts = pd.DatetimeIndex(trades["ts"])
        entry_minute = np.floor_divide(ts.as_unit("ns").asi8, _NS_PER_MINUTE)
        entry_valid = ~ts.isna()
        # instruments are few: factorize each side, then match the distinct names as text
        codes, instruments = pd.factorize(bars["instrument"])
        raw_code, trade_instruments = pd.factorize(trades["instrument"])
        at = pd.Index(np.asarray(instruments).astype(str)).get_indexer(
            np.asarray(trade_instruments).astype(str)
        )
        trade_code = np.where(raw_code >= 0, at[np.maximum(raw_code, 0)] if len(at) else -1, -1)
        for s in range(len(instruments)):
            rows = np.flatnonzero(trade_code == s)
            rows = rows[entry_valid[rows]]
            if rows.size == 0:
                continue
            # only the bars the windows can reach: a stray old bar must not stretch the minute grid
            first_needed = entry_minute[rows].min() - 60 * (24 * baseline_days + 1) - 1
            mine = (codes == s) & bar_valid & (minute >= first_needed) & (minute < entry_minute[rows].max())
            if not mine.any():
                continue
            vol_1h, base = _instrument_volatility(
                minute[mine],
                log_close[mine],
                entry_minute[rows],
                min_returns=min_returns,
                min_hours=min_hours,
                baseline_hours=24 * baseline_days,
            )
            out_1h[rows], out_base[rows] = vol_1h, base
    return pd.DataFrame({VOL_1H: out_1h, VOL_30D: out_base}, index=trades.index)


def _instrument_volatility(minute, log_close, entry_minute, *, min_returns, min_hours, baseline_hours):
    """1-hour volatility before each entry minute and its trailing median, for one instrument's bars."""
    order = np.argsort(minute, kind="stable")
    minute, log_close = minute[order], log_close[order]
    keep = np.r_[True, minute[1:] != minute[:-1]]  # the first row of a duplicated open time
    minute, log_close = minute[keep], log_close[keep]
    m0 = minute[0]
    size = int(minute[-1] - m0 + 1)
    dense = np.full(size, np.nan)
    dense[minute - m0] = log_close
    r = np.full(size, np.nan)
    r[1:] = dense[1:] - dense[:-1]  # NaN unless both minutes have a bar
    ok = np.isfinite(r)
    r0 = np.where(ok, r, 0.0)
    c0 = np.concatenate([[0], np.cumsum(ok)])
    c1 = np.concatenate([[0.0], np.cumsum(r0)])
    c2 = np.concatenate([[0.0], np.cumsum(r0 * r0)])

    def window_std(end_minute: np.ndarray) -> np.ndarray:
        # bars opening in [end − 60, end − 1], as dense positions [lo, hi)
        lo = np.clip(end_minute - 60 - m0, 0, size)
        hi = np.clip(end_minute - m0, 0, size)
        n = (c0[hi] - c0[lo]).astype(np.float64)
        s1 = c1[hi] - c1[lo]
        s2 = c2[hi] - c2[lo]
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.maximum(s2 - s1 * s1 / n, 0.0) / (n - 1.0)
        return np.where(n >= max(min_returns, 2), np.sqrt(var), np.nan)

    vol_1h = window_std(entry_minute)
    # The hourly figures on every whole hour from the first bar's to the last entry's (at most one
    # baseline past the last bar: later windows hold no bar). Hours without bars give NaN, which the
    # rolling median skips and min_periods counts out.
    h_first = -(-m0 // 60)
    entry_hour = np.floor_divide(entry_minute, 60)
    h_last = min(int(entry_hour.max()), int(minute[-1] // 60) + 1 + baseline_hours)
    base = np.full(len(entry_minute), np.nan)
    if h_last >= h_first:
        hours = np.arange(h_first, h_last + 1)
        hourly = window_std(hours * 60)
        median = pd.Series(hourly).rolling(baseline_hours, min_periods=max(min_hours, 1)).median().to_numpy()
        at = entry_hour - h_first  # the last whole hour at or before the entry
        inside = (at >= 0) & (at < len(hours))
        base[inside] = median[at[inside]]
    return vol_1h, base


# ------------------------------------------------------------------------------------------- tests
def fisher_greater(k_left, n_left, k_total, n_total):
    """One-sided Fisher exact p-value that the left side has the higher rate, vectorized.

    For the 2×2 table [[k_left, n_left − k_left], [k_total − k_left, n_total − n_left − k_total +
    k_left]]: P(X ≥ k_left) with X hypergeometric (population ``n_total``, ``k_total`` events,
    ``n_left`` draws), i.e. ``scipy.stats.hypergeom.sf(k_left − 1, n_total, k_total, n_left)``, which is
    ``scipy.stats.fisher_exact(table, alternative="greater")`` (Fisher 1935, *The Design of
    Experiments*).

    Parameters
    ----------
    k_left, n_left, k_total, n_total : integer arrays (or scalars) broadcast together.

    Returns
    -------
    float array (or float) in [0, 1].
    """
    k_left, n_left, k_total, n_total = (
        np.asarray(v, dtype=np.int64) for v in (k_left, n_left, k_total, n_total)
    )
    p = hypergeom.sf(k_left - 1, n_total, k_total, n_left)
    return np.clip(p, 0.0, 1.0)


def mann_whitney_greater(codes: np.ndarray, values: np.ndarray, left: np.ndarray, n_groups: int) -> dict:
    """One-sided Mann–Whitney U test per group (left values stochastically greater), vectorized.

    Mann & Whitney (1947), "On a test of whether one of two random variables is stochastically larger
    than the other", Ann. Math. Statist. 18(1). Per group: pooled average ranks (ties share the mean
    rank), U₁ = R₁ − n₁(n₁ + 1)/2, and the normal approximation with tie and continuity corrections

        z = (U₁ − n₁n₂/2 − 0.5) / √(n₁n₂/12 · ((n + 1) − Σ(t³ − t) / (n(n − 1)))),   p = 1 − Φ(z),

    the same numbers as ``scipy.stats.mannwhitneyu(x, y, alternative="greater", method="asymptotic")``.
    One lexsort of all values by (group, value) serves every group.

    Parameters
    ----------
    codes : int array, shape (n,), group of each value in [0, n_groups).
    values : float array, shape (n,), finite.
    left : bool array, shape (n,), True for the left sample.
    n_groups : number of groups.

    Returns
    -------
    dict of float arrays, shape (n_groups,): ``n_left``, ``n_right``, ``u`` (U₁), ``effect``
    (rank-biserial 2U₁/(n₁n₂) − 1), ``p`` (NaN when a side is empty; 1 when every value ties),
    ``median_left``, ``median_right`` (NaN for an empty side).
    """
    codes = np.asarray(codes, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    left = np.asarray(left, dtype=bool)
    order = group_order(codes, values, n_groups)
    c, v, lf = codes[order], values[order], left[order]
    counts = np.bincount(c, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    n = len(v)
    pos = np.arange(n, dtype=np.int64) - starts[c]
    new = np.ones(n, dtype=bool)
    if n > 1:
        new[1:] = (c[1:] != c[:-1]) | (v[1:] != v[:-1])
    run = np.cumsum(new) - 1
    run_len = np.bincount(run).astype(np.float64) if n else np.zeros(0)
    rank = pos[new][run] + (run_len[run] + 1.0) / 2.0  # 1-based average rank within the group
    n1 = np.bincount(c, weights=lf, minlength=n_groups).astype(np.float64)
    n2 = counts - n1
    r1 = np.bincount(c, weights=np.where(lf, rank, 0.0), minlength=n_groups)
    tie = np.bincount(c[new], weights=run_len**3 - run_len, minlength=n_groups)
    u1 = r1 - n1 * (n1 + 1.0) / 2.0
    total = n1 + n2
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.sqrt(n1 * n2 / 12.0 * ((total + 1.0) - tie / (total * (total - 1.0))))
        z = (u1 - n1 * n2 / 2.0 - 0.5) / s
        effect = 2.0 * u1 / (n1 * n2) - 1.0
    p = norm.sf(z)
    p[(n1 == 0) | (n2 == 0)] = np.nan
    return {
        "n_left": n1,
        "n_right": n2,
        "u": u1,
        "effect": effect,
        "p": np.clip(p, 0.0, 1.0),
        # each side's values stay sorted by (group, value) when picked out of the pooled order
        "median_left": _sorted_quantile(c[lf], v[lf], n_groups, 0.5),
        "median_right": _sorted_quantile(c[~lf], v[~lf], n_groups, 0.5),
    }


def fleet_correction(p_values, q: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini–Yekutieli adjusted p-values over the finite entries of ``p_values`` and the verdicts.

    ``scipy.stats.false_discovery_control(p, method="by")`` (Benjamini & Yekutieli 2001): controls the
    false discovery rate at q under any dependence between the tests. NaN p-values (not enough data)
    are not tests: they stay NaN and do not count in m.

    Returns
    -------
    (p_adjusted, verdict): float array and object array of ``supported`` (adjusted ≤ q),
    ``not supported`` or ``not enough data`` (NaN p), both shaped like ``p_values``.

    Raises
    ------
    ValueError when q is outside (0, 1) or a p-value outside [0, 1].
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q}")
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    tested = np.isfinite(p)
    if tested.any():
        adjusted[tested] = false_discovery_control(p[tested], method="by")
    verdict = np.full(p.shape, NOT_ENOUGH_DATA, dtype=object)
    verdict[tested] = np.where(adjusted[tested] <= q, SUPPORTED, NOT_SUPPORTED)
    return adjusted, verdict


# ---------------------------------------------------------------------------------------- helpers
def group_order(codes: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Positions that sort by (group, value): a quicksort of the values, then a stable sort of the
    groups — numpy's radix sort when the codes fit 16 bits (three times faster than a lexsort)."""
    order = np.argsort(values)
    groups = codes[order]
    if n_groups <= 1 << 16:
        groups = groups.astype(np.uint16)
    return order[np.argsort(groups, kind="stable")]


def group_quantile(codes: np.ndarray, values: np.ndarray, n_groups: int, q: float) -> np.ndarray:
    """Per-group q-quantile of finite ``values`` (linear interpolation, numpy's default); NaN for an
    empty group. One sort for every group.

    Parameters
    ----------
    codes : int array, shape (n,), group of each value in [0, n_groups).
    values : float array, shape (n,), finite.
    n_groups : number of groups.
    q : quantile in [0, 1].

    Returns
    -------
    float array, shape (n_groups,).
    """
    order = group_order(codes, values, n_groups)
    return _sorted_quantile(codes[order], values[order], n_groups, q)


def _sorted_quantile(c: np.ndarray, v: np.ndarray, n_groups: int, q: float) -> np.ndarray:
    """:func:`group_quantile` of values already sorted by (group, value)."""
    counts = np.bincount(c, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    position = (counts - 1) * q
    lower = np.floor(position).astype(np.int64)
    frac = position - lower
    out = np.full(n_groups, np.nan)
    has = counts > 0
    low = v[starts[has] + lower[has]]
    high = v[starts[has] + np.minimum(lower[has] + 1, counts[has] - 1)]
    out[has] = low + (high - low) * frac[has]
    return out


def _counts(codes, mask, n_groups):
    return np.bincount(codes[mask], minlength=n_groups).astype(np.int64)


def _rate(k, n):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, k / np.maximum(n, 1), np.nan)


def _fmt(value: float, spec: str) -> str:
    return "n/a" if not np.isfinite(value) else format(value, spec)


def _fisher_block(k_left, n_left, k_right, n_right, need):
    """p-values of a two-sided split (NaN where a side is below ``need``) and the enough-data mask."""
    enough = (n_left >= need) & (n_right >= need)
    p = np.full(len(n_left), np.nan)
    if enough.any():
        p[enough] = fisher_greater(
            k_left[enough], n_left[enough], (k_left + k_right)[enough], (n_left + n_right)[enough]
        )
    return p, enough


def _short_of_data(n_left, n_right, unit, left_name, right_name, need):
    return (
        f"{int(n_left)} {unit} {left_name} vs {int(n_right)} {right_name}; "
        f"at least {need} needed on each side"
    )


# ------------------------------------------------------------------------------------ hypotheses
def _regime(codes, n_agents, trades, rows, loss, need, unit):
    if "regime" in trades.columns:
        regime = trades["regime"].iloc[rows]
        labelled = regime.notna().to_numpy()
    else:
        regime, labelled = None, np.zeros(len(rows), dtype=bool)
    effect = np.full(n_agents, "no regime label on the agent's trades", dtype=object)
    out = {k: np.full(n_agents, np.nan) for k in ("effect_size", "p_value")}
    out["n_left"] = np.zeros(n_agents, dtype=np.int64)
    out["n_right"] = np.zeros(n_agents, dtype=np.int64)
    if not labelled.any():
        out["effect"] = effect
        return out
    r_codes, r_labels = _label_codes(regime[labelled])
    n_reg = len(r_labels)
    cell = codes[labelled] * n_reg + r_codes
    n_ar = np.bincount(cell, minlength=n_agents * n_reg).reshape(n_agents, n_reg)
    k_ar = np.bincount(cell, weights=loss[labelled], minlength=n_agents * n_reg).reshape(n_agents, n_reg)
    k_ar = k_ar.astype(np.int64)
    n_other = n_ar.sum(axis=1, keepdims=True) - n_ar
    k_other = k_ar.sum(axis=1, keepdims=True) - k_ar
    p, enough = _fisher_block(k_ar.ravel(), n_ar.ravel(), k_other.ravel(), n_other.ravel(), need)
    p, enough = p.reshape(n_agents, n_reg), enough.reshape(n_agents, n_reg)
    tested = enough.sum(axis=1)
    rate_in, rate_out = _rate(k_ar, n_ar), _rate(k_other, n_other)
    # the worst regime: smallest p, then the larger loss-rate gap, then the regime's name
    gap = np.where(enough, rate_in - rate_out, -np.inf)
    key = np.where(enough, p, np.inf)
    worst = np.lexsort((-gap, key), axis=1)[:, 0] if n_reg > 1 else np.zeros(n_agents, dtype=np.int64)
    # with no regime testable, describe the split closest to enough data
    fullest = np.argmax(np.minimum(n_ar, n_other), axis=1)
    pick = np.where(tested > 0, worst, fullest)
    a = np.arange(n_agents)
    has_label = n_ar.sum(axis=1) > 0
    out["n_left"] = n_ar[a, pick].astype(np.int64)
    out["n_right"] = n_other[a, pick].astype(np.int64)
    best_p = p[a, pick]
    out["p_value"] = np.where(tested > 0, np.minimum(1.0, best_p * tested), np.nan)
    out["effect_size"] = np.where(tested > 0, (rate_in - rate_out)[a, pick], np.nan)
    for i in np.flatnonzero(has_label):
        name = r_labels[pick[i]]
        if tested[i] > 0:
            effect[i] = (
                f"loss rate {rate_in[i, pick[i]]:.2f} in {name} vs {rate_out[i, pick[i]]:.2f} elsewhere "
                f"({k_ar[i, pick[i]]}/{n_ar[i, pick[i]]} vs {k_other[i, pick[i]]}/{n_other[i, pick[i]]} "
                f"{unit} lost; worst of {tested[i]} regime(s), raw p {best_p[i]:.3g})"
            )
        else:
            effect[i] = _short_of_data(
                n_ar[i, pick[i]], n_other[i, pick[i]], unit, f"in {name}", "in other regimes", need
            )
    out["effect"] = effect
    return out


def _latency(codes, n_agents, latency, loss, net, need, unit):
    ok = np.isfinite(latency)
    q75 = group_quantile(codes[ok], latency[ok], n_agents, 0.75)
    slow = ok & (latency >= q75[codes])
    rest = ok & ~slow
    n_l, n_r = _counts(codes, slow, n_agents), _counts(codes, rest, n_agents)
    k_l, k_r = _counts(codes, slow & loss, n_agents), _counts(codes, rest & loss, n_agents)
    p, enough = _fisher_block(k_l, n_l, k_r, n_r, need)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_l = np.bincount(codes[slow], weights=net[slow], minlength=n_agents) / n_l
        mean_r = np.bincount(codes[rest], weights=net[rest], minlength=n_agents) / n_r
    rl, rr = _rate(k_l, n_l), _rate(k_r, n_r)
    effect = np.empty(n_agents, dtype=object)
    for i in range(n_agents):
        if enough[i]:
            effect[i] = (
                f"loss rate {rl[i]:.2f} on the slowest quarter of runs (latency ≥ {q75[i]:.0f} ms) vs "
                f"{rr[i]:.2f} on the rest ({k_l[i]}/{n_l[i]} vs {k_r[i]}/{n_r[i]} {unit} lost; mean "
                f"{mean_l[i]:+.1f} vs {mean_r[i]:+.1f} bps)"
            )
        else:
            effect[i] = _short_of_data(n_l[i], n_r[i], unit, "on the slowest quarter of runs", "others", need)
    return {
        "effect": effect,
        "effect_size": np.where(enough, rl - rr, np.nan),
        "p_value": p,
        "n_left": n_l,
        "n_right": n_r,
    }


def _overconfidence(codes, n_agents, confidence, net, need, unit):
    ok = np.isfinite(confidence)
    median = group_quantile(codes[ok], confidence[ok], n_agents, 0.5)
    high = ok & (confidence > median[codes])
    low = ok & ~high
    miss = net <= 0
    n_l, n_r = _counts(codes, high, n_agents), _counts(codes, low, n_agents)
    k_l, k_r = _counts(codes, high & miss, n_agents), _counts(codes, low & miss, n_agents)
    p, enough = _fisher_block(k_l, n_l, k_r, n_r, need)
    hit_high, hit_low = 1.0 - _rate(k_l, n_l), 1.0 - _rate(k_r, n_r)
    effect = np.empty(n_agents, dtype=object)
    for i in range(n_agents):
        if enough[i]:
            effect[i] = (
                f"hit rate {hit_high[i]:.2f} at confidence > {median[i]:.2f} vs {hit_low[i]:.2f} at or "
                f"below ({n_l[i] - k_l[i]}/{n_l[i]} vs {n_r[i] - k_r[i]}/{n_r[i]} {unit} hit)"
            )
        else:
            effect[i] = _short_of_data(
                n_l[i], n_r[i], unit, "above the median confidence", "at or below", need
            )
    return {
        "effect": effect,
        "effect_size": np.where(enough, hit_low - hit_high, np.nan),
        "p_value": p,
        "n_left": n_l,
        "n_right": n_r,
    }


def _mann_whitney_hypothesis(codes, n_agents, values, loss, need):
    """Mann–Whitney of ``values`` for losses (left) vs the other trades, with the side medians."""
    ok = np.isfinite(values)
    result = mann_whitney_greater(codes[ok], values[ok], loss[ok], n_agents)
    n_l = result["n_left"].astype(np.int64)
    n_r = result["n_right"].astype(np.int64)
    enough = (n_l >= need) & (n_r >= need)
    return {
        "enough": enough,
        "p_value": np.where(enough, result["p"], np.nan),
        "effect_size": np.where(enough, result["effect"], np.nan),
        "n_left": n_l,
        "n_right": n_r,
        "median_left": result["median_left"],
        "median_right": result["median_right"],
    }


def _volatility(codes, n_agents, trades, rows, loss, need, unit):
    present = VOL_1H in trades.columns and VOL_30D in trades.columns
    vol_1h = _column(trades, VOL_1H)[rows]
    base = _column(trades, VOL_30D)[rows]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(base > 0, vol_1h / base, np.nan)
    m = _mann_whitney_hypothesis(codes, n_agents, ratio, loss, need)
    effect = np.empty(n_agents, dtype=object)
    for i in range(n_agents):
        if m["enough"][i]:
            effect[i] = (
                f"median 1 h / 30 d volatility ratio {m['median_left'][i]:.2f} before losses vs "
                f"{m['median_right'][i]:.2f} before other trades ({m['n_left'][i]} vs {m['n_right'][i]} "
                f"{unit})"
            )
        elif not present:
            effect[i] = f"no volatility data ({VOL_1H}, {VOL_30D})"
        else:
            effect[i] = _short_of_data(
                m["n_left"][i], m["n_right"][i], unit, "losses with volatility data", "other trades", need
            )
    return {k: m[k] for k in ("p_value", "effect_size", "n_left", "n_right")} | {"effect": effect}


def _cost(codes, n_agents, tokens, cost_usd, loss, need, unit):
    t = _mann_whitney_hypothesis(codes, n_agents, tokens, loss, need)
    c = _mann_whitney_hypothesis(codes, n_agents, cost_usd, loss, need)
    use_cost = ~t["enough"] & c["enough"]
    out = {k: np.where(use_cost, c[k], t[k]) for k in ("p_value", "effect_size", "n_left", "n_right")}
    effect = np.empty(n_agents, dtype=object)
    for i in range(n_agents):
        if t["enough"][i]:
            effect[i] = (
                f"median tokens per run {t['median_left'][i]:.0f} on losses vs {t['median_right'][i]:.0f} "
                f"on other trades ({t['n_left'][i]} vs {t['n_right'][i]} {unit}; median cost "
                f"{_fmt(c['median_left'][i], '.4f')} vs {_fmt(c['median_right'][i], '.4f')} USD)"
            )
        elif use_cost[i]:
            effect[i] = (
                f"median cost per run {c['median_left'][i]:.4f} USD on losses vs "
                f"{c['median_right'][i]:.4f} USD on other trades ({c['n_left'][i]} vs {c['n_right'][i]} "
                f"{unit}; no token counts)"
            )
        else:
            effect[i] = _short_of_data(
                t["n_left"][i], t["n_right"][i], unit, "losses with token counts", "other trades", need
            )
    out["effect"] = effect
    return out


def evaluate_hypotheses(
    trades: pd.DataFrame, *, q: float = 0.05, min_side: int = 10, chain: bool | np.ndarray = True
) -> pd.DataFrame:
    """Test the five hypotheses for every agent and correct across the fleet (module docstring).

    Parameters
    ----------
    trades : the trades frame joined with telemetry (:func:`join_telemetry`), optionally with
        ``vol_1h_before_entry`` and ``vol_30d_median`` (:func:`entry_volatility`); matured 24 h trades,
        rows in any order. Needs ``agent``, ``run_id``, ``ts``, ``exit_ts``, ``net_bps``; any other
        missing column leaves its hypothesis ``not enough data``.
    q : false discovery rate of the Benjamini–Yekutieli correction, 0 < q < 1.
    min_side : fewest trades on each compared side for a test (values below 1 count as 1).
    chain : True (the rule): test on each agent's chain of non-overlapping trades; or that chain given
        as the boolean mask of :func:`~meta_pipeline.supervisor.significance.chain_mask` (aligned with
        the rows; saves computing it twice). False tests on all trades as if they were independent —
        only to measure how much that overstates the evidence.

    Returns
    -------
    DataFrame with the columns :data:`RESULT_COLUMNS`, one row per agent × hypothesis (agents sorted
    as text, hypotheses in :data:`HYPOTHESES` order): ``test`` (str), ``effect`` (str with the
    numbers), ``effect_size`` (float, positive in the direction of the hypothesis; NaN without enough
    data), ``p_value`` (before the fleet correction; NaN without enough data), ``p_adjusted`` (BY),
    ``n_left`` / ``n_right`` (int, trades on each side), ``verdict``.

    Raises
    ------
    KeyError when a required column is missing; ValueError on a missing agent or time, a non-finite
    ``net_bps``, a confidence outside [0, 1], or q outside (0, 1).
    """
    for column in ("agent", "run_id", "ts", "exit_ts", "net_bps"):
        if column not in trades.columns:
            raise KeyError(f"trades frame lacks column {column!r}")
    need = max(int(min_side), 1)
    codes_all, agents = agent_codes(trades["agent"])
    n_agents = len(agents)
    if isinstance(chain, np.ndarray):
        if chain.shape != (len(trades),):
            raise ValueError("the chain mask must have one entry per trade")
        rows = np.flatnonzero(chain)
    else:
        rows = np.flatnonzero(chain_mask(trades)) if chain else np.arange(len(trades))
    unit = "trades" if chain is False else "chain trades"
    codes = codes_all[rows]
    net = trades["net_bps"].to_numpy(dtype=np.float64)[rows]
    if not np.isfinite(net).all():
        raise ValueError("column 'net_bps' has missing or non-finite values")
    loss = net < 0
    confidence = _column(trades, "confidence")[rows]
    if ((confidence < 0) | (confidence > 1)).any():
        raise ValueError("confidence must lie in [0, 1]")
    latency = _column(trades, TELEMETRY_PREFIX + "latency_ms")[rows]
    tokens = (
        _column(trades, TELEMETRY_PREFIX + "tokens_in") + _column(trades, TELEMETRY_PREFIX + "tokens_out")
    )[rows]
    cost_usd = _column(trades, TELEMETRY_PREFIX + "cost_usd")[rows]

    parts = {
        "regime_mismatch": _regime(codes, n_agents, trades, rows, loss, need, unit),
        "latency": _latency(codes, n_agents, latency, loss, net, need, unit),
        "overconfidence": _overconfidence(codes, n_agents, confidence, net, need, unit),
        "volatility_shock": _volatility(codes, n_agents, trades, rows, loss, need, unit),
        "cost": _cost(codes, n_agents, tokens, cost_usd, loss, need, unit),
    }
    k = len(HYPOTHESES)
    table = {
        "agent": np.repeat(agents.to_numpy(dtype=object), k),
        "hypothesis": np.tile(np.array(HYPOTHESES, dtype=object), n_agents),
        "test": np.tile(np.array([TESTS[h] for h in HYPOTHESES], dtype=object), n_agents),
    }
    for field, dtype in (("effect", object), ("effect_size", float), ("p_value", float)):
        table[field] = np.stack(
            [np.asarray(parts[h][field], dtype=dtype) for h in HYPOTHESES], axis=1
        ).ravel()
    for field in ("n_left", "n_right"):
        table[field] = np.stack(
            [np.asarray(parts[h][field], dtype=np.int64) for h in HYPOTHESES], axis=1
        ).ravel()
    table["p_adjusted"], table["verdict"] = fleet_correction(table["p_value"], q)
    return pd.DataFrame(table, columns=list(RESULT_COLUMNS))
