"""Environment settings, read and validated once when the code location loads.

Every variable has a default that works with nothing set. A bad value stops the load with a
:class:`SettingsError` whose message names the variable, so the Dagster UI shows *which* setting
is wrong instead of a stack trace from deep inside a run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from meta_pipeline.reconcile import MAX_BAR_GAP

KNOWN_PRICE_SOURCES = ("binance", "coinbase", "files")

DEFAULT_START_DATE = date(2024, 1, 1)
DEFAULT_BINANCE_BASE_URL = "https://api.binance.com"
DEFAULT_COINBASE_BASE_URL = "https://api.exchange.coinbase.com"
DEFAULT_PRICE_SOURCES = ("binance", "coinbase")
DEFAULT_HORIZONS_HOURS = (1.0, 4.0, 24.0)
MAX_HORIZON_HOURS = 24.0 * 30
DEFAULT_MAX_BAR_GAP_MINUTES = MAX_BAR_GAP / pd.Timedelta(minutes=1)
MAX_BAR_GAP_LIMIT_MINUTES = 24 * 60.0


class SettingsError(ValueError):
    """A configuration value is invalid; the message names the environment variable."""


@dataclass(frozen=True)
class Settings:
    root: Path
    start_date: date
    binance_base_url: str
    coinbase_base_url: str
    price_sources: tuple[str, ...]
    bars_dir: Path
    horizons_hours: tuple[float, ...] = DEFAULT_HORIZONS_HOURS
    max_bar_gap_minutes: float = DEFAULT_MAX_BAR_GAP_MINUTES

    @property
    def max_bar_gap(self) -> pd.Timedelta:
        """How long after t a bar may open and still price t (docs/rules.md, *Pricing and PnL*)."""
        return pd.Timedelta(minutes=self.max_bar_gap_minutes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name)
            return value.strip() if value is not None and value.strip() else None

        root = Path(get("META_PIPELINE_ROOT") or os.getcwd()).expanduser().resolve()
        if root.exists() and not root.is_dir():
            raise SettingsError(f"META_PIPELINE_ROOT={str(root)!r} exists but is not a directory")

        start_text = get("META_PIPELINE_START_DATE")
        try:
            start_date = date.fromisoformat(start_text) if start_text else DEFAULT_START_DATE
        except ValueError:
            raise SettingsError(
                f"META_PIPELINE_START_DATE={start_text!r} is not a date in YYYY-MM-DD form"
            ) from None

        sources_text = get("META_PIPELINE_PRICE_SOURCES")
        if sources_text:
            sources = tuple(s.strip().lower() for s in sources_text.split(",") if s.strip())
            unknown = [s for s in sources if s not in KNOWN_PRICE_SOURCES]
            if unknown or not sources:
                raise SettingsError(
                    f"META_PIPELINE_PRICE_SOURCES={sources_text!r}: unknown source(s) {unknown}; "
                    f"use a comma-separated list of {', '.join(KNOWN_PRICE_SOURCES)}"
                )
            if len(set(sources)) != len(sources):
                raise SettingsError(f"META_PIPELINE_PRICE_SOURCES={sources_text!r} names a source twice")
        else:
            sources = DEFAULT_PRICE_SOURCES

        bars_text = get("META_PIPELINE_BARS_DIR")
        bars_dir = Path(bars_text).expanduser() if bars_text else root / "bars"
        if not bars_dir.is_absolute():
            bars_dir = (root / bars_dir).resolve()
        if "files" in sources and bars_text and not bars_dir.is_dir():
            raise SettingsError(
                f"META_PIPELINE_BARS_DIR={bars_text!r} is not a directory "
                "(the 'files' price source reads Binance daily kline dumps from it)"
            )

        return cls(
            horizons_hours=_horizons(get("META_PIPELINE_HORIZONS")),
            max_bar_gap_minutes=_max_bar_gap(get("META_PIPELINE_MAX_BAR_GAP_MINUTES")),
            root=root,
            start_date=start_date,
            binance_base_url=_url("BINANCE_BASE_URL", get("BINANCE_BASE_URL"), DEFAULT_BINANCE_BASE_URL),
            coinbase_base_url=_url("COINBASE_BASE_URL", get("COINBASE_BASE_URL"), DEFAULT_COINBASE_BASE_URL),
            price_sources=sources,
            bars_dir=bars_dir,
        )


def _url(name: str, value: str | None, default: str) -> str:
    if value is None:
        return default
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SettingsError(f"{name}={value!r} is not an http(s) URL such as {default}")
    return value.rstrip("/")


def _horizons(value: str | None) -> tuple[float, ...]:
    """Horizons shape the partition mappings (how many days of bars a day needs), so they are a
    load-time setting rather than run config."""
    if value is None:
        return DEFAULT_HORIZONS_HOURS
    try:
        hours = tuple(sorted({float(part) for part in value.split(",") if part.strip()}))
    except ValueError:
        hours = ()
    if not hours or any(not 0 < h <= MAX_HORIZON_HOURS for h in hours):
        raise SettingsError(
            f"META_PIPELINE_HORIZONS={value!r} must be a comma-separated list of hours in "
            f"(0, {MAX_HORIZON_HOURS:g}], e.g. 1,4,24"
        )
    return hours


def _max_bar_gap(value: str | None) -> float:
    """Like the horizons, the gap decides how many days of bars a day needs, so it is read at load."""
    if value is None:
        return DEFAULT_MAX_BAR_GAP_MINUTES
    try:
        minutes = float(value)
    except ValueError:
        minutes = float("nan")
    if not 0 <= minutes <= MAX_BAR_GAP_LIMIT_MINUTES:
        raise SettingsError(
            f"META_PIPELINE_MAX_BAR_GAP_MINUTES={value!r} must be a number of minutes in "
            f"[0, {MAX_BAR_GAP_LIMIT_MINUTES:g}], e.g. {DEFAULT_MAX_BAR_GAP_MINUTES:g}"
        )
    return minutes
