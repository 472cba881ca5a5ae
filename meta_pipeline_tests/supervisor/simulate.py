"""Synthetic fleets for the significance tests: price paths, direction processes and trades frames.

Every generator is vectorized across agents and takes a ``numpy.random.Generator`` so that a test fixes
its seed. Time is counted in signal steps of ``STEP`` (30 minutes); a trade opens at a signal and
matures ``HORIZON_STEPS`` steps (24 h) later, priced on the agent's own path.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

STEP = pd.Timedelta(minutes=30)
STEPS_PER_DAY = 48
HORIZON_STEPS = STEPS_PER_DAY  # the 24 h focus horizon
START = pd.Timestamp("2024-01-01", tz="UTC")
INSTRUMENT = "SIMUSDT"


def price_paths(
    rng: np.random.Generator,
    n_agents: int,
    n_steps: int,
    *,
    daily_vol: float = 0.03,
    daily_drift: float = 0.0,
    start_price: float = 100.0,
) -> np.ndarray:
    """Geometric random walks sampled every 30 minutes, one per agent.

    Log increments are normal with standard deviation ``daily_vol / √48`` and a mean chosen so that
    E[P(t + 1 day) / P(t)] = 1 + ``daily_drift`` (0: a martingale, no drift in simple returns).

    Returns an array of shape (n_agents, n_steps + 1) of prices, column k at step k.
    """
    sigma = daily_vol / np.sqrt(STEPS_PER_DAY)
    mu = np.log1p(daily_drift) / STEPS_PER_DAY - sigma**2 / 2
    increments = rng.normal(mu, sigma, size=(n_agents, n_steps))
    log_price = np.concatenate([np.zeros((n_agents, 1)), np.cumsum(increments, axis=1)], axis=1)
    return start_price * np.exp(log_price)


def markov_directions(
    rng: np.random.Generator,
    n_agents: int,
    n_signals: int,
    *,
    p_long_to_short: float,
    p_short_to_long: float,
) -> np.ndarray:
    """Two-state Markov directions, independent of prices: True = LONG, shape (n_agents, n_signals).

    The first signal is drawn from the stationary law P(LONG) = p_SL / (p_LS + p_SL); at each later
    signal a LONG agent turns SHORT with probability ``p_long_to_short`` and a SHORT agent turns LONG
    with probability ``p_short_to_long``. One vector step per signal covers every agent.
    """
    stationary_long = p_short_to_long / (p_long_to_short + p_short_to_long)
    draws = rng.random((n_agents, n_signals))
    long = np.empty((n_agents, n_signals), dtype=bool)
    long[:, 0] = draws[:, 0] < stationary_long
    for k in range(1, n_signals):
        previous = long[:, k - 1]
        flip = draws[:, k] < np.where(previous, p_long_to_short, p_short_to_long)
        long[:, k] = previous ^ flip
    return long


def oracle_directions(prices: np.ndarray, n_signals: int) -> np.ndarray:
    """LONG exactly when the price HORIZON_STEPS later is higher: perfect knowledge of the next day."""
    return prices[:, HORIZON_STEPS : HORIZON_STEPS + n_signals] > prices[:, :n_signals]


def trades_frame(prices: np.ndarray, long: np.ndarray, *, cost_bps: float = 0.0) -> pd.DataFrame:
    """The supervisor's trades frame for signals at every step 0 … n_signals − 1 of each agent's path.

    ``prices`` has shape (n_agents, ≥ n_signals + HORIZON_STEPS), ``long`` shape (n_agents, n_signals).
    Entry = price at the signal, exit = price HORIZON_STEPS later. gross_bps = (exit/entry − 1) · 1e4
    for LONG, (1 − exit/entry) · 1e4 for SHORT; net_bps = gross_bps − ``cost_bps``. Agents are named
    ``agent_0000`` …; ``run_id`` is the signal's step number as text (repeated across agents: only the
    order within an agent matters), categorical like ``agent`` to keep millions of rows cheap.
    """
    n_agents, n_signals = long.shape
    if prices.shape[1] < n_signals + HORIZON_STEPS:
        raise ValueError("price paths too short for the last exit")
    ratio = prices[:, HORIZON_STEPS : HORIZON_STEPS + n_signals] / prices[:, :n_signals]
    gross = np.where(long, ratio - 1.0, 1.0 - ratio) * 1e4
    step = np.tile(np.arange(n_signals), n_agents)
    ts_ns = START.value + step * STEP.value
    ts = pd.Series(pd.DatetimeIndex(ts_ns.astype("datetime64[ns]")).tz_localize("UTC"))
    agent_names = pd.Index([f"agent_{i:04d}" for i in range(n_agents)])
    run_names = pd.Index([f"s{k:05d}" for k in range(n_signals)])
    return pd.DataFrame(
        {
            "agent": pd.Categorical.from_codes(np.repeat(np.arange(n_agents), n_signals), agent_names),
            "run_id": pd.Categorical.from_codes(step, run_names),
            "instrument": pd.Categorical.from_codes(np.zeros(step.size, dtype=np.int8), [INSTRUMENT]),
            "ts": ts,
            "exit_ts": ts + HORIZON_STEPS * STEP,
            "direction": pd.Categorical.from_codes(long.ravel().astype(np.int8), ["SHORT", "LONG"]),
            "gross_bps": gross.ravel(),
            "net_bps": gross.ravel() - cost_bps,
            "regime": pd.Categorical.from_codes(np.full(step.size, -1, dtype=np.int8), ["trend"]),
            "confidence": np.full(step.size, np.nan),
        }
    )


def zero_skill_fleet(seed: int, n_agents: int = 1000, days: int = 60) -> pd.DataFrame:
    """Driftless paths (3 %/day), directions flipping with probability 1/48 per signal."""
    rng = np.random.default_rng(seed)
    n_signals = days * STEPS_PER_DAY
    prices = price_paths(rng, n_agents, n_signals + HORIZON_STEPS)
    flip = 1 / STEPS_PER_DAY
    long = markov_directions(rng, n_agents, n_signals, p_long_to_short=flip, p_short_to_long=flip)
    return trades_frame(prices, long)


def long_biased_fleet(seed: int, n_agents: int = 1000, days: int = 60) -> pd.DataFrame:
    """+1 %/day drift (3 %/day vol), agents LONG 70 % of the time with no timing skill."""
    rng = np.random.default_rng(seed)
    n_signals = days * STEPS_PER_DAY
    prices = price_paths(rng, n_agents, n_signals + HORIZON_STEPS, daily_drift=0.01)
    long = markov_directions(
        rng,
        n_agents,
        n_signals,
        p_long_to_short=0.3 * 2 / STEPS_PER_DAY,
        p_short_to_long=0.7 * 2 / STEPS_PER_DAY,
    )
    return trades_frame(prices, long)
