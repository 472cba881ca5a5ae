"""Significance of an agent's skill: timing returns on non-overlapping trades (docs/rules.md, *Significance*).

Input of every function: the supervisor's trades frame, one row per matured 24 h trade, in any row
order, with the columns ``agent``, ``run_id``, ``instrument``, ``ts`` and ``exit_ts`` (UTC datetimes;
naive values are read as UTC), ``direction`` (``"LONG"`` / ``"SHORT"``), ``gross_bps`` and ``net_bps``
(bps). Each function needs only the columns it names.

Two corrections keep luck and market drift from passing for skill:

* **The chain.** Agents signal about every 30 minutes and a trade lasts 24 h, so consecutive trades
  share most of their price path. Per agent, the statistics use the chain of non-overlapping trades
  (:func:`chain_mask`): the first trade in (``ts``, ``run_id``) order, then each time the first trade
  whose ``ts`` is at or after the previous chain trade's ``exit_ts``.
* **Timing, not drift.** With d = +1 for LONG and −1 for SHORT, r = d · gross_bps is the symbol's own
  return over the trade (bps) and the timing return is (d − d̄) · r, where d̄ is the agent's mean
  direction on that instrument over the rows considered (:func:`timing_returns`). An agent that is
  always LONG has timing returns of 0 whatever the market does.

Formulas (per agent, on the chain's n timing returns x):

* SR = mean(x) / std(x, ddof=1); γ₃ = biased skewness, γ₄ = biased non-excess kurtosis (the
  ``scipy.stats.skew`` and ``scipy.stats.kurtosis(fisher=False)`` defaults).
* Probabilistic Sharpe ratio, Bailey & López de Prado (2012), "The Sharpe Ratio Efficient Frontier",
  Journal of Risk 15(2), eq. for PSR and MinTRL.
* Deflated Sharpe ratio, Bailey & López de Prado (2014), "The Deflated Sharpe Ratio: Correcting for
  Selection Bias, Backtest Overfitting and Non-Normality", Journal of Portfolio Management 40(5).

Everything is vectorized across agents: group sums come from ``np.bincount`` and the chain is walked
one step at a time for all agents at once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "NO_TIMING_VARIATION",
    "NON_POSITIVE_VARIANCE_TERM",
    "SIGNIFICANCE_COLUMNS",
    "TOO_FEW_TRADES",
    "bias_timing_split",
    "chain_mask",
    "expected_max_sharpe",
    "min_track_record_length",
    "naive_psr_by_agent",
    "probabilistic_sharpe_ratio",
    "significance_by_agent",
    "timing_returns",
]

TOO_FEW_TRADES = "fewer than 2 chain trades"
NO_TIMING_VARIATION = "no timing variation"
NON_POSITIVE_VARIANCE_TERM = "PSR undefined: non-positive variance term"

SIGNIFICANCE_COLUMNS = (
    "chain_trades",
    "timing_mean_bps",
    "timing_sharpe",
    "timing_skew",
    "timing_kurtosis",
    "timing_psr",
    "deflated_sharpe",
    "min_track_record",
    "more_trades_needed",
    "pnl_psr",
    "psr_reason",
)

# A standard deviation at or below this fraction of the returns' scale (their root mean square) is
# zero: float rounding leaves ~1e-16 relative noise, e.g. in the mean direction of an agent that is
# always LONG, and a Sharpe ratio of noise over noise would be meaningless.
ZERO_STD_RELATIVE = 1e-9


# ------------------------------------------------------------------------------------ input checks
def _require(trades: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in trades.columns]
    if missing:
        raise KeyError(f"trades frame lacks column(s) {missing}")


def _codes(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Integer codes (int64, aligned with ``values``) and the sorted distinct values they index.

    Raises ValueError on a missing value.
    """
    codes, uniques = pd.factorize(values, sort=True)
    if len(codes) and codes.min() < 0:
        raise ValueError(f"column {values.name!r} has missing values")
    return codes.astype(np.int64, copy=False), pd.Index(np.asarray(uniques, dtype=object), name=values.name)


def _group_of(values: pd.Series) -> tuple[np.ndarray, int]:
    """Codes (int64) that tell the distinct values of ``values`` apart, in no particular order, and
    their number (codes are < it); a categorical's own codes, without a hash of its rows.

    Raises ValueError on a missing value.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = values.cat.codes.to_numpy()
        if len(codes) and codes.min() < 0:
            raise ValueError(f"column {values.name!r} has missing values")
        return codes.astype(np.int64), len(values.cat.categories)
    codes, uniques = _codes(values)
    return codes, len(uniques)


def _ns(values: pd.Series) -> np.ndarray:
    """Nanoseconds since the epoch (int64) of a datetime column; naive values are read as UTC.

    Raises ValueError on a missing time.
    """
    index = pd.DatetimeIndex(values)
    if index.hasnans:
        raise ValueError(f"column {values.name!r} has missing times")
    # asi8 of a tz-aware index counts from the UTC epoch; a naive one is read as UTC wall time
    ns = index.as_unit("ns").asi8
    return ns


def _direction(values: pd.Series) -> np.ndarray:
    """+1.0 for ``"LONG"``, −1.0 for ``"SHORT"`` (float64). Raises ValueError on anything else."""
    long = np.asarray(values == "LONG", dtype=bool)
    short = np.asarray(values == "SHORT", dtype=bool)
    if not (long | short).all():
        bad = pd.unique(values[~(long | short)])[:5]
        raise ValueError(f"direction must be 'LONG' or 'SHORT', got {list(bad)}")
    return np.where(long, 1.0, -1.0)


def _finite(values: pd.Series) -> np.ndarray:
    x = values.to_numpy(dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"column {values.name!r} has missing or non-finite values")
    return x


# ------------------------------------------------------------------------------------------ chain
def _chain(
    agent_codes: np.ndarray, n_agents: int, ts: np.ndarray, exit_ts: np.ndarray, run_id: pd.Series
) -> np.ndarray:
    """Boolean chain mask aligned with the inputs (see :func:`chain_mask`)."""
    n = len(ts)
    if n == 0:
        return np.zeros(0, dtype=bool)
    packed = _packed_chain_order(agent_codes, n_agents, ts, exit_ts)
    if packed is not None:
        order, sorted_key, sorted_agent, sorted_exit = packed
    else:
        order, sorted_key, sorted_agent, sorted_exit = _sorted_chain_order(agent_codes, n_agents, ts, exit_ts)
    same = sorted_key[1:] == sorted_key[:-1]
    if same.any():
        # Ties of (agent, ts) are ordered by run_id (as text), then by row; only tied rows need it.
        tied = np.flatnonzero(np.r_[same, False] | np.r_[False, same])
        rows = order[tied]
        run_text = run_id.take(rows).astype(str).to_numpy(dtype=object)
        run_rank = np.unique(run_text, return_inverse=True)[1]
        within = np.lexsort((rows, run_rank, sorted_key[tied]))
        order[tied] = rows[within]
        sorted_exit[tied] = sorted_exit[tied][within]
    # The next chain trade after sorted position i: the first position whose key reaches
    # (agent, exit_ts), and never i itself or an earlier one (an exit at or before the entry).
    nxt = np.searchsorted(sorted_key, sorted_exit, side="left")
    np.maximum(nxt, np.arange(1, n + 1), out=nxt)
    valid = nxt < n
    valid[valid] = sorted_agent[nxt[valid]] == sorted_agent[valid]
    nxt[~valid] = -1
    in_chain = np.zeros(n, dtype=bool)
    current = np.flatnonzero(np.r_[True, sorted_agent[1:] != sorted_agent[:-1]])  # each agent's first
    while current.size:  # one step of every agent's chain at a time
        in_chain[current] = True
        current = nxt[current]
        current = current[current >= 0]
    mask = np.empty(n, dtype=bool)
    mask[order] = in_chain
    return mask


def _packed_chain_order(
    agent_codes: np.ndarray, n_agents: int, ts: np.ndarray, exit_ts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """The rows in (agent, ts, row) order from one ``np.sort`` of an int64 packing (agent, ts, row),
    with ``ts`` as its step on the grid of entry times (ts − first ts) / gcd: on a 30-minute grid a
    year takes 15 bits. None when the packing does not fit in 63 bits.

    Returns ``order`` (positions), ``sorted_key`` (agent, ts step) and ``sorted_agent`` of the rows
    in that order, and ``sorted_exit``: the key the next chain trade must reach, (agent, the first
    step at or after the exit). ts ≥ exit_ts ⟺ step(ts) ≥ ⌈(exit_ts − first ts) / gcd⌉.
    """
    n = len(ts)
    first = int(ts.min())
    if int(ts.max()) - first >= 2**62:
        return None
    offset = ts - first
    step = int(np.gcd.reduce(offset[:: max(1, n // 4096)]))  # a sample's gcd, checked on all below
    if step == 0 or (step > 1 and (offset % step).any()):
        step = int(np.gcd.reduce(offset))
    step = max(step, 1)
    beyond = int(offset.max()) // step + 1  # a step past every entry: "no later trade"
    ts_bits = beyond.bit_length()
    agent_bits = max(1, (n_agents - 1).bit_length())
    row_bits = max(1, (n - 1).bit_length())
    if agent_bits + ts_bits + row_bits > 63:
        return None
    key = offset // step if step > 1 else offset
    key |= agent_codes.astype(np.int64, copy=False) << ts_bits
    key <<= row_bits
    key |= np.arange(n, dtype=np.int64)
    key.sort()
    order = key & ((1 << row_bits) - 1)
    key >>= row_bits
    sorted_agent = key >> ts_bits
    reach = exit_ts[order] - first
    reach = -(-reach // step)  # ceiling division
    np.clip(reach, 0, beyond, out=reach)
    reach |= sorted_agent << ts_bits
    return order, key, sorted_agent, reach


def _sorted_chain_order(
    agent_codes: np.ndarray, n_agents: int, ts: np.ndarray, exit_ts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """As :func:`_packed_chain_order`, with ts as its rank among the distinct entry times (any
    times; an argsort and a stable sort by agent)."""
    n = len(ts)
    # Rows are ordered by (agent, ts) through one int64 key, agent · width + rank of ts among the
    # distinct entry times (agent · ns since the epoch would overflow). An exit gets the number of
    # distinct entry times before it, so that ts >= exit_ts ⟺ rank(ts) >= rank(exit_ts).
    by_ts = np.argsort(ts)
    ts_sorted = ts[by_ts]
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(ts_sorted[1:], ts_sorted[:-1], out=new[1:])
    distinct = ts_sorted[new]
    width = np.int64(len(distinct) + 1)
    rank = np.cumsum(new) - 1  # in ts order
    # queried in entry-time order: with a fixed horizon the exits are then sorted, which searchsorted
    # exploits (several times faster than random queries)
    exit_rank = np.searchsorted(distinct, exit_ts[by_ts], side="left")
    agent = agent_codes[by_ts]
    # a stable sort by agent of the rows in ts order; 16-bit codes take numpy's radix sort
    perm = np.argsort(agent.astype(np.uint16) if n_agents <= 1 << 16 else agent, kind="stable")
    order = by_ts[perm]
    sorted_agent = agent[perm]
    sorted_key = sorted_agent * width + rank[perm]
    sorted_exit = sorted_agent * width + exit_rank[perm]  # the key the next chain trade must reach
    return order, sorted_key, sorted_agent, sorted_exit


def chain_mask(trades: pd.DataFrame) -> np.ndarray:
    """Mark each agent's chain of non-overlapping trades (docs/rules.md, *Significance*).

    Per agent, trades are ordered by (``ts``, ``run_id``; ``run_id`` compared as text, then row order).
    The chain starts with the first trade; each next chain trade is the first later one whose ``ts`` is
    at or after the previous chain trade's ``exit_ts`` (a trade entering exactly at that exit is taken).

    Parameters
    ----------
    trades : DataFrame with ``agent``, ``run_id``, ``ts``, ``exit_ts``; rows in any order.

    Returns
    -------
    ndarray of bool, shape (len(trades),), aligned with the rows of ``trades``.

    Raises
    ------
    KeyError when a column is missing; ValueError on a missing agent or time.
    """
    _require(trades, ("agent", "run_id", "ts", "exit_ts"))
    agent_codes, agents = _codes(trades["agent"])
    return _chain(agent_codes, len(agents), _ns(trades["ts"]), _ns(trades["exit_ts"]), trades["run_id"])


# ---------------------------------------------------------------------------------- timing returns
def _group_codes(agent_codes: np.ndarray, instrument_codes: np.ndarray, n_instruments: int) -> np.ndarray:
    """Codes of the (agent, instrument) pairs (order irrelevant, some may be absent): agent · width +
    instrument itself when that is not much larger than the rows, else its dense factorization."""
    key = agent_codes * np.int64(max(n_instruments, 1)) + instrument_codes
    if len(key) and int(key.max()) < 4 * len(key) + 1024:
        return key
    return pd.factorize(key)[0]


def _timing(agent_codes, instrument_codes, n_instruments, d, gross) -> np.ndarray:
    """(d − d̄[agent, instrument]) · r with r = d · gross, bps."""
    groups = _group_codes(agent_codes, instrument_codes, n_instruments)
    with np.errstate(invalid="ignore", divide="ignore"):  # 0 / 0 for an absent pair, never read
        mean_d = np.bincount(groups, weights=d) / np.bincount(groups)
    return (d - mean_d[groups]) * (d * gross)


def timing_returns(chain_trades: pd.DataFrame) -> pd.Series:
    """Timing return of each trade, bps: (d − d̄) · r (docs/rules.md, *Significance*).

    d = +1 LONG / −1 SHORT, r = d · ``gross_bps`` (the symbol's own return over the trade) and d̄ the
    agent's mean direction on the instrument **over the rows given** (pass the chain's rows to get the
    chain's timing returns).

    Parameters
    ----------
    chain_trades : DataFrame with ``agent``, ``instrument``, ``direction``, ``gross_bps``.

    Returns
    -------
    Series of float (bps) named ``timing_bps``, with the index of ``chain_trades``.

    Raises
    ------
    KeyError when a column is missing; ValueError on a missing agent or instrument, a direction other
    than ``"LONG"`` / ``"SHORT"``, or a non-finite ``gross_bps``.
    """
    _require(chain_trades, ("agent", "instrument", "direction", "gross_bps"))
    agent_codes, _ = _codes(chain_trades["agent"])
    instrument_codes, instruments = _codes(chain_trades["instrument"])
    values = _timing(
        agent_codes,
        instrument_codes,
        len(instruments),
        _direction(chain_trades["direction"]),
        _finite(chain_trades["gross_bps"]),
    )
    return pd.Series(values, index=chain_trades.index, name="timing_bps")


def bias_timing_split(trades: pd.DataFrame) -> pd.DataFrame:
    """Split each agent's mean gross PnL into directional bias and timing (docs/rules.md, *Significance*).

    Over the rows given (all of them, or a chain), per agent with n trades and per instrument s with
    n_s trades, mean direction d̄_s and mean symbol return r̄_s (bps):

    * ``bias_bps`` = Σ_s n_s · d̄_s · r̄_s / n — what holding the agent's average position earns;
    * ``timing_bps`` = Σ_s (Σ d·r − n_s · d̄_s · r̄_s) / n — the mean timing return (d − d̄_s) · r;
    * ``mean_gross_bps`` = Σ d·r / n, and mean_gross = bias + timing up to float rounding.

    Computed from per-(agent, instrument) sums of d, r, d·r and counts.

    Parameters
    ----------
    trades : DataFrame with ``agent``, ``instrument``, ``direction``, ``gross_bps``.

    Returns
    -------
    DataFrame indexed by ``agent`` (sorted; every agent of the input) with float columns
    ``mean_gross_bps``, ``bias_bps``, ``timing_bps`` (bps).

    Raises
    ------
    As :func:`timing_returns`.
    """
    _require(trades, ("agent", "instrument", "direction", "gross_bps"))
    agent_codes, agents = _codes(trades["agent"])
    instrument_codes, n_instruments = _group_of(trades["instrument"])
    d = _direction(trades["direction"])
    gross = _finite(trades["gross_bps"])
    return pd.DataFrame(
        _bias_timing(agent_codes, len(agents), instrument_codes, n_instruments, d, gross),
        index=agents.rename("agent"),
    )


def _bias_timing(
    agent_codes: np.ndarray,
    n_agents: int,
    instrument_codes: np.ndarray,
    n_instruments: int,
    d: np.ndarray,
    gross: np.ndarray,
) -> dict[str, np.ndarray]:
    """:func:`bias_timing_split` on arrays (codes int64 in [0, n)); columns aligned with the agent codes."""
    width = np.int64(max(n_instruments, 1))
    groups, pairs = pd.factorize(agent_codes * width + instrument_codes)
    group_agent = np.asarray(pairs, dtype=np.int64) // width
    n_s = np.bincount(groups).astype(np.float64)
    sum_d = np.bincount(groups, weights=d)
    sum_r = np.bincount(groups, weights=d * gross)
    sum_dr = np.bincount(groups, weights=gross)  # d · r = gross
    held = sum_d * sum_r / n_s if len(n_s) else n_s  # n_s · d̄_s · r̄_s
    n = np.bincount(agent_codes, minlength=n_agents).astype(np.float64)
    return {
        "mean_gross_bps": np.bincount(agent_codes, weights=gross, minlength=n_agents) / n,
        "bias_bps": np.bincount(group_agent, weights=held, minlength=n_agents) / n,
        "timing_bps": np.bincount(group_agent, weights=sum_dr - held, minlength=n_agents) / n,
    }


# ---------------------------------------------------------------------------------------- formulas
def _scalar_or_array(value: np.ndarray, scalar: bool):
    return float(value) if scalar else value


def probabilistic_sharpe_ratio(sr, n, skew, kurt, sr_benchmark=0.0):
    """Probabilistic Sharpe ratio PSR(SR*), Bailey & López de Prado (2012), "The Sharpe Ratio Efficient
    Frontier", Journal of Risk 15(2):

        PSR(SR*) = Φ( (SR − SR*) · √(n − 1) / √(1 − γ₃ · SR + (γ₄ − 1) / 4 · SR²) )

    The probability that the true Sharpe ratio exceeds SR*, given the observed per-observation SR
    (not annualized), n observations, skewness γ₃ and non-excess kurtosis γ₄ (3 for a normal).

    Parameters
    ----------
    sr, n, skew, kurt, sr_benchmark : floats or arrays, broadcast together.

    Returns
    -------
    float in [0, 1], or an array of the broadcast shape; NaN where n < 2, an input is NaN or the
    radicand 1 − γ₃ · SR + (γ₄ − 1) / 4 · SR² is ≤ 0.

    With the biased moments of a sample, Pearson's inequality γ₄ ≥ γ₃² + 1 makes the radicand at least
    (1 − γ₃ · SR / 2)² ≥ 0: it reaches 0 only for a two-valued sample at one particular SR, so in
    practice only inputs given by hand make it non-positive.
    """
    scalar = all(np.ndim(v) == 0 for v in (sr, n, skew, kurt, sr_benchmark))
    sr, n, skew, kurt, bench = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (sr, n, skew, kurt, sr_benchmark))
    )
    radicand = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2
    ok = (n >= 2) & (radicand > 0)  # False for any NaN
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (sr - bench) * np.sqrt(n - 1.0) / np.sqrt(radicand)
    from scipy.special import ndtr  # Φ, as scipy.stats.norm.cdf computes it; imported on use (load time)

    out = np.where(ok, ndtr(np.where(ok, z, 0.0)), np.nan)
    return _scalar_or_array(out, scalar)


def min_track_record_length(sr, skew, kurt, prob=0.95, sr_benchmark=0.0):
    """Minimum track record length, Bailey & López de Prado (2012), "The Sharpe Ratio Efficient
    Frontier", Journal of Risk 15(2):

        MinTRL = 1 + (1 − γ₃ · SR + (γ₄ − 1) / 4 · SR²) · (Φ⁻¹(prob) / (SR − SR*))²

    The number of observations (here chain trades) needed for PSR(SR*) to reach ``prob`` at the
    observed SR, γ₃ (skewness) and γ₄ (non-excess kurtosis).

    Parameters
    ----------
    sr, skew, kurt, prob, sr_benchmark : floats or arrays, broadcast together; 0 < prob < 1.

    Returns
    -------
    float ≥ 1, or an array; +inf where SR ≤ SR*, an input is NaN, or the radicand is ≤ 0 (PSR is then
    undefined, so no track record is enough).
    """
    scalar = all(np.ndim(v) == 0 for v in (sr, skew, kurt, prob, sr_benchmark))
    sr, skew, kurt, prob, bench = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (sr, skew, kurt, prob, sr_benchmark))
    )
    from scipy.special import ndtri  # Φ⁻¹, as scipy.stats.norm.ppf computes it

    radicand = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2
    ok = (sr > bench) & (radicand > 0) & (prob > 0) & (prob < 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = 1.0 + radicand * (ndtri(prob) / (sr - bench)) ** 2
    out = np.where(ok & ~np.isnan(value), value, np.inf)
    return _scalar_or_array(out, scalar)


def expected_max_sharpe(n_trials, var_sr):
    """The deflated Sharpe ratio's benchmark SR₀, Bailey & López de Prado (2014), "The Deflated Sharpe
    Ratio", Journal of Portfolio Management 40(5), eq. for E[max SR]:

        SR₀ = √V · ((1 − γ) · Φ⁻¹(1 − 1/N) + γ · Φ⁻¹(1 − 1/(N · e)))

    the expected maximum Sharpe ratio of N independent trials with true SR 0 and estimates of variance
    V; γ is the Euler–Mascheroni constant. DSR = PSR(SR₀).

    Parameters
    ----------
    n_trials : int or array, N ≥ 1.
    var_sr : float or array, V ≥ 0 (variance of the trials' Sharpe ratios, per observation).

    Returns
    -------
    float or array; 0 where N ≤ 1 (nothing to deflate: DSR = PSR); NaN where V is NaN or negative.
    """
    from scipy.special import ndtri

    scalar = np.ndim(n_trials) == 0 and np.ndim(var_sr) == 0
    n, v = np.broadcast_arrays(np.asarray(n_trials, dtype=np.float64), np.asarray(var_sr, dtype=np.float64))
    several = n > 1
    safe_n = np.where(several, n, 2.0)
    gamma = np.euler_gamma
    factor = (1.0 - gamma) * ndtri(1.0 - 1.0 / safe_n) + gamma * ndtri(1.0 - 1.0 / (safe_n * np.e))
    with np.errstate(invalid="ignore"):
        value = np.sqrt(v) * factor
    out = np.where(several, value, 0.0)
    out[np.isnan(v) | (v < 0)] = np.nan
    return _scalar_or_array(out, scalar)


# ----------------------------------------------------------------------------------------- moments
def _moments(codes: np.ndarray, x: np.ndarray, n_groups: int, scale: np.ndarray) -> dict[str, np.ndarray]:
    """Per group: n, mean, std (ddof=1), biased skewness and non-excess kurtosis, and ``flat``.

    Central moments come from bincount sums of powers of the deviations from the group mean (two
    passes, stable where raw power sums would cancel). ``flat`` marks a std ≤ ZERO_STD_RELATIVE ·
    ``scale`` (per group): treated as zero, with std, skew and kurtosis NaN.
    """
    n = np.bincount(codes, minlength=n_groups).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(codes, weights=x, minlength=n_groups) / n
        dev = x - mean[codes]
        dev2 = dev * dev
        m2 = np.bincount(codes, weights=dev2, minlength=n_groups) / n
        m3 = np.bincount(codes, weights=dev2 * dev, minlength=n_groups) / n
        m4 = np.bincount(codes, weights=dev2 * dev2, minlength=n_groups) / n
        std = np.sqrt(m2 * n / (n - 1.0))
        std[n < 2] = np.nan
        flat = (n >= 2) & (std <= ZERO_STD_RELATIVE * scale)
        std[flat] = np.nan
        skew = m3 / m2**1.5
        kurt = m4 / m2**2
    skew[np.isnan(std)] = np.nan
    kurt[np.isnan(std)] = np.nan
    return {"n": n, "mean": mean, "std": std, "skew": skew, "kurt": kurt, "flat": flat}


def _rms(codes: np.ndarray, x: np.ndarray, n_groups: int) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(
            np.bincount(codes, weights=x * x, minlength=n_groups) / np.bincount(codes, minlength=n_groups)
        )


def _psr_of(m: dict[str, np.ndarray], sr_benchmark=0.0) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        sr = m["mean"] / m["std"]
    return probabilistic_sharpe_ratio(sr, m["n"], m["skew"], m["kurt"], sr_benchmark)


# ------------------------------------------------------------------------------------ per agent
def significance_by_agent(
    trades: pd.DataFrame, *, n_trials: int | None = None, prob: float = 0.95
) -> pd.DataFrame:
    """The skill statistics of every agent on its chain of non-overlapping trades.

    docs/rules.md, *Significance*. Per agent: the chain (:func:`chain_mask`), its timing returns x
    (:func:`timing_returns`, d̄ over the chain's own trades), then SR, γ₃, γ₄, PSR, DSR and MinTRL of x
    (formulas in the module docstring), and the PSR of the chain's ``net_bps``.

    Parameters
    ----------
    trades : the trades frame (``agent``, ``run_id``, ``instrument``, ``ts``, ``exit_ts``, ``direction``,
        ``gross_bps``, ``net_bps``), matured trades at one horizon, rows in any order.
    n_trials : the deflated Sharpe ratio's N, the number of distinct agents ever evaluated (killed and
        retired ones included). Defaults to the number of agents in ``trades``.
    prob : the confidence level of the minimum track record length, 0 < prob < 1.

    Returns
    -------
    DataFrame indexed by ``agent`` (sorted; every agent of ``trades``) with the columns

    * ``chain_trades`` (int): n, the chain's length;
    * ``timing_mean_bps``: mean timing return (bps per chain trade);
    * ``timing_sharpe``: SR per chain trade (not annualized); NaN when n < 2 or no variation;
    * ``timing_skew``, ``timing_kurtosis``: biased γ₃ and non-excess γ₄; NaN likewise;
    * ``timing_psr``: PSR(0) of the timing returns; NaN when undefined (see ``psr_reason``);
    * ``deflated_sharpe``: PSR(SR₀), SR₀ = :func:`expected_max_sharpe` (N = ``n_trials``, V = variance,
      ddof=1, of ``timing_sharpe`` across the agents where it is defined); equals ``timing_psr`` when
      N == 1 or fewer than 2 agents have a defined SR;
    * ``min_track_record`` (chain trades): MinTRL at ``prob``; +inf when SR ≤ 0 or undefined;
    * ``more_trades_needed`` (float): max(0, ceil(MinTRL) − n); +inf when MinTRL is;
    * ``pnl_psr``: PSR(0) of the chain's ``net_bps``; NaN when undefined;
    * ``psr_reason``: None when ``timing_psr`` is defined, else ``"fewer than 2 chain trades"``,
      ``"no timing variation"`` (std ≤ 1e-9 × the root mean square of the chain's gross bps) or
      ``"PSR undefined: non-positive variance term"``.

    Raises
    ------
    KeyError when a column is missing; ValueError on a missing agent, instrument or time, a bad
    direction, a non-finite ``gross_bps`` / ``net_bps``, ``n_trials`` below the number of agents in
    ``trades``, or ``prob`` outside (0, 1).
    """
    _require(trades, ("agent", "run_id", "instrument", "ts", "exit_ts", "direction", "gross_bps", "net_bps"))
    if not 0.0 < prob < 1.0:
        raise ValueError(f"prob must be in (0, 1), got {prob}")
    agent_codes, agents = _codes(trades["agent"])
    n_agents = len(agents)
    if n_trials is None:
        n_trials = n_agents
    elif n_trials < max(n_agents, 1):
        raise ValueError(f"n_trials={n_trials} is below the {n_agents} agent(s) in the trades frame")
    mask = _chain(agent_codes, n_agents, _ns(trades["ts"]), _ns(trades["exit_ts"]), trades["run_id"])
    # columns are read whole (vectorized checks, categories decoded once) and then cut to the chain
    instrument_codes, n_instruments = _group_of(trades["instrument"])
    columns = _significance(
        agent_codes,
        n_agents,
        mask,
        instrument_codes,
        n_instruments,
        _direction(trades["direction"]),
        _finite(trades["gross_bps"]),
        _finite(trades["net_bps"]),
        n_trials=n_trials,
        prob=prob,
    )
    index = agents.rename("agent")
    # object dtype keeps None (an inferred string column would turn it into NaN)
    columns["psr_reason"] = pd.Series(columns["psr_reason"], index=index, dtype=object)
    return pd.DataFrame(columns, index=index)


def _significance(
    agent_codes: np.ndarray,
    n_agents: int,
    mask: np.ndarray,
    instrument_codes: np.ndarray,
    n_instruments: int,
    d: np.ndarray,
    gross: np.ndarray,
    net: np.ndarray,
    *,
    n_trials: int,
    prob: float,
    agent_order: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """:func:`significance_by_agent` on arrays aligned with the trades (codes int64 in [0, n), the
    chain ``mask``); the columns are aligned with the agent codes. ``agent_order`` (a permutation
    of the codes) is the order in which the variance across agents sums their Sharpe ratios (the
    codes' order when None), so that any coding of the agents gives the same float."""
    rows = np.flatnonzero(mask)
    codes = agent_codes[rows]
    instrument_codes = instrument_codes[rows]
    d, gross, net = d[rows], gross[rows], net[rows]

    timing = _timing(codes, instrument_codes, n_instruments, d, gross)
    t = _moments(codes, timing, n_agents, scale=_rms(codes, gross, n_agents))
    p = _moments(codes, net, n_agents, scale=_rms(codes, net, n_agents))
    with np.errstate(invalid="ignore", divide="ignore"):
        sr = t["mean"] / t["std"]
    psr = probabilistic_sharpe_ratio(sr, t["n"], t["skew"], t["kurt"])

    ordered = sr if agent_order is None else sr[agent_order]
    defined = np.isfinite(ordered)
    var_sr = np.var(ordered[defined], ddof=1) if defined.sum() >= 2 else np.nan
    sr0 = expected_max_sharpe(n_trials, var_sr)
    dsr = psr if not np.isfinite(sr0) else probabilistic_sharpe_ratio(sr, t["n"], t["skew"], t["kurt"], sr0)

    min_trl = min_track_record_length(sr, t["skew"], t["kurt"], prob)
    with np.errstate(invalid="ignore"):
        more = np.maximum(0.0, np.ceil(min_trl) - t["n"])

    reason = np.full(n_agents, None, dtype=object)
    reason[np.isnan(psr)] = NON_POSITIVE_VARIANCE_TERM
    reason[t["flat"]] = NO_TIMING_VARIATION
    reason[t["n"] < 2] = TOO_FEW_TRADES
    reason[~np.isnan(psr)] = None

    return {
        "chain_trades": t["n"].astype(np.int64),
        "timing_mean_bps": t["mean"],
        "timing_sharpe": sr,
        "timing_skew": t["skew"],
        "timing_kurtosis": t["kurt"],
        "timing_psr": psr,
        "deflated_sharpe": dsr,
        "min_track_record": min_trl,
        "more_trades_needed": more,
        "pnl_psr": _psr_of(p),
        "psr_reason": reason,
    }


def naive_psr_by_agent(trades: pd.DataFrame, column: str = "net_bps") -> pd.Series:
    """PSR(0) of ``column`` over **all** of each agent's trades, as if they were independent.

    This is the inflated figure a per-trade test gives when 24 h trades opened every 30 minutes overlap
    (docs/rules.md, *Significance*, non-overlapping trades); it is reported for comparison only. Same
    formula as :func:`probabilistic_sharpe_ratio`, n = the agent's number of trades.

    Parameters
    ----------
    trades : DataFrame with ``agent`` and ``column`` (bps).
    column : the PnL column, ``net_bps`` by default.

    Returns
    -------
    Series of float named ``naive_psr``, indexed by ``agent`` (sorted; every agent of ``trades``); NaN
    where n < 2, the values do not vary, or the radicand is ≤ 0.

    Raises
    ------
    KeyError when a column is missing; ValueError on a missing agent or a non-finite value.
    """
    _require(trades, ("agent", column))
    agent_codes, agents = _codes(trades["agent"])
    x = _finite(trades[column])
    m = _moments(agent_codes, x, len(agents), scale=_rms(agent_codes, x, len(agents)))
    return pd.Series(_psr_of(m), index=agents.rename("agent"), name="naive_psr")
