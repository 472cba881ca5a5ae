"""The demo fleet's roster: 12 agents, each built to reach one decision and label under the default rules.

The decisions and labels are those of :class:`~meta_pipeline.supervisor.policy.SupervisorPolicy` with
its default thresholds (docs/rules.md, *Supervisor rules*): decision KILLED, RETIRE, KILL, PROMOTE or
HOLD, label KEEP, WATCH or RETIRE from the retirement score. :mod:`meta_pipeline.demo.fleet` makes each
agent's statistics land in its bands. KILLED is never intended: it is what KILL and RETIRE become on
the next supervisor run, once the pipeline has put those agents on the kill list.

====================  ==========================================  ===============  ===========================
agent                 behaviour                                   intended         why (gate that holds it)
====================  ==========================================  ===============  ===========================
alpha_trend           skilled (p=0.75), clean, fast, cheap        PROMOTE / KEEP   passes every gate; timing
                                                                                   PSR ≥ 0.97 on its chain
beta_meanrev          skilled (p=0.7), slow (~1.5 s)              HOLD / KEEP      avg latency > 900 ms
gamma_coinflip        coin flip, clean; has the 2 unpriced rows   HOLD / KEEP      hit rate < 0.55
delta_contrarian      anti-skilled (p=0.3), clean, cheap          KILL / WATCH     pnl < −150 (score 70)
epsilon_flaky         skilled; ~35 % of runs error and time out,  KILL / KEEP      error rate > 0.20 over
                      never on a run that emits a signal                           all runs; trades look clean
zeta_wobbly           slightly negative pnl, errors in ~15 %;     HOLD / WATCH     pnl < 150, error rate > 0;
                      slow on its losing runs (forensics:                          score 40 + 20 = 60
                      latency)
eta_burner            anti-skilled, slow, ~50 USD, 15 % errors    RETIRE / RETIRE  score 40+30+20+10 = 100
theta_sparse          skilled, only 8 lucky trades                HOLD / KEEP      trades < 10; its timing
                                                                                   PSR ≤ 0.93 fails too
iota_expensive        coin flip, slightly negative, ~25 USD       HOLD / KEEP      pnl < 150 (score 40 + 10
                                                                                   = 50: KEEP)
kappa_regime          right in trend, nearly always wrong in      HOLD / KEEP      hit rate < 0.55
                      high_vol (forensics: regime mismatch)
<b>x</b>              coin flip that made money (HTML in name)    HOLD / KEEP      hit rate < 0.55; gets
                                                                                   capital
mu_always_long        new: live a few days during a rising        HOLD / KEEP      timing PSR undefined ("no
                      stretch of one symbol, always LONG on it                     timing variation")
====================  ==========================================  ===============  ===========================

Two agents pass every gate of the app's first rules (pnl ≥ 150 bps, hit rate ≥ 0.55, error rate 0,
average latency ≤ 900 ms) and are held by the evidence gates. ``theta_sparse`` made its money on 8
trades: the minimum trade count holds it, and the probabilistic Sharpe ratio of its timing returns on
so short a chain fails as well. ``mu_always_long`` made ≥ 180 bps with a hit rate ≥ 0.57 on ≥ 12
trades by holding one symbol LONG while it rose: all of that is the market's drift, its timing returns
are all 0 and the timing-PSR gate holds it. ``epsilon_flaky`` shows why reliability must count all
runs: its erroring runs emit no signal, so an error rate taken over the runs that traded is 0 and the
first rules would promote it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AgentSpec:
    """How one synthetic agent behaves; see the module docstring for the table."""

    name: str
    skill: float | tuple[float, float, float]  # P(right direction); per regime (trend, range, high_vol)
    intended: str  # the decision the default rules should reach (RETIRE, KILL, PROMOTE or HOLD)
    why: str
    label: str = "KEEP"  # the retirement label the default rules should give (KEEP, WATCH or RETIRE)
    held_by: tuple[str, ...] = ()  # HOLD: the promotion gates (names in supervisor.decisions) built to fail
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
    timing_psr_band: tuple[float, float] | None = None  # on the chain timing PSR (undefined counts as 0)
    regime_story: bool = False  # pnl > 0 in trend, < 0 in high_vol
    rides_a_rally: bool = False  # live only during a rising stretch of one symbol, always LONG on it
    latency_spikes_on_losses: bool = False  # losing runs take 1.6× as long (something for forensics)
    unpriced_gap_signals: bool = False  # two extra GAP_SYMBOL signals the bar gap leaves unpriced
    hosts_malformed_lines: bool = False  # the deliberate malformed signal lines may use its silent runs

    def p_right(self, regime: np.ndarray) -> np.ndarray:
        if isinstance(self.skill, tuple):
            return np.asarray(self.skill)[regime]
        return np.full(regime.shape, float(self.skill))


_CHEAP = {"model": "gpt-4o-mini", "tokens": (2_500, 400), "usd_per_mtok": (0.15, 0.60)}

AGENTS: tuple[AgentSpec, ...] = (
    AgentSpec(
        "alpha_trend",
        0.75,
        "PROMOTE",
        "skilled, clean, fast, cheap: passes every gate, timing PSR >= 0.97 on its chain",
        latency_ms=520,
        pnl_band=(1500, np.inf),
        hit_band=(0.62, 1.0),
        timing_psr_band=(0.97, 1.0),
        **_CHEAP,
    ),
    AgentSpec(
        "beta_meanrev",
        0.70,
        "HOLD",
        "skilled but avg latency > 900 ms blocks promotion",
        held_by=("avg latency",),
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
        held_by=("hit rate",),
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
        "anti-skilled: pnl < -150 (score 70: label WATCH, not RETIRE)",
        label="WATCH",
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
        "HOLD",
        "slightly negative pnl + 15% erroring runs: score 60, label WATCH; pnl and error rate hold it",
        label="WATCH",
        held_by=("pnl", "error rate"),
        latency_ms=600,
        error_share=0.15,
        pnl_band=(-120, -30),
        latency_spikes_on_losses=True,
        **_CHEAP,
    ),
    AgentSpec(
        "eta_burner",
        0.30,
        "RETIRE",
        "anti-skilled, > 5 USD of tokens, 15% errors: score 100",
        label="RETIRE",
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
        "8 lucky trades: passes the first rules, held by the trade count and by its timing PSR",
        held_by=("trades", "timing PSR"),
        runs_per_day=(3, 3),
        n_trades=8,
        latency_ms=450,
        pnl_band=(300, np.inf),
        hit_band=(0.62, 1.0),
        timing_psr_band=(0.0, 0.93),
        universe=("BTC", "ETH"),
        **_CHEAP,
    ),
    AgentSpec(
        "iota_expensive",
        0.50,
        "HOLD",
        "coin flip, ~25 USD of tokens, slightly negative: score 50 (KEEP); pnl < 150 holds it",
        held_by=("pnl",),
        latency_ms=650,
        model="gpt-4-turbo",
        tokens=(9_000, 1_500),
        usd_per_mtok=(10.0, 30.0),
        pnl_band=(-120, -30),
        hosts_malformed_lines=True,
    ),
    AgentSpec(
        "kappa_regime",
        (0.80, 0.55, 0.05),
        "HOLD",
        "right in trend, wrong in high_vol: hit rate < 0.55 (forensics: regime mismatch)",
        held_by=("hit rate",),
        latency_ms=610,
        pnl_band=(-100, np.inf),
        hit_band=(0.40, 0.53),
        regime_story=True,
        hosts_malformed_lines=True,
        **_CHEAP,
    ),
    AgentSpec(
        "<b>x</b>",
        0.50,
        "HOLD",
        "coin flip that made money: hit rate < 0.55; HTML in its name",
        held_by=("hit rate",),
        latency_ms=500,
        pnl_band=(200, np.inf),
        hit_band=(0.45, 0.53),
        prompt_version="v0.1-<i>",
        hosts_malformed_lines=True,
        **_CHEAP,
    ),
    AgentSpec(
        "mu_always_long",
        0.5,  # unused: its direction is always LONG
        "HOLD",
        "always LONG on one symbol during a rising stretch: passes the first rules, "
        "no timing variation holds it",
        held_by=("timing PSR",),
        latency_ms=470,
        pnl_band=(180, np.inf),
        hit_band=(0.57, 1.0),
        timing_psr_band=(0.0, 0.93),
        rides_a_rally=True,
        prompt_version="v1.0",
        **_CHEAP,
    ),
)
