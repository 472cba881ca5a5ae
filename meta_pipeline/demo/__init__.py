"""A deterministic synthetic data root for the demo: the "demo fleet".

``generate_demo(root)`` (re)writes, from a seed and nothing else (no wall-clock time, no unordered
containers), everything the supervisor reads:

* ``alpha/events.jsonl``: the agents' signals in the app's formats, with a few malformed and
  duplicated lines on purpose (:mod:`meta_pipeline.demo.lines`);
* ``telemetry/events.jsonl``: one line per agent run, including the runs that emitted no signal
  (:mod:`meta_pipeline.demo.lines`);
* ``bars/<SYMBOL>/<SYMBOL>-1m-<YYYY-MM-DD>.csv``: synthetic 1-minute bars in the Binance daily-dump
  layout for BTCUSDT, ETHUSDT, SOLUSDT and DOGEUSDT, from ``start`` to ``start + days + 2``, with an
  8-minute SOLUSDT gap on day 12 (:mod:`meta_pipeline.demo.market`).

The 12 agents (:mod:`meta_pipeline.demo.agents`) are built so that each reaches one intended
decision (PROMOTE, HOLD, KILL or RETIRE) and retirement label (KEEP, WATCH or RETIRE) under the
default supervisor rules (:class:`~meta_pipeline.supervisor.policy.SupervisorPolicy`; docs/rules.md,
*Supervisor rules*), with a margin from every threshold (:mod:`meta_pipeline.demo.fleet`). Together
they show every decision and label; KILLED follows on the next supervisor run, once KILL and RETIRE
are on the kill list. The same arguments always give byte-identical files.

Run it with ``meta-pipeline demo``. Existing input files under the root are replaced (atomically)
and stale bar files for the demo symbols are removed. Supervisor outputs already in the directory are
left alone, so use a fresh directory per seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from meta_pipeline import names
from meta_pipeline.demo.agents import AGENTS, AgentSpec
from meta_pipeline.demo.fleet import simulate_agent
from meta_pipeline.demo.lines import MALFORMED_KINDS, signals_file, telemetry_file
from meta_pipeline.demo.market import (
    GAP_DAY_INDEX,
    GAP_MINUTE,
    GAP_MINUTES,
    GAP_SYMBOL,
    SYMBOLS,
    daily_bar_files,
    make_bars,
    price_at,
)
from meta_pipeline.storage import atomic_write_bytes

__all__ = [
    "AGENTS",
    "GAP_DAY_INDEX",
    "GAP_SYMBOL",
    "MALFORMED_KINDS",
    "AgentSpec",
    "DemoSummary",
    "generate_demo",
    "price_at",
]


@dataclass
class DemoSummary:
    """What :func:`generate_demo` wrote, and what each agent is meant to show."""

    root: Path
    bars_dir: Path
    agents: list[str]
    symbols: list[str]
    days: tuple[date, date]  # first and last signal day (UTC)
    n_signals: int  # valid, distinct signal lines
    n_telemetry: int  # telemetry lines = agent runs
    n_malformed: int  # signal lines the quarantine must catch
    n_duplicates: int  # extra copies of valid signal lines
    intended: dict[str, str]  # agent → decision: PROMOTE / HOLD / KILL / RETIRE
    labels: dict[str, str] = field(default_factory=dict)  # agent → label: KEEP / WATCH / RETIRE
    held_by: dict[str, tuple[str, ...]] = field(default_factory=dict)  # HOLD agent → gates built to fail
    reasons: dict[str, str] = field(default_factory=dict)
    malformed_kinds: list[str] = field(default_factory=list)
    gap: tuple[str, date, str, int] = ("", date.min, "", 0)  # symbol, day, "HH:MM" start, minutes
    bar_days: tuple[date, date] = (date.min, date.min)

    @property
    def signals_path(self) -> Path:
        return self.root / names.SIGNALS_FILE

    @property
    def telemetry_path(self) -> Path:
        return self.root / names.TELEMETRY_FILE


# Long enough for failure forensics to tell kappa_regime's regime problem and zeta_wobbly's slow losing
# runs from noise on the chain of non-overlapping 24 h trades after the fleet-wide correction (about
# 100 chain trades each; on 30 days no effect survives, and the verdicts rightly say so).
DEFAULT_DAYS = 120


def generate_demo(
    root: Path, *, seed: int = 7, start: date = date(2025, 9, 1), days: int = DEFAULT_DAYS
) -> DemoSummary:
    """(Re)write the demo data root with ``days`` signal days from ``start``; same arguments →
    byte-identical files."""
    if days < GAP_DAY_INDEX + 2:
        raise ValueError(f"days must be at least {GAP_DAY_INDEX + 2} (the demo fleet needs a month-ish)")
    root = Path(root)
    start_ms = int((datetime(start.year, start.month, start.day, tzinfo=UTC) - _EPOCH).total_seconds()) * 1000
    n_bar_days = days + 3  # signals' 24 h exits need the two days after the last signal day
    bars_seq, agents_seq, extras_seq = np.random.SeedSequence(seed).spawn(3)
    bar_rngs = [np.random.default_rng(s) for s in bars_seq.spawn(len(SYMBOLS))]
    bars = {sym: make_bars(sym, r, start_ms, n_bar_days) for sym, r in zip(SYMBOLS, bar_rngs, strict=True)}

    fleet = [
        simulate_agent(spec, np.random.default_rng(seq), bars, start, start_ms, days)
        for spec, seq in zip(AGENTS, agents_seq.spawn(len(AGENTS)), strict=True)
    ]

    signals = signals_file(fleet, np.random.default_rng(extras_seq), start_ms, days)
    atomic_write_bytes(root / names.SIGNALS_FILE, signals.body)
    telemetry, n_telemetry = telemetry_file(fleet)
    atomic_write_bytes(root / names.TELEMETRY_FILE, telemetry)

    bars_dir = root / "bars"
    for sym, bar in bars.items():
        folder = bars_dir / sym
        folder.mkdir(parents=True, exist_ok=True)
        wanted = set()
        for name, data in daily_bar_files(bar, start, start_ms, n_bar_days):
            wanted.add(name)
            atomic_write_bytes(folder / name, data)
        for stale in sorted(folder.glob(f"{sym}-1m-*.csv")):
            if stale.name not in wanted:
                stale.unlink()

    return DemoSummary(
        root=root,
        bars_dir=bars_dir,
        agents=[a.name for a in AGENTS],
        symbols=list(SYMBOLS),
        days=(start, start + timedelta(days=days - 1)),
        n_signals=signals.n_valid,
        n_telemetry=n_telemetry,
        n_malformed=signals.n_malformed,
        n_duplicates=signals.n_duplicates,
        intended={a.name: a.intended for a in AGENTS},
        labels={a.name: a.label for a in AGENTS},
        held_by={a.name: a.held_by for a in AGENTS if a.held_by},
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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
