"""The demo fleet's roster: 11 agents, each built to reach one decision under the default rules.

The decisions are those of :class:`~meta_pipeline.supervisor.policy.SupervisorPolicy` with its
default thresholds (docs/rules.md, *Supervisor rules*); :mod:`meta_pipeline.demo.fleet` makes each
agent's statistics land in its bands.

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

``epsilon_flaky`` shows why reliability must count all runs: its erroring runs emit no signal, so
an error rate taken over the runs that traded is 0 and it would be promoted. ``theta_sparse`` passes
every other promotion gate on 8 trades; only the minimum trade count holds it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AgentSpec:
    """How one synthetic agent behaves; see the module docstring for the table."""

    name: str
    skill: float | tuple[float, float, float]  # P(right direction); per regime (trend, range, high_vol)
    intended: str  # the decision the default rules should reach
    why: str
    runs_per_day: tuple[int, int] = (3, 10)
    signal_share: float = 0.6  # P(a run emits a signal)
    n_trades: int | None = None  # exact number of signals instead of signal_share
    latency_ms: float = 550.0  # median
    tokens: tuple[int, int] = (2_500, 400)  # median tokens in / out per run
    usd_per_mtok: tuple[float, float] = (0.15, 0.60)  # price of a million tokens in / out
    error_share: float = 0.0  # exact share of runs with errors > 0
    errors_without_signal: bool = False  # erroring runs emit no signal (and time out: 3–6× latency)
    universe: tuple[str, ...] = ("BTC", "ETH", "SOL", "DOGE")
    model: str = "gpt-4o-mini"
    prompt_version: str = "v3.2"
    pnl_band: tuple[float, float] = (-np.inf, np.inf)  # on the 24 h pnl sum, bps
    hit_band: tuple[float, float] = (0.0, 1.0)
    regime_story: bool = False  # pnl > 0 in trend, < 0 in high_vol
    latency_spikes_on_losses: bool = False  # losing runs take 1.6× as long (something for forensics)
    unpriced_gap_signals: bool = False  # two extra GAP_SYMBOL signals the bar gap leaves unpriced
    hosts_malformed_lines: bool = False  # the deliberate malformed signal lines may use its silent runs

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
        unpriced_gap_signals=True,
        hosts_malformed_lines=True,
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
        latency_spikes_on_losses=True,
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
        "8 trades: passes every other promotion gate, too few trades to promote",
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
        hosts_malformed_lines=True,
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
        hosts_malformed_lines=True,
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
        hosts_malformed_lines=True,
        **_CHEAP,
    ),
)
