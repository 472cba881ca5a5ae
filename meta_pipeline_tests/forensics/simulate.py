"""A synthetic fleet for the forensics tests: 1-minute prices, regimes, views, telemetry, trades.

Everything is vectorized across agents and signals and driven by one ``numpy.random.Generator`` seed.
Time runs in signal steps of 30 minutes after a warm-up of ``WARMUP_DAYS`` days of bars (so that the
first trades have a 30-day volatility baseline); a trade opens at a signal and matures 24 h later.

* Prices: one geometric random walk per symbol at 1-minute resolution, 3 % daily volatility, no
  drift. Bar m opens at minute m at price P[m] and closes at P[m + 1]; a trade's entry at minute m is
  P[m] (the open of the bar at the signal, docs/rules.md *Pricing and PnL*) and its exit P[m + 1440].
* Regimes: shared by the agents of a symbol, three labels; at each 30-minute step the regime moves to
  one of the two others with probability 1/144 (spells of about three days).
* Zero-skill agents: a view (LONG/SHORT) that flips with probability 1/48 per signal (about a day),
  independent of prices; the stated confidence is drawn (uniform 0.5–0.95) when the view flips and
  persists with it.
* Regime-effect agents: at each signal the agent loses with probability 0.85 when its symbol is in
  its bad regime and 0.45 otherwise (it is told the next day's move and takes the losing side with
  that probability). Confidence as for the zero-skill agents.
* Telemetry, one run per signal: log-latency follows a stationary AR(1), x_k = φ·x_{k−1} +
  √(1 − φ²)·ε_k with φ = 0.9 per step, latency = 900 ms · e^{0.35 x}; tokens in / out rise with the
  latency (e^{0.5 x} times noise), cost = tokens at 0.80 / 4.00 USD per million in / out; 2 % of runs
  report an error. None of it is related to the trades' outcomes.
* ``vol_1h_before_entry`` and ``vol_30d_median`` come from the bars through
  :func:`meta_pipeline.forensics.hypotheses.entry_volatility`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.signal import lfilter

from meta_pipeline.forensics.hypotheses import entry_volatility

MINUTES_PER_DAY = 1440
STEP_MINUTES = 30
STEPS_PER_DAY = MINUTES_PER_DAY // STEP_MINUTES
HORIZON_MINUTES = MINUTES_PER_DAY  # the 24 h focus horizon
WARMUP_DAYS = 30
START = pd.Timestamp("2024-01-01", tz="UTC")  # the first bar's open
REGIMES = ("high_vol", "range", "trend")
NS_PER_MINUTE = 60 * 10**9


@dataclass(frozen=True)
class SimulatedFleet:
    """``trades`` (the trades frame plus ``vol_1h_before_entry`` and ``vol_30d_median``), ``runs``
    (telemetry, one per signal), ``zero_skill`` and ``regime_effect`` (agent names), ``bad_regime``
    (regime-effect agent → its losing regime)."""

    trades: pd.DataFrame
    runs: pd.DataFrame
    zero_skill: list[str]
    regime_effect: list[str]
    bad_regime: dict[str, str]


def minute_prices(
    rng: np.random.Generator, n_symbols: int, n_minutes: int, daily_vol: float = 0.03
) -> np.ndarray:
    """Driftless geometric random walks, shape (n_symbols, n_minutes + 1), starting at 100.

    Log increments are normal with sd ``daily_vol / √1440`` and mean −sd²/2, so E[P(t+1)/P(t)] = 1.
    """
    sigma = daily_vol / np.sqrt(MINUTES_PER_DAY)
    steps = rng.normal(-(sigma**2) / 2, sigma, size=(n_symbols, n_minutes))
    return 100.0 * np.exp(np.concatenate([np.zeros((n_symbols, 1)), np.cumsum(steps, axis=1)], axis=1))


def regime_paths(rng: np.random.Generator, n_symbols: int, n_steps: int, flip: float = 1 / 144) -> np.ndarray:
    """Regime index per symbol and step, shape (n_symbols, n_steps): uniform start, then at each step a
    move to one of the two other regimes with probability ``flip``."""
    moves = np.where(rng.random((n_symbols, n_steps)) < flip, rng.integers(1, 3, (n_symbols, n_steps)), 0)
    moves[:, 0] = rng.integers(0, 3, n_symbols)
    return np.cumsum(moves, axis=1) % 3


def persistent_views(rng: np.random.Generator, n_agents: int, n_steps: int, flip: float = 1 / 48):
    """(long, confidence), each shape (n_agents, n_steps): a view flipping with probability ``flip`` per
    signal, and a confidence drawn uniformly in [0.5, 0.95] at each flip and held until the next."""
    flips = rng.random((n_agents, n_steps)) < flip
    flips[:, 0] = False
    segment = np.cumsum(flips, axis=1)
    long = (rng.random((n_agents, 1)) < 0.5) ^ (segment % 2 == 1)
    draws = rng.uniform(0.5, 0.95, size=(n_agents, n_steps))
    return long, np.take_along_axis(draws, segment, axis=1)


def telemetry(
    rng: np.random.Generator, n_agents: int, n_steps: int, phi: float = 0.9
) -> dict[str, np.ndarray]:
    """Per agent and signal: ``latency_ms``, ``tokens_in``, ``tokens_out``, ``cost_usd``, ``errors``
    (module docstring), each shape (n_agents, n_steps)."""
    eps = rng.normal(size=(n_agents, n_steps))
    x0 = rng.normal(size=(n_agents, 1))  # stationary start
    x, _ = lfilter([np.sqrt(1 - phi**2)], [1.0, -phi], eps, axis=1, zi=phi * x0)
    tokens_in = np.round(3000 * np.exp(0.5 * x + 0.15 * rng.normal(size=x.shape)))
    tokens_out = np.round(450 * np.exp(0.5 * x + 0.25 * rng.normal(size=x.shape)))
    return {
        "latency_ms": 900.0 * np.exp(0.35 * x),
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "cost_usd": tokens_in * 0.8e-6 + tokens_out * 4.0e-6,
        "errors": (rng.random(x.shape) < 0.02).astype(np.float64),
    }


def simulate_fleet(
    seed: int = 20240101,
    *,
    n_zero_skill: int = 200,
    n_regime_effect: int = 20,
    days: int = 180,
    n_symbols: int = 8,
    loss_in_bad_regime: float = 0.85,
    loss_elsewhere: float = 0.45,
) -> SimulatedFleet:
    """The fleet of the module docstring: ``n_zero_skill`` agents ``zero_0000`` … and
    ``n_regime_effect`` agents ``regime_000`` …, each on symbol (its number mod ``n_symbols``),
    signalling every 30 minutes for ``days`` days; the regime-effect agent i loses in ``REGIMES[i % 3]``.
    """
    rng = np.random.default_rng(seed)
    n_steps = days * STEPS_PER_DAY
    warmup = WARMUP_DAYS * MINUTES_PER_DAY
    n_minutes = warmup + days * MINUTES_PER_DAY + HORIZON_MINUTES
    prices = minute_prices(rng, n_symbols, n_minutes)
    regimes = regime_paths(rng, n_symbols, n_steps)

    zero = [f"zero_{i:04d}" for i in range(n_zero_skill)]
    effect = [f"regime_{i:03d}" for i in range(n_regime_effect)]
    n_agents = n_zero_skill + n_regime_effect
    symbol = np.r_[np.arange(n_zero_skill), np.arange(n_regime_effect)] % n_symbols
    entry_minute = warmup + STEP_MINUTES * np.arange(n_steps)
    rows = symbol[:, None]
    ratio = prices[rows, entry_minute + HORIZON_MINUTES] / prices[rows, entry_minute]
    regime = regimes[symbol]  # (n_agents, n_steps)

    long, confidence = persistent_views(rng, n_agents, n_steps)
    bad = np.arange(n_regime_effect) % 3
    p_loss = np.where(regime[n_zero_skill:] == bad[:, None], loss_in_bad_regime, loss_elsewhere)
    loses = rng.random(p_loss.shape) < p_loss
    long[n_zero_skill:] = (ratio[n_zero_skill:] > 1.0) ^ loses
    gross = np.where(long, ratio - 1.0, 1.0 - ratio) * 1e4
    tel = telemetry(rng, n_agents, n_steps)

    names = np.array(zero + effect, dtype=object)
    instruments = np.array([f"S{s:02d}USDT" for s in range(n_symbols)], dtype=object)
    agent_code = np.repeat(np.arange(n_agents), n_steps)
    step = np.tile(np.arange(n_steps), n_agents)
    ts_ns = START.value + np.tile(entry_minute, n_agents).astype(np.int64) * NS_PER_MINUTE
    ts = pd.DatetimeIndex(ts_ns.astype("datetime64[ns]")).tz_localize("UTC")
    # "<agent>-<step>" built by pyarrow: a Python f-string per trade would take seconds
    run_id = pd.array(
        pc.binary_join_element_wise(
            pa.array(names.tolist()).take(agent_code),
            pa.array([f"{k:05d}" for k in range(n_steps)]).take(step),
            "-",
        ),
        dtype="str",
    )
    trades = pd.DataFrame(
        {
            "agent": pd.Categorical.from_codes(agent_code, names),
            "run_id": run_id,
            "instrument": pd.Categorical.from_codes(symbol[agent_code], instruments),
            "ts": ts,
            "exit_ts": ts + pd.Timedelta(minutes=HORIZON_MINUTES),
            "direction": pd.Categorical.from_codes(long.ravel().astype(np.int8), ["SHORT", "LONG"]),
            "gross_bps": gross.ravel(),
            "net_bps": gross.ravel(),
            "regime": pd.Categorical.from_codes(regime.ravel().astype(np.int8), list(REGIMES)),
            "confidence": confidence.ravel(),
        }
    )
    runs = pd.DataFrame(
        {
            "agent": trades["agent"].to_numpy(),
            "run_id": run_id,
            "ts": ts - pd.Timedelta(seconds=20),  # the run starts shortly before its signal
            **{k: v.ravel() for k, v in tel.items()},
        }
    )
    bars = pd.DataFrame(
        {
            "instrument": pd.Categorical.from_codes(np.repeat(np.arange(n_symbols), n_minutes), instruments),
            "open_time": pd.DatetimeIndex(
                (START.value + np.tile(np.arange(n_minutes), n_symbols) * NS_PER_MINUTE).astype(
                    "datetime64[ns]"
                )
            ).tz_localize("UTC"),
            "close": prices[:, 1:].ravel(),
        }
    )
    trades = pd.concat([trades, entry_volatility(bars, trades)], axis=1)
    return SimulatedFleet(
        trades=trades,
        runs=runs,
        zero_skill=zero,
        regime_effect=effect,
        bad_regime={name: REGIMES[b] for name, b in zip(effect, bad, strict=True)},
    )
