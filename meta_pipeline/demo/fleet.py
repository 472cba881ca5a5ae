"""The demo fleet's runs: when each agent runs, what each run costs, and the directions it picks.

Each agent is an :class:`~meta_pipeline.demo.agents.AgentSpec`. Its runs (3–10 a day by default) end at a signal time drawn
uniformly in the UTC day (ms resolution; 10 % on an exact minute boundary, to exercise the "open
time ≥ t" price rule, 50 % on a whole second). A share of the runs emits a signal; the rest only
write telemetry.

Agent skill comes from the bars. For a signal at t the fleet takes the realised 24 h return (price at
t to price at t + 24 h, docs/rules.md, *Pricing and PnL*) and picks the right direction with
probability ``p`` (per regime for ``kappa_regime``). Each agent then has to land in a target band:
its own ``pnl_band`` and ``hit_band``, plus staying at least :data:`MARGIN_PNL` away from the
summed-PnL thresholds (−150, 0, +150 bps) and :data:`MARGIN_RATE` away from the promotion hit rate.
Direction draws are repeated, from the agent's own random stream, until the realised statistics land
in the band; the first draw that lands is used, so the result stays deterministic. This makes the
intended decision hold for any seed, not just the default one, and raises if no draw lands.

The thresholds are :class:`~meta_pipeline.supervisor.policy.SupervisorPolicy`'s defaults
(docs/rules.md, *Supervisor rules*). Error rate, average latency and cost over all runs follow from
each agent's spec (error share, median latency, tokens and prices), not from the draws; they are
checked afterwards to stay :data:`MARGIN_RATE` (error rate), :data:`MARGIN_LATENCY_MS` and
:data:`MARGIN_COST_USD` away from their thresholds, and generation raises if one does not. Error rate
is the share of runs with ``errors > 0``; ``errors`` is 1 on every erroring run except
``epsilon_flaky``'s, so ``sum(errors) / runs`` gives the same decisions (both readings are checked).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from meta_pipeline.demo.agents import AgentSpec
from meta_pipeline.demo.market import (
    DAY_MS,
    GAP_SYMBOL,
    MINUTE_MS,
    SPELLINGS,
    Bars,
    gap_start_ms,
    price_at,
    regimes,
)
from meta_pipeline.supervisor.policy import SupervisorPolicy

POLICY = SupervisorPolicy()  # the fleet is built against the default rules
HORIZON_MS = DAY_MS  # the supervisor's focus horizon: 24 h

# how far every agent's statistics stay from the thresholds they are compared with
MARGIN_PNL = 30.0  # bps of summed pnl
MARGIN_RATE = 0.02  # of hit rate and error rate (shares)
MARGIN_LATENCY_MS = 100.0
MARGIN_COST_USD = 1.0


@dataclass
class Runs:
    """All runs of one agent, one array element per run, sorted by time."""

    spec: AgentSpec
    run_id: list[str]
    sig_ms: np.ndarray  # when the run ended (= the signal's ts)
    latency: np.ndarray
    tokens_in: np.ndarray
    tokens_out: np.ndarray
    errors: np.ndarray
    cost: np.ndarray
    emits: np.ndarray  # bool: a valid signal line
    base: np.ndarray  # object: base asset per run
    spelling: list[str]
    regime: np.ndarray
    sign: np.ndarray  # +1 LONG, -1 SHORT (runs with a signal)
    right: np.ndarray
    pnl: np.ndarray  # 24 h bps, NaN if unpriced or no signal


def simulate_agent(
    spec: AgentSpec,
    rng: np.random.Generator,
    bars: dict[str, Bars],
    start: date,
    start_ms: int,
    days: int,
) -> Runs:
    """One agent's runs over ``days`` days from ``start`` (at ``start_ms``), drawn from ``rng``."""
    extra_ms: list[int] = []
    if spec.unpriced_gap_signals:  # one signal whose entry, one whose 24 h exit falls in the gap
        gap_ms = gap_start_ms(start_ms)
        extra_ms = [gap_ms + 30_500, gap_ms - DAY_MS + 45_000]
    runs = _make_runs(spec, rng, start_ms, start, days, extra_ms)
    _choose_directions(runs, rng, bars)
    _finish_runs(runs)
    _check_reliability_margins(runs)
    return runs


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "agent"


def _make_runs(
    spec: AgentSpec, rng: np.random.Generator, start_ms: int, start: date, days: int, extra_ms: Sequence[int]
) -> Runs:
    lo, hi = spec.runs_per_day
    per_day = rng.integers(lo, hi + 1, days)
    day_idx = np.repeat(np.arange(days), per_day)
    offset = rng.integers(120_000, DAY_MS - 60_000, len(day_idx))
    snap = rng.random(len(day_idx))
    offset = np.where(
        snap < 0.10, offset // MINUTE_MS * MINUTE_MS, np.where(snap < 0.60, offset // 1000 * 1000, offset)
    )
    sig_ms = start_ms + day_idx * DAY_MS + offset
    forced = np.zeros(len(sig_ms), dtype=bool)
    if extra_ms:
        sig_ms = np.concatenate((sig_ms, np.asarray(extra_ms, dtype=np.int64)))
        forced = np.concatenate((forced, np.ones(len(extra_ms), dtype=bool)))
    order = np.lexsort((np.arange(len(sig_ms)), sig_ms))
    sig_ms, forced = sig_ms[order], forced[order]
    n = len(sig_ms)
    day_of = (sig_ms - start_ms) // DAY_MS
    run_no = np.zeros(n, dtype=np.int64)
    for i in range(1, n):
        run_no[i] = run_no[i - 1] + 1 if day_of[i] == day_of[i - 1] else 0
    slug = _slug(spec.name)
    run_id = [
        f"{slug}-{(start + timedelta(days=int(d))).strftime('%Y%m%d')}-{k + 1:03d}"
        for d, k in zip(day_of.tolist(), run_no.tolist(), strict=True)
    ]

    latency = np.round(spec.latency_ms * np.exp(0.3 * rng.standard_normal(n) - 0.045)).astype(np.int64)
    errors = np.zeros(n, dtype=np.int64)
    n_err = int(round(spec.error_share * n))
    candidates = np.flatnonzero(~forced)
    if n_err:
        erroring = rng.choice(candidates, size=n_err, replace=False)
        errors[erroring] = rng.integers(1, 4, n_err) if spec.errors_without_signal else 1
        if spec.errors_without_signal:
            latency[erroring] = np.round(latency[erroring] * rng.uniform(3.0, 6.0, n_err)).astype(np.int64)
    tin = np.round(spec.tokens[0] * np.exp(0.2 * rng.standard_normal(n))).astype(np.int64)
    tout = np.round(spec.tokens[1] * np.exp(0.3 * rng.standard_normal(n))).astype(np.int64)
    tout = np.where(errors > 0, tout // 3, tout)

    may_emit = ~forced & ~((errors > 0) & spec.errors_without_signal)
    if spec.n_trades is not None:
        emits = np.zeros(n, dtype=bool)
        emits[rng.choice(np.flatnonzero(may_emit), size=spec.n_trades, replace=False)] = True
    else:
        emits = may_emit & (rng.random(n) < spec.signal_share)
    emits |= forced
    base = np.asarray(spec.universe, dtype=object)[rng.integers(0, len(spec.universe), n)]
    base[forced] = GAP_SYMBOL[:-4]
    spelling_pick = rng.integers(0, 1_000_000, n)
    spelling = [
        SPELLINGS[b][k % len(SPELLINGS[b])]
        for b, k in zip(base.tolist(), spelling_pick.tolist(), strict=True)
    ]
    return Runs(
        spec,
        run_id,
        sig_ms,
        latency,
        tin,
        tout,
        errors,
        np.zeros(n),
        emits,
        base,
        spelling,
        np.ones(n, dtype=np.int64),
        np.zeros(n, dtype=np.int64),
        np.zeros(n, dtype=bool),
        np.full(n, np.nan),
    )


def _clear_of_thresholds(pnl: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """True where a draw's summed pnl and hit rate keep their margins from every threshold."""
    ok = np.ones(pnl.shape, dtype=bool)
    for threshold in (POLICY.kill_below_pnl_bps, 0.0, POLICY.promote_min_pnl_bps):
        ok &= np.abs(pnl - threshold) >= MARGIN_PNL
    ok &= np.abs(hit - POLICY.promote_min_hit_rate) >= MARGIN_RATE
    return ok


def _choose_directions(runs: Runs, rng: np.random.Generator, bars: dict[str, Bars]) -> None:
    spec = runs.spec
    idx = np.flatnonzero(runs.emits)
    t = runs.sig_ms[idx]
    ret = np.full(len(idx), np.nan)
    regime = np.ones(len(idx), dtype=np.int64)
    for b in sorted(set(runs.base[idx].tolist())):
        m = runs.base[idx] == b
        bar = bars[f"{b}USDT"]
        entry = price_at(bar.open_time, bar.open, t[m])
        exit_ = price_at(bar.open_time, bar.open, t[m] + HORIZON_MS)
        ret[m] = exit_ / entry - 1.0
        regime[m] = regimes(bar, t[m])
    priced = np.isfinite(ret)
    truth = np.where(ret < 0, -1, 1)  # a flat move counts as LONG being "right"; pnl is 0 either way
    p = spec.p_right(regime)
    chosen = None
    for _ in range(40):
        u = rng.random((500, len(idx)))
        right = u < p
        sign = np.where(right, truth, -truth)
        pnl = np.where(priced, sign * np.nan_to_num(ret) * 1e4, 0.0)
        total = pnl.sum(axis=1)
        hits = (pnl > 0).sum(axis=1) / max(int(priced.sum()), 1)
        ok = (total >= spec.pnl_band[0]) & (total <= spec.pnl_band[1])
        ok &= (hits >= spec.hit_band[0]) & (hits <= spec.hit_band[1])
        ok &= _clear_of_thresholds(total, hits)
        if spec.regime_story:
            ok &= (pnl * (regime == 0)).sum(axis=1) > 0
            ok &= (pnl * (regime == 2)).sum(axis=1) < 0
        if ok.any():
            k = int(np.argmax(ok))
            chosen = (right[k], sign[k], pnl[k])
            break
    if chosen is None:
        raise RuntimeError(f"demo: no direction draw for {spec.name!r} lands in its target band")
    runs.right[idx], runs.sign[idx] = chosen[0], chosen[1]
    runs.pnl[idx] = np.where(priced, chosen[2], np.nan)
    runs.regime[idx] = regime


def _finish_runs(runs: Runs) -> None:
    spec = runs.spec
    if spec.latency_spikes_on_losses:
        losing = np.nan_to_num(runs.pnl) < 0
        runs.latency[losing] = np.round(runs.latency[losing] * 1.6).astype(np.int64)
    runs.cost = np.round(
        runs.tokens_in * spec.usd_per_mtok[0] / 1e6 + runs.tokens_out * spec.usd_per_mtok[1] / 1e6, 6
    )


def _check_reliability_margins(runs: Runs) -> None:
    """Raise if error rate, average latency or cost over all runs sits near a threshold."""
    name = runs.spec.name
    for error_rate in (float((runs.errors > 0).mean()), float(runs.errors.mean())):
        if error_rate == 0.0:  # the clean case: passes the promotion gate, no threshold to be near
            continue
        thresholds = (POLICY.promote_max_error_rate, POLICY.errors_above_rate, POLICY.kill_above_error_rate)
        for threshold in thresholds:
            if abs(error_rate - threshold) < MARGIN_RATE:
                raise RuntimeError(f"demo: {name!r} error rate {error_rate:.3f} is too close to {threshold}")
    latency = float(runs.latency.mean())
    if abs(latency - POLICY.promote_max_avg_latency_ms) < MARGIN_LATENCY_MS:
        raise RuntimeError(f"demo: {name!r} average latency {latency:.0f} ms is too close to the gate")
    cost = float(runs.cost.sum())
    if abs(cost - POLICY.cost_above_usd) < MARGIN_COST_USD:
        raise RuntimeError(f"demo: {name!r} cost {cost:.2f} USD is too close to the limit")
