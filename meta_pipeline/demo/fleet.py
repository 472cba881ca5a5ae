"""The demo fleet's runs: when each agent runs, what each run costs, and the directions it picks.

Each agent is an :class:`~meta_pipeline.demo.agents.AgentSpec`. Its runs (3–10 a day by default) end at a signal time drawn
uniformly in the UTC day (ms resolution; 10 % on an exact minute boundary, to exercise the "open
time ≥ t" price rule, 50 % on a whole second). A share of the runs emits a signal; the rest only
write telemetry.

Agent skill comes from the bars. For a signal at t the fleet takes the realised 24 h return (price at
t to price at t + 24 h, docs/rules.md, *Pricing and PnL*) and picks the right direction with
probability ``p`` (per regime for ``kappa_regime``), independently for every signal. Each agent then
has to land in a target band: its own ``pnl_band`` and ``hit_band``, plus staying at least
:data:`MARGIN_PNL` away from the summed-PnL thresholds (−150, 0, +150 bps) and :data:`MARGIN_RATE`
away from the promotion hit rate. An agent with a ``timing_psr_band`` must also land there with the
probabilistic Sharpe ratio of its timing returns on its chain of non-overlapping trades, computed by
:func:`meta_pipeline.supervisor.significance.significance_by_agent` on the agent's own matured 24 h
trades exactly as the supervisor will see them (an undefined PSR counts as 0), and stay
:data:`MARGIN_PSR` away from the promotion gate. Direction draws are repeated, from the agent's own
random stream, until the realised statistics land in the band; the first draw that lands is used, so
the result stays deterministic. This makes the intended decision hold for any seed, not just the
default one, and raises if no draw lands.

An agent that ``rides_a_rally`` has no skill and no draws: it is live for a few days only, always LONG
on one symbol. Its stretch is the first window (shortest first, then earliest, then symbol order) in
which the runs drawn for it would land in its bands, all priced; its runs outside the window are
dropped (it was not live then). Its timing returns are all 0, so its PSR is undefined.

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
import pandas as pd

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
from meta_pipeline.supervisor import significance
from meta_pipeline.supervisor.policy import SupervisorPolicy

POLICY = SupervisorPolicy()  # the fleet is built against the default rules
HORIZON_MS = DAY_MS  # the supervisor's focus horizon: 24 h

# how far every agent's statistics stay from the thresholds they are compared with
MARGIN_PNL = 30.0  # bps of summed pnl
MARGIN_RATE = 0.02  # of hit rate and error rate (shares)
MARGIN_LATENCY_MS = 100.0
MARGIN_COST_USD = 1.0
MARGIN_PSR = 0.02  # of the chain timing PSR (a probability)
MIN_TRADES_MARGIN = 2  # a rally rider has at least promote_min_trades + this many trades

RALLY_DAYS = (4, 10)  # shortest and longest stretch a rally rider is live (days)
PSR_CANDIDATES = 64  # draws in band per batch whose timing PSR is computed, at most


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
    if spec.rides_a_rally:
        runs = _ride_a_rally(runs, rng, bars, start_ms, days)
    else:
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


def _returns(bar: Bars, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Realised 24 h return (a fraction; NaN when unpriced) and regime index of signals at ``t`` (ms)."""
    entry = price_at(bar.open_time, bar.open, t)
    exit_ = price_at(bar.open_time, bar.open, t + HORIZON_MS)
    return exit_ / entry - 1.0, regimes(bar, t)


def _in_band(value: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    return (value >= band[0]) & (value <= band[1])


def _timing_psr(runs: Runs, idx: np.ndarray, signs: np.ndarray, pnl: np.ndarray) -> np.ndarray:
    """Chain timing PSR of each direction draw (rows of ``signs`` and ``pnl``, shape (k, len(idx))),
    computed by the supervisor's significance module on the trades frame it would read: the priced
    signals ``idx`` of ``runs`` as matured 24 h trades, net = gross (the round-trip cost defaults to 0).
    Each draw is a separate agent of one frame. Returns shape (k,); NaN where the PSR is undefined."""
    k, n = signs.shape
    ts = pd.to_datetime(np.tile(runs.sig_ms[idx], k), unit="ms", utc=True)
    gross = pnl.ravel()
    trades = pd.DataFrame(
        {
            "agent": np.repeat(np.arange(k), n),
            "run_id": np.tile(np.asarray(runs.run_id, dtype=object)[idx], k),
            "instrument": np.tile(np.asarray([f"{b}USDT" for b in runs.base[idx]], dtype=object), k),
            "ts": ts,
            "exit_ts": ts + pd.Timedelta(milliseconds=HORIZON_MS),
            "direction": np.where(signs.ravel() > 0, "LONG", "SHORT"),
            "gross_bps": gross,
            "net_bps": gross,
        }
    )
    psr = significance.significance_by_agent(trades, prob=POLICY.psr_probability)["timing_psr"]
    return psr.reindex(np.arange(k)).to_numpy(dtype="float64")


def _psr_lands(spec: AgentSpec, psr: np.ndarray) -> np.ndarray:
    """True where a chain timing PSR (NaN: undefined, counted as 0) lands in the agent's band, clear of
    the promotion gate."""
    value = np.nan_to_num(psr, nan=0.0)
    ok = _in_band(value, spec.timing_psr_band) if spec.timing_psr_band else np.ones(value.shape, bool)
    if POLICY.promote_min_timing_psr:
        ok &= np.abs(value - POLICY.promote_min_timing_psr) >= MARGIN_PSR
    return ok


def _choose_directions(runs: Runs, rng: np.random.Generator, bars: dict[str, Bars]) -> None:
    spec = runs.spec
    idx = np.flatnonzero(runs.emits)
    t = runs.sig_ms[idx]
    ret = np.full(len(idx), np.nan)
    regime = np.ones(len(idx), dtype=np.int64)
    for b in sorted(set(runs.base[idx].tolist())):
        m = runs.base[idx] == b
        ret[m], regime[m] = _returns(bars[f"{b}USDT"], t[m])
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
        if spec.timing_psr_band is not None and ok.any():
            # only the first few draws in band: the first whose PSR lands wins, as without a PSR band
            candidates = np.flatnonzero(ok)[:PSR_CANDIDATES]
            ok[:] = False
            psr = _timing_psr(runs, idx[priced], sign[candidates][:, priced], pnl[candidates][:, priced])
            ok[candidates] = _psr_lands(spec, psr)
        if ok.any():
            k = int(np.argmax(ok))
            chosen = (right[k], sign[k], pnl[k])
            break
    if chosen is None:
        raise RuntimeError(f"demo: no direction draw for {spec.name!r} lands in its target band")
    runs.right[idx], runs.sign[idx] = chosen[0], chosen[1]
    runs.pnl[idx] = np.where(priced, chosen[2], np.nan)
    runs.regime[idx] = regime


def _ride_a_rally(
    runs: Runs, rng: np.random.Generator, bars: dict[str, Bars], start_ms: int, days: int
) -> Runs:
    """Keep only the runs of the agent's stretch, always LONG on the stretch's symbol (module docstring).

    Raises RuntimeError when no window of :data:`RALLY_DAYS` days on any symbol of the agent's universe
    lands in its bands."""
    spec = runs.spec
    day_of = (runs.sig_ms - start_ms) // DAY_MS
    emitting = np.flatnonzero(runs.emits)
    ret = {b: _returns(bars[f"{b}USDT"], runs.sig_ms[emitting]) for b in sorted(spec.universe)}
    min_trades = (POLICY.promote_min_trades or 0) + MIN_TRADES_MARGIN
    for length in range(RALLY_DAYS[0], RALLY_DAYS[1] + 1):
        for first in range(days - length + 1):
            live = (day_of[emitting] >= first) & (day_of[emitting] < first + length)
            if live.sum() < min_trades:
                continue
            for base, (r, regime) in ret.items():
                if not np.isfinite(r[live]).all():  # every trade priced
                    continue
                pnl = r[live] * 1e4
                total, hit = np.array([pnl.sum()]), np.array([(pnl > 0).mean()])
                ok = _in_band(total, spec.pnl_band) & _in_band(hit, spec.hit_band)
                if not (ok & _clear_of_thresholds(total, hit))[0]:
                    continue
                keep = (day_of >= first) & (day_of < first + length)
                rally = _subset(runs, keep)
                sel = np.flatnonzero(rally.emits)
                rally.base[:] = base
                pick = rng.integers(0, 1_000_000, len(rally.base))
                rally.spelling = [SPELLINGS[base][k % len(SPELLINGS[base])] for k in pick.tolist()]
                rally.sign[sel], rally.right[sel] = 1, r[live] >= 0
                rally.pnl[sel], rally.regime[sel] = pnl, regime[live]
                psr = _timing_psr(rally, sel, rally.sign[sel][None, :], pnl[None, :])
                if not _psr_lands(spec, psr)[0]:
                    raise RuntimeError(f"demo: {spec.name!r} chain timing PSR {psr[0]} is not in its band")
                return rally
    raise RuntimeError(f"demo: no rising stretch for {spec.name!r} lands in its target band")


def _subset(runs: Runs, keep: np.ndarray) -> Runs:
    """The runs where ``keep`` (bool, one per run) is True."""
    rows = np.flatnonzero(keep)
    return Runs(
        runs.spec,
        [runs.run_id[i] for i in rows],
        runs.sig_ms[rows],
        runs.latency[rows],
        runs.tokens_in[rows],
        runs.tokens_out[rows],
        runs.errors[rows],
        runs.cost[rows],
        runs.emits[rows],
        runs.base[rows],
        [runs.spelling[i] for i in rows],
        runs.regime[rows],
        runs.sign[rows],
        runs.right[rows],
        runs.pnl[rows],
    )


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
