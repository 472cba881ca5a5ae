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

from meta_pipeline.prices import DEFAULT_BINANCE_BASE_URL, DEFAULT_COINBASE_BASE_URL, parse_source_names
from meta_pipeline.reconcile import MAX_BAR_GAP

DEFAULT_START_DATE = date(2024, 1, 1)
DEFAULT_PRICE_SOURCES = ("binance", "coinbase")
DEFAULT_HORIZONS_HOURS = (1, 4, 24)
MAX_HORIZON_HOURS = 24 * 30
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
    horizons_hours: tuple[int, ...] = DEFAULT_HORIZONS_HOURS
    max_bar_gap_minutes: float = DEFAULT_MAX_BAR_GAP_MINUTES
    automation_on: bool = False  # META_PIPELINE_AUTOMATION: schedules and sensors start running
    warehouse_url: str | None = None  # META_PIPELINE_WAREHOUSE_URL: partitions on an object store

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
        try:
            sources = parse_source_names(sources_text) if sources_text else DEFAULT_PRICE_SOURCES
        except ValueError as exc:
            raise SettingsError(f"META_PIPELINE_PRICE_SOURCES={sources_text!r}: {exc}") from None

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
            automation_on=_switch("META_PIPELINE_AUTOMATION", get("META_PIPELINE_AUTOMATION")),
            warehouse_url=_warehouse_url(get("META_PIPELINE_WAREHOUSE_URL")),
        )


def _warehouse_url(value: str | None) -> str | None:
    """An fsspec URL whose backend is installed (``s3://bucket/prefix`` needs ``s3fs``), or None."""
    if value is None:
        return None
    name = "META_PIPELINE_WAREHOUSE_URL"
    protocol, sep, rest = value.partition("://")
    if not sep or not protocol or not rest.strip("/"):
        raise SettingsError(f"{name}={value!r} must be a URL such as s3://bucket/prefix")
    try:
        import fsspec  # installed with the s3 extra (universal-pathlib, s3fs)

        fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise SettingsError(f"{name}={value!r}: unknown storage protocol {protocol!r}") from None
    except ImportError as exc:
        raise SettingsError(f"{name}={value!r}: the {protocol!r} backend is not installed ({exc})") from None
    return value.rstrip("/")


def _switch(name: str, value: str | None) -> bool:
    """An on/off setting: ``on``/``off`` (or true/false, yes/no, 1/0); unset is off."""
    if value is None:
        return False
    text = value.lower()
    if text in ("on", "true", "yes", "1"):
        return True
    if text in ("off", "false", "no", "0"):
        return False
    raise SettingsError(f"{name}={value!r} must be on or off")


def _url(name: str, value: str | None, default: str) -> str:
    if value is None:
        return default
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SettingsError(f"{name}={value!r} is not an http(s) URL such as {default}")
    return value.rstrip("/")


def _horizons(value: str | None) -> tuple[int, ...]:
    """Horizons shape the partition mappings (how many days of bars a day needs), so they are a
    load-time setting rather than run config. Whole hours only: the app reads ``horizon_hours`` as
    an integer."""
    if value is None:
        return DEFAULT_HORIZONS_HOURS
    try:
        numbers = {float(part) for part in value.split(",") if part.strip()}
    except ValueError:
        numbers = set()
    valid = numbers and all(n.is_integer() and 0 < n <= MAX_HORIZON_HOURS for n in numbers)
    if not valid:
        raise SettingsError(
            f"META_PIPELINE_HORIZONS={value!r} must be a comma-separated list of whole hours in "
            f"[1, {MAX_HORIZON_HOURS}], e.g. 1,4,24"
        )
    return tuple(sorted(int(n) for n in numbers))


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
