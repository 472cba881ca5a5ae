"""A deterministic synthetic data root for the demo: the "demo fleet".

``generate_demo(root)`` (re)writes, from a seed and nothing else (no wall-clock time, no unordered
containers), everything the supervisor reads:

* ``alpha/events.jsonl`` — signals in the app's formats (``Z``/``+00:00``/``+02:00`` offsets,
  fractional seconds, ``BTC``/``BTCUSDT``/``BTC/USDT``/``btc-usdt``/``ETH-USD``/``sol/usdc`` …,
  ``LONG``/``short``), sorted by time, with extra fields (``model``, ``prompt_version``) to keep.
  About 0.7 % of the lines are deliberately bad (one of each: invalid JSON, invalid UTF-8, naive
  ``ts``, numeric ``ts``, direction ``FLAT``, confidence 1.7, missing ``run_id``, ``BTC/EUR``) and
  three valid signals are written twice in a row (exact duplicates).
* ``telemetry/events.jsonl`` — one line per agent run, including the runs that emitted no signal
  (and the runs whose signal line is malformed). Its ``ts`` is the run's start; the signal's ``ts``
  is the run's end (start + ``latency_ms``), so a naive ``{**signal, **telemetry}`` merge visibly
  overwrites the signal time.
* ``bars/<SYMBOL>/<SYMBOL>-1m-<YYYY-MM-DD>.csv`` — Binance daily-dump layout (no header, 12
  columns), BTCUSDT / ETHUSDT / SOLUSDT / DOGEUSDT from ``start`` to ``start + days + 2``: a
  geometric Brownian motion per minute (annualised vol 55–90 %) with an intraday vol profile and
  6-hour vol regimes. Each bar opens at the previous close. SOLUSDT misses 8 minutes
  (14:00–14:07 UTC) on day 12 (:data:`GAP_DAY_INDEX`), and ``gamma_coinflip`` has two signals that
  this gap leaves unpriced: one at entry, and one whose 24 h exit falls in it.

Agent skill comes from these bars. For a signal at ``t`` the generator takes the realised 24 h
return (the open of the first bar at/after ``t`` to the open of the first bar at/after ``t + 24 h``,
the DESIGN.md price rule, with its 5-minute gap limit) and picks the right direction with
probability ``p``. Each agent then has to satisfy a target band. A band is the agent's own range
plus staying clear of every threshold in the seed rules (see margins below). Direction draws are
repeated, from the agent's own random stream, until the realised statistics land in the band.
The first draw that lands is used, so the result stays deterministic. This makes the intended
decision hold for any seed, not just seed 7, and raises if no draw lands.

Default rules (seed sections C, E, F) the fleet is built against, with statistics on matured 24 h
signals and reliability over **all** telemetry runs (the DESIGN.md fix):

* PROMOTE: pnl_sum ≥ 150 bps, hit rate ≥ 0.55, error rate 0, avg latency ≤ 900 ms (plus the
  DESIGN.md fix "no promotion on a lucky trade": a minimum trade count, 10 here);
* KILL: pnl_sum < −150 bps or error rate > 0.20;
* retirement score: +40 (≥ 10 trades and pnl < 0), +30 (pnl < −150), +20 (error rate > 0.10),
  +10 (cost > 5 USD and pnl ≤ 0); ≥ 80 RETIRE (overrides KILL), ≥ 55 WATCH.

Error rate = share of runs with ``errors > 0``. ``errors`` is 1 on every erroring run except
``epsilon_flaky``'s, so ``sum(errors) / runs`` gives the same decisions. Margins kept from every
threshold: 30 bps of pnl, 0.02 of hit rate and error rate, 100 ms of latency, 1 USD of cost.

====================  ==========================================  ========  ============================
agent                 behaviour                                   intended  why
====================  ==========================================  ========  ============================
alpha_trend           skilled (p=0.7), clean, fast, cheap         PROMOTE   passes every gate
beta_meanrev          skilled (p=0.7), slow (~1.5 s)              HOLD      avg latency > 900 ms
gamma_coinflip        coin flip, clean; has the 2 unpriced rows   HOLD      hit rate < 0.55
delta_contrarian      anti-skilled (p=0.3), clean, cheap          KILL      pnl < −150 (score 70)
epsilon_flaky         skilled; ~35 % of runs error and time out,  KILL      error rate > 0.20 over all
                      never on a run that emits a signal                    runs; the trades look clean
zeta_wobbly           slightly negative pnl, errors in ~15 %      WATCH     score 40 + 20 = 60 (HOLD)
eta_burner            anti-skilled, slow, ~50 USD, 15 % errors    RETIRE    score 40+30+20+10 = 100
theta_sparse          skilled, 8 trades in 30 days                HOLD      too few trades to promote
iota_expensive        coin flip, slightly negative, ~25 USD       HOLD      score 40 + 10 = 50 (KEEP)
kappa_regime          right in trend, wrong in high_vol           HOLD      hit rate < 0.55
<b>x</b>              coin flip that made money (HTML in name)    HOLD      hit rate < 0.55; gets capital
====================  ==========================================  ========  ============================

``epsilon_flaky`` shows why reliability must count all runs. Its erroring runs emit no signal, so
if the error rate is taken over trade runs only (seed defect 6) it is 0, and the seed rules would
promote it. ``theta_sparse`` passes the seed's promotion gates on 8 trades (defect 8).

Timestamps: a signal's ``ts`` is drawn uniformly in its UTC day (ms resolution; 10 % on an exact
minute boundary to exercise the "open time ≥ t" rule, 50 % on a whole second). Regime labels come
from the bars before ``t`` (trailing 1 h volatility vs. the symbol's median → ``high_vol``, trailing
4 h move larger than one 4 h sigma → ``trend``, else ``range``).

Run ``python -m meta_pipeline.demo TARGET_DIR [--seed 7] [--start 2025-09-01] [--days 30]``.
Existing input files under TARGET_DIR are replaced (atomically). Stale bar files for the demo
symbols are removed. Supervisor outputs already in the directory are left alone, so use a fresh
directory per seed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np

__all__ = ["AGENTS", "DemoSummary", "generate_demo", "main", "price_at", "GAP_SYMBOL", "GAP_DAY_INDEX"]

MINUTE_MS = 60_000
DAY_MS = 86_400_000
HORIZON_MS = DAY_MS  # the supervisor's focus horizon: 24 h
MAX_STALENESS_MS = 5 * MINUTE_MS  # DESIGN.md: a bar opening > 5 min after t means "no price"
MINUTES_PER_YEAR = 525_600

# symbol: start price, annualised vol, price decimals, volume decimals, base volume per minute,
# trades per minute
SYMBOLS: dict[str, tuple[float, float, int, int, float, float]] = {
    "BTCUSDT": (60_000.0, 0.55, 2, 5, 12.0, 1_100.0),
    "ETHUSDT": (2_500.0, 0.70, 2, 4, 250.0, 900.0),
    "SOLUSDT": (150.0, 0.85, 2, 3, 4_000.0, 700.0),
    "DOGEUSDT": (0.15, 0.90, 5, 0, 1_500_000.0, 400.0),
}
# the spellings the app writes for each base (all normalise to BASEUSDT)
SPELLINGS: dict[str, tuple[str, ...]] = {
    "BTC": ("BTC", "BTCUSDT", "BTC/USDT", "btc-usdt", "BTC-USD", "btc/usdc", "BTCUSDT"),
    "ETH": ("ETH", "ETHUSDT", "ETH/USDT", "eth-usdt", "ETH-USD", "ETH/USDC", "ETHUSDT"),
    "SOL": ("SOL", "SOLUSDT", "SOL/USDT", "sol-usdt", "SOL-USD", "sol/usdc", "SOLUSDT"),
    "DOGE": ("DOGE", "DOGEUSDT", "DOGE/USDT", "doge-usdt", "DOGE-USD", "doge/usdc"),
}

GAP_SYMBOL = "SOLUSDT"
GAP_DAY_INDEX = 12  # day offset from ``start``
GAP_MINUTE = 14 * 60  # 14:00 UTC
GAP_MINUTES = 8

# thresholds of the seed rules and the margins every agent keeps from them
PROMOTE_PNL, PROMOTE_HIT, PROMOTE_LATENCY, MIN_TRADES_TO_PROMOTE = 150.0, 0.55, 900.0, 10
KILL_PNL, KILL_ERROR_RATE = -150.0, 0.20
WATCH_ERROR_RATE, COST_LIMIT = 0.10, 5.0
MARGIN_PNL, MARGIN_RATE, MARGIN_LATENCY, MARGIN_COST = 30.0, 0.02, 100.0, 1.0

REGIMES = ("trend", "range", "high_vol")


@dataclass(frozen=True)
class AgentSpec:
    """How one synthetic agent behaves; see the module docstring for the table."""

    name: str
    skill: float | tuple[float, float, float]  # P(right direction); per regime (trend, range, high_vol)
    intended: str
    why: str
    runs_per_day: tuple[int, int] = (3, 10)
    signal_share: float = 0.6  # P(a run emits a signal)
    n_trades: int | None = None  # exact number of signals instead of signal_share
    latency_ms: float = 550.0  # median
    tokens: tuple[int, int] = (2_500, 400)
    usd_per_mtok: tuple[float, float] = (0.15, 0.60)
    error_share: float = 0.0  # exact share of runs with errors > 0
    errors_without_signal: bool = False  # erroring runs emit no signal
    universe: tuple[str, ...] = ("BTC", "ETH", "SOL", "DOGE")
    model: str = "gpt-4o-mini"
    prompt_version: str = "v3.2"
    pnl_band: tuple[float, float] = (-np.inf, np.inf)  # on the 24 h pnl sum, bps
    hit_band: tuple[float, float] = (0.0, 1.0)
    regime_story: bool = False  # pnl > 0 in trend, < 0 in high_vol

    def p_right(self, regime: np.ndarray) -> np.ndarray:
        if isinstance(self.skill, tuple):
            return np.asarray(self.skill)[regime]
        return np.full(regime.shape, float(self.skill))


_CHEAP = {"model": "gpt-4o-mini", "tokens": (2_500, 400), "usd_per_mtok": (0.15, 0.60)}
_MID = {"model": "claude-3-5-haiku", "tokens": (4_000, 600), "usd_per_mtok": (0.80, 4.00)}

AGENTS: tuple[AgentSpec, ...] = (
    AgentSpec(
        "alpha_trend",
        0.70,
        "PROMOTE",
        "skilled, clean, fast, cheap: passes every gate",
        latency_ms=520,
        pnl_band=(1500, np.inf),
        hit_band=(0.62, 1.0),
        **_CHEAP,
    ),
    AgentSpec(
        "beta_meanrev",
        0.70,
        "HOLD",
        "skilled but avg latency > 900 ms blocks promotion",
        latency_ms=1500,
        model="claude-3-5-sonnet",
        tokens=(2_500, 400),
        usd_per_mtok=(3.0, 15.0),
        pnl_band=(1500, np.inf),
        hit_band=(0.62, 1.0),
    ),
    AgentSpec(
        "gamma_coinflip",
        0.50,
        "HOLD",
        "coin flip: hit rate < 0.55, pnl well above -150",
        latency_ms=480,
        pnl_band=(-100, np.inf),
        hit_band=(0.45, 0.52),
        **_CHEAP,
    ),
    AgentSpec(
        "delta_contrarian",
        0.30,
        "KILL",
        "anti-skilled: pnl < -150 (score 70, not RETIRE)",
        latency_ms=600,
        pnl_band=(-np.inf, -1500),
        hit_band=(0.0, 0.40),
        **_CHEAP,
    ),
    AgentSpec(
        "epsilon_flaky",
        0.68,
        "KILL",
        "errors in ~35% of all runs (all of them runs without a signal): error rate > 0.20",
        latency_ms=560,
        error_share=0.35,
        errors_without_signal=True,
        pnl_band=(300, np.inf),
        hit_band=(0.58, 1.0),
        **_CHEAP,
    ),
    AgentSpec(
        "zeta_wobbly",
        0.48,
        "WATCH",
        "slightly negative pnl + 15% erroring runs: score 60",
        latency_ms=600,
        error_share=0.15,
        pnl_band=(-120, -30),
        **_MID,
    ),
    AgentSpec(
        "eta_burner",
        0.30,
        "RETIRE",
        "anti-skilled, > 5 USD of tokens, 15% errors: score 100",
        latency_ms=1300,
        error_share=0.15,
        model="o1",
        tokens=(8_000, 2_500),
        usd_per_mtok=(15.0, 60.0),
        pnl_band=(-np.inf, -1500),
        hit_band=(0.0, 0.40),
    ),
    AgentSpec(
        "theta_sparse",
        0.75,
        "HOLD",
        "8 trades: would pass the seed gates, too few to promote",
        runs_per_day=(3, 3),
        n_trades=8,
        latency_ms=450,
        pnl_band=(300, np.inf),
        hit_band=(0.62, 1.0),
        universe=("BTC", "ETH"),
        **_CHEAP,
    ),
    AgentSpec(
        "iota_expensive",
        0.50,
        "HOLD",
        "coin flip, ~25 USD of tokens, slightly negative: score 50",
        latency_ms=650,
        model="gpt-4-turbo",
        tokens=(9_000, 1_500),
        usd_per_mtok=(10.0, 30.0),
        pnl_band=(-120, -30),
    ),
    AgentSpec(
        "kappa_regime",
        (0.80, 0.50, 0.20),
        "HOLD",
        "right in trend, wrong in high_vol: hit rate < 0.55 (forensics: regime mismatch)",
        latency_ms=610,
        pnl_band=(-100, np.inf),
        hit_band=(0.40, 0.53),
        regime_story=True,
        **_MID,
    ),
    AgentSpec(
        "<b>x</b>",
        0.50,
        "HOLD",
        "coin flip that made money: hit rate < 0.55; HTML in its name",
        latency_ms=500,
        pnl_band=(200, np.inf),
        hit_band=(0.45, 0.53),
        prompt_version="v0.1-<i>",
        **_CHEAP,
    ),
)


@dataclass
class DemoSummary:
    root: Path
    bars_dir: Path
    agents: list[str]
    symbols: list[str]
    days: tuple[date, date]  # first and last signal day (UTC)
    n_signals: int  # valid, distinct signal lines
    n_telemetry: int  # telemetry lines = agent runs
    n_malformed: int  # signal lines the quarantine must catch
    n_duplicates: int  # extra copies of valid signal lines
    intended: dict[str, str]  # agent → PROMOTE / HOLD / WATCH / KILL / RETIRE
    reasons: dict[str, str] = field(default_factory=dict)
    malformed_kinds: list[str] = field(default_factory=list)
    gap: tuple[str, date, str, int] = ("", date.min, "", 0)  # symbol, day, "HH:MM" start, minutes
    bar_days: tuple[date, date] = (date.min, date.min)

    @property
    def signals_path(self) -> Path:
        return self.root / "alpha" / "events.jsonl"

    @property
    def telemetry_path(self) -> Path:
        return self.root / "telemetry" / "events.jsonl"


# --------------------------------------------------------------------------- bars


@dataclass
class _Bars:
    symbol: str
    open_time: np.ndarray  # int64 ms, gap removed
    columns: list[np.ndarray]  # the 12 Binance columns, gap removed
    decimals: tuple[int, int]
    # for regime labels: the continuous minute grid
    t0: int
    log_ret: np.ndarray

    @property
    def open(self) -> np.ndarray:
        return self.columns[1]


def _make_bars(symbol: str, rng: np.random.Generator, t0: int, n_days: int) -> _Bars:
    s0, vol, pdec, vdec, base_vol, base_trades = SYMBOLS[symbol]
    n = n_days * 1440
    minute_of_day = np.arange(n) % 1440
    # intraday profile: quiet around 03:00 UTC, busiest around 15:00 UTC (mean 1)
    profile = 1.0 + 0.35 * np.sin(2 * np.pi * (minute_of_day - 9 * 60) / 1440)
    # 6-hour vol regimes (vol clustering), mean-one lognormal
    blocks = np.exp(0.45 * rng.standard_normal(n_days * 4) - 0.5 * 0.45**2)
    sigma = vol / np.sqrt(MINUTES_PER_YEAR) * profile * np.repeat(blocks, 360)
    z = rng.standard_normal(n)
    log_ret = -0.5 * sigma**2 + sigma * z
    close_raw = s0 * np.exp(np.cumsum(log_ret))
    close = np.round(close_raw, pdec)
    open_ = np.concatenate(([round(s0, pdec)], close[:-1]))
    hi_body, lo_body = np.maximum(open_, close), np.minimum(open_, close)
    wick = sigma * close_raw
    high = np.maximum(np.round(hi_body + np.abs(rng.normal(0.0, 0.6, n)) * wick, pdec), hi_body)
    low = np.minimum(np.round(lo_body - np.abs(rng.normal(0.0, 0.6, n)) * wick, pdec), lo_body)
    activity = profile * (0.4 + np.abs(z)) * np.exp(0.4 * rng.standard_normal(n))
    volume = np.round(base_vol * activity, vdec)
    volume = np.maximum(volume, 10.0**-vdec)
    typical = (open_ + high + low + close) / 4
    quote_volume = np.round(volume * typical, 8)
    trades = np.maximum(1, np.round(base_trades * activity)).astype(np.int64)
    taker_base = np.round(volume * rng.uniform(0.35, 0.65, n), vdec)
    taker_quote = np.round(taker_base * typical, 8)
    open_time = t0 + np.arange(n, dtype=np.int64) * MINUTE_MS
    cols = [
        open_time,
        open_,
        high,
        low,
        close,
        volume,
        open_time + (MINUTE_MS - 1),
        quote_volume,
        trades,
        taker_base,
        taker_quote,
    ]
    keep = np.ones(n, dtype=bool)
    if symbol == GAP_SYMBOL:
        first = GAP_DAY_INDEX * 1440 + GAP_MINUTE
        keep[first : first + GAP_MINUTES] = False
    cols = [c[keep] for c in cols]
    return _Bars(symbol, cols[0], cols, (pdec, vdec), t0, log_ret)


def price_at(open_time: np.ndarray, opens: np.ndarray, t_ms: np.ndarray) -> np.ndarray:
    """DESIGN.md price rule: open of the first bar with open_time ≥ t; NaN if it opens > 5 min late."""
    t_ms = np.asarray(t_ms, dtype=np.int64)
    idx = np.searchsorted(open_time, t_ms, side="left")
    ok = idx < len(open_time)
    safe = np.minimum(idx, len(open_time) - 1)
    ok &= (open_time[safe] - t_ms) <= MAX_STALENESS_MS
    return np.where(ok, opens[safe], np.nan)


def _regimes(bars: _Bars, t_ms: np.ndarray) -> np.ndarray:
    """0 trend, 1 range, 2 high_vol, from bars that closed before t only."""
    lr = bars.log_ret
    csum = np.concatenate(([0.0], np.cumsum(lr)))
    csq = np.concatenate(([0.0], np.cumsum(lr * lr)))
    j = (t_ms - bars.t0) // MINUTE_MS - 1  # last bar closed at t
    j = np.clip(j, 240, len(lr) - 1)
    s60 = csum[j + 1] - csum[j - 59]
    var60 = (csq[j + 1] - csq[j - 59]) / 60 - (s60 / 60) ** 2
    vol60 = np.sqrt(np.maximum(var60, 0.0))
    all_var = np.sqrt(np.maximum((csq[61:] - csq[1:-60]) / 60 - ((csum[61:] - csum[1:-60]) / 60) ** 2, 0.0))
    median_vol = float(np.median(all_var))
    move4h = csum[j + 1] - csum[j - 239]
    regime = np.ones(len(j), dtype=np.int64)
    regime[np.abs(move4h) > median_vol * np.sqrt(240)] = 0
    regime[vol60 > 1.3 * median_vol] = 2
    return regime


def _format_bars(bars: _Bars) -> bytes:
    pdec, vdec = bars.decimals
    fmt = f"%d,%.{pdec}f,%.{pdec}f,%.{pdec}f,%.{pdec}f,%.{vdec}f,%d,%.8f,%d,%.{vdec}f,%.8f,0\n"
    rows = zip(*(c.tolist() for c in bars.columns), strict=True)
    return "".join([fmt % row for row in rows]).encode("ascii")


# --------------------------------------------------------------------------- agents


@dataclass
class _Runs:
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


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "agent"


def _ms_to_dt(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(ms))


def _iso(ms: int, style: int) -> str:
    """0: ``Z``; 1: ``+00:00``; 2: ``+02:00`` (same instant); 3: ``Z`` with 6 fraction digits."""
    dt = _ms_to_dt(ms)
    frac = int(ms) % 1000
    if style == 2:
        dt = dt.astimezone(timezone(timedelta(hours=2)))
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if style == 3:
        text += f".{frac * 1000:06d}"
    elif frac:
        text += f".{frac:03d}"
    return text + {0: "Z", 1: "+00:00", 2: "+02:00", 3: "Z"}[style]


def _telemetry_iso(ms: int) -> str:
    return _ms_to_dt(ms).strftime("%Y-%m-%dT%H:%M:%S") + f".{int(ms) % 1000:03d}Z"


def _make_runs(
    spec: AgentSpec, rng: np.random.Generator, start_ms: int, start: date, days: int, extra_ms: Sequence[int]
) -> _Runs:
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
    runs = _Runs(
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
    return runs


def _clear_of_thresholds(pnl: np.ndarray, hit: np.ndarray) -> np.ndarray:
    ok = np.ones(pnl.shape, dtype=bool)
    for threshold in (KILL_PNL, 0.0, PROMOTE_PNL):
        ok &= np.abs(pnl - threshold) >= MARGIN_PNL
    ok &= np.abs(hit - PROMOTE_HIT) >= MARGIN_RATE
    return ok


def _choose_directions(runs: _Runs, rng: np.random.Generator, bars: dict[str, _Bars]) -> None:
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
        regime[m] = _regimes(bar, t[m])
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


def _finish_runs(runs: _Runs) -> None:
    spec = runs.spec
    if spec.name == "zeta_wobbly":  # its losses come with latency spikes (something for forensics)
        losing = np.nan_to_num(runs.pnl) < 0
        runs.latency[losing] = np.round(runs.latency[losing] * 1.6).astype(np.int64)
    runs.cost = np.round(
        runs.tokens_in * spec.usd_per_mtok[0] / 1e6 + runs.tokens_out * spec.usd_per_mtok[1] / 1e6, 6
    )


# --------------------------------------------------------------------------- lines


def _signal_lines(runs: _Runs, rng: np.random.Generator) -> list[tuple[int, str, str, bytes]]:
    spec = runs.spec
    out = []
    n = len(runs.sig_ms)
    style = rng.choice(4, size=n, p=[0.7, 0.1, 0.1, 0.1])
    lower = rng.random(n) < 0.04
    conf_noise = rng.normal(0.0, 0.08, n)
    score_mult = rng.uniform(0.7, 1.1, n)
    for i in np.flatnonzero(runs.emits).tolist():
        direction = "LONG" if runs.sign[i] > 0 else "SHORT"
        if lower[i]:
            direction = direction.lower()
        skilled = not isinstance(spec.skill, tuple) and spec.skill > 0.6
        conf = float(
            np.clip(0.6 + (0.08 if (skilled and runs.right[i]) else 0.0) + conf_noise[i], 0.05, 0.99)
        )
        conf = round(conf, 3)
        obj = {
            "ts": _iso(int(runs.sig_ms[i]), int(style[i])),
            "agent": spec.name,
            "run_id": runs.run_id[i],
            "symbol": runs.spelling[i],
            "direction": direction,
            "regime": REGIMES[int(runs.regime[i])],
            "confidence": conf,
            "score_final": round(conf * float(score_mult[i]), 4),
            "model": spec.model,
            "prompt_version": spec.prompt_version,
        }
        out.append(
            (
                int(runs.sig_ms[i]),
                spec.name,
                runs.run_id[i],
                json.dumps(obj, ensure_ascii=False).encode("utf-8"),
            )
        )
    return out


MALFORMED_KINDS = (
    "invalid_json",
    "invalid_utf8",
    "ts_without_offset",
    "ts_numeric",
    "bad_direction",
    "bad_confidence",
    "missing_run_id",
    "bad_symbol",
)


def _malformed_lines(
    fleet: list[_Runs], rng: np.random.Generator, start_ms: int, days: int
) -> list[tuple[int, str, str, bytes]]:
    """One bad line per kind, each on a run that emitted no valid signal (so it has telemetry)."""
    hosts = [
        r for r in fleet if r.spec.name in ("gamma_coinflip", "iota_expensive", "kappa_regime", "<b>x</b>")
    ]
    pool = [
        (int(r.sig_ms[i]), k, i)
        for k, r in enumerate(hosts)
        for i in np.flatnonzero(~r.emits).tolist()
        if DAY_MS <= r.sig_ms[i] - start_ms < (days - 1) * DAY_MS
    ]
    pool.sort()
    picks = sorted(rng.choice(len(pool), size=len(MALFORMED_KINDS), replace=False).tolist())
    out = []
    for kind, p in zip(MALFORMED_KINDS, picks, strict=True):
        ms, k, i = pool[p]
        r = hosts[k]
        obj: dict = {
            "ts": _iso(ms, 0),
            "agent": r.spec.name,
            "run_id": r.run_id[i],
            "symbol": SPELLINGS["BTC"][1],
            "direction": "LONG",
            "regime": "range",
            "confidence": 0.61,
            "score_final": 0.55,
            "model": r.spec.model,
            "prompt_version": r.spec.prompt_version,
        }
        if kind == "ts_without_offset":
            obj["ts"] = _iso(ms - ms % 1000, 0)[:-1]
        elif kind == "ts_numeric":
            obj["ts"] = ms // 1000
        elif kind == "bad_direction":
            obj["direction"] = "FLAT"
        elif kind == "bad_confidence":
            obj["confidence"] = 1.7
        elif kind == "missing_run_id":
            del obj["run_id"]
        elif kind == "bad_symbol":
            obj["symbol"] = "BTC/EUR"
        elif kind == "invalid_utf8":
            obj["model"] = "@@MODEL@@"
        line = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        if kind == "invalid_json":
            line = line[: line.rindex(b",")]  # cut off mid-object: no closing brace
        elif kind == "invalid_utf8":
            line = line.replace(b"@@MODEL@@", b"gpt-4o-\xc3\x28mini")
        out.append((ms, r.spec.name, r.run_id[i], line))
    return out


def _telemetry_lines(runs: _Runs) -> list[tuple[int, str, bytes]]:
    out = []
    for i in range(len(runs.sig_ms)):
        start_ms = int(runs.sig_ms[i] - runs.latency[i])
        obj = {
            "run_id": runs.run_id[i],
            "agent": runs.spec.name,
            "ts": _telemetry_iso(start_ms),
            "latency_ms": int(runs.latency[i]),
            "tokens_in": int(runs.tokens_in[i]),
            "tokens_out": int(runs.tokens_out[i]),
            "errors": int(runs.errors[i]),
            "cost_usd": float(runs.cost[i]),
        }
        out.append((start_ms, runs.run_id[i], json.dumps(obj, ensure_ascii=False).encode("utf-8")))
    return out


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- entry points


def generate_demo(
    root: Path, *, seed: int = 7, start: date = date(2025, 9, 1), days: int = 30
) -> DemoSummary:
    """(Re)write the demo data root; same arguments → byte-identical files."""
    if days < GAP_DAY_INDEX + 2:
        raise ValueError(f"days must be at least {GAP_DAY_INDEX + 2} (the demo fleet needs a month-ish)")
    root = Path(root)
    start_ms = (
        int(
            (
                datetime(start.year, start.month, start.day, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)
            ).total_seconds()
        )
        * 1000
    )
    n_bar_days = days + 3  # signals' 24 h exits need the two days after the last signal day
    bars_seq, agents_seq, extras_seq = np.random.SeedSequence(seed).spawn(3)
    bar_rngs = [np.random.default_rng(s) for s in bars_seq.spawn(len(SYMBOLS))]
    bars = {sym: _make_bars(sym, r, start_ms, n_bar_days) for sym, r in zip(SYMBOLS, bar_rngs, strict=True)}

    gap_ms = start_ms + GAP_DAY_INDEX * DAY_MS + GAP_MINUTE * MINUTE_MS
    extra = {"gamma_coinflip": [gap_ms + 30_500, gap_ms - DAY_MS + 45_000]}  # entry / 24 h exit unpriced
    fleet = []
    for spec, seq in zip(AGENTS, agents_seq.spawn(len(AGENTS)), strict=True):
        rng = np.random.default_rng(seq)
        runs = _make_runs(spec, rng, start_ms, start, days, extra.get(spec.name, []))
        _choose_directions(runs, rng, bars)
        _finish_runs(runs)
        fleet.append(runs)

    extras_rng = np.random.default_rng(extras_seq)
    signals = []
    for runs in fleet:
        signals.extend(_signal_lines(runs, extras_rng))
    n_valid = len(signals)
    dup_lines = {signals[k][3] for k in extras_rng.choice(n_valid, size=3, replace=False).tolist()}
    malformed = _malformed_lines(fleet, extras_rng, start_ms, days)
    lines = sorted(signals + malformed, key=lambda s: (s[0], s[1], s[2], s[3]))
    body = bytearray()
    for _ms, _agent, _run_id, line in lines:
        body += line + b"\n"
        if line in dup_lines:  # the app retried an append: the same line twice in a row
            body += line + b"\n"
    _write_atomic(root / "alpha" / "events.jsonl", bytes(body))

    telemetry = sorted((t for runs in fleet for t in _telemetry_lines(runs)), key=lambda t: (t[0], t[1]))
    _write_atomic(root / "telemetry" / "events.jsonl", b"".join(t[2] + b"\n" for t in telemetry))

    bars_dir = root / "bars"
    for sym, bar in bars.items():
        folder = bars_dir / sym
        folder.mkdir(parents=True, exist_ok=True)
        wanted = set()
        day_of = (bar.open_time - start_ms) // DAY_MS
        bounds = np.searchsorted(day_of, np.arange(n_bar_days + 1))
        for d in range(n_bar_days):
            name = f"{sym}-1m-{(start + timedelta(days=d)).isoformat()}.csv"
            wanted.add(name)
            lo, hi = int(bounds[d]), int(bounds[d + 1])
            part = _Bars(
                sym, bar.open_time[lo:hi], [c[lo:hi] for c in bar.columns], bar.decimals, bar.t0, bar.log_ret
            )
            _write_atomic(folder / name, _format_bars(part))
        for stale in sorted(folder.glob(f"{sym}-1m-*.csv")):
            if stale.name not in wanted:
                stale.unlink()

    return DemoSummary(
        root=root,
        bars_dir=bars_dir,
        agents=[a.name for a in AGENTS],
        symbols=list(SYMBOLS),
        days=(start, start + timedelta(days=days - 1)),
        n_signals=n_valid,
        n_telemetry=len(telemetry),
        n_malformed=len(malformed),
        n_duplicates=len(dup_lines),
        intended={a.name: a.intended for a in AGENTS},
        reasons={a.name: a.why for a in AGENTS},
        malformed_kinds=list(MALFORMED_KINDS),
        gap=(
            GAP_SYMBOL,
            start + timedelta(days=GAP_DAY_INDEX),
            f"{GAP_MINUTE // 60:02d}:{GAP_MINUTE % 60:02d}",
            GAP_MINUTES,
        ),
        bar_days=(start, start + timedelta(days=n_bar_days - 1)),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m meta_pipeline.demo", description="Write the deterministic demo data root."
    )
    parser.add_argument("target", type=Path, help="data root to (re)write")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2025, 9, 1))
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args(argv)
    summary = generate_demo(args.target, seed=args.seed, start=args.start, days=args.days)
    print(f"demo data root: {summary.root}")
    print(
        f"  signals   {summary.signals_path} ({summary.n_signals} valid, {summary.n_malformed} malformed, "
        f"{summary.n_duplicates} duplicated)"
    )
    print(f"  telemetry {summary.telemetry_path} ({summary.n_telemetry} runs)")
    print(
        f"  bars      {summary.bars_dir} ({', '.join(summary.symbols)}; "
        f"{summary.bar_days[0]} .. {summary.bar_days[1]})"
    )
    print(f"  signal days {summary.days[0]} .. {summary.days[1]}; gap {summary.gap}")
    for agent in summary.agents:
        print(f"  {agent:<18} {summary.intended[agent]:<8} {summary.reasons[agent]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
