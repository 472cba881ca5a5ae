"""Environment settings: defaults with nothing set; a bad value names its variable."""

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from meta_pipeline.settings import (
    DEFAULT_BINANCE_BASE_URL,
    DEFAULT_COINBASE_BASE_URL,
    DEFAULT_HORIZONS_HOURS,
    DEFAULT_PRICE_SOURCES,
    DEFAULT_START_DATE,
    Settings,
    SettingsError,
)


def test_defaults_with_an_empty_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings.root == tmp_path.resolve()
    assert settings.start_date == DEFAULT_START_DATE == date(2024, 1, 1)
    assert settings.binance_base_url == DEFAULT_BINANCE_BASE_URL == "https://api.binance.com"
    assert settings.coinbase_base_url == DEFAULT_COINBASE_BASE_URL == "https://api.exchange.coinbase.com"
    assert settings.price_sources == DEFAULT_PRICE_SOURCES == ("binance", "coinbase")
    assert settings.bars_dir == tmp_path.resolve() / "bars"
    assert settings.horizons_hours == DEFAULT_HORIZONS_HOURS == (1, 4, 24)
    assert settings.max_bar_gap == pd.Timedelta(minutes=5)


def test_blank_values_count_as_unset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blank = {
        name: "  "
        for name in (
            "META_PIPELINE_ROOT",
            "META_PIPELINE_START_DATE",
            "META_PIPELINE_PRICE_SOURCES",
            "BINANCE_BASE_URL",
            "COINBASE_BASE_URL",
            "META_PIPELINE_BARS_DIR",
            "META_PIPELINE_HORIZONS",
            "META_PIPELINE_MAX_BAR_GAP_MINUTES",
        )
    }
    assert Settings.from_env(blank) == Settings.from_env({})


def test_explicit_mapping_ignores_the_process_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("META_PIPELINE_START_DATE", "2024-13-01")
    assert Settings.from_env({}).start_date == DEFAULT_START_DATE
    with pytest.raises(SettingsError, match="META_PIPELINE_START_DATE"):
        Settings.from_env()  # None → os.environ


def test_good_values_are_parsed(tmp_path):
    bars = tmp_path / "klines"
    bars.mkdir()
    settings = Settings.from_env(
        {
            "META_PIPELINE_ROOT": str(tmp_path),
            "META_PIPELINE_START_DATE": " 2023-06-15 ",
            "META_PIPELINE_PRICE_SOURCES": " Files , BINANCE,coinbase ",
            "BINANCE_BASE_URL": "http://127.0.0.1:8080/",
            "COINBASE_BASE_URL": "https://cb.example.test/api",
            "META_PIPELINE_BARS_DIR": str(bars),
            "META_PIPELINE_HORIZONS": "24, 1,4,1, 48.0",
        }
    )
    assert settings.root == tmp_path.resolve()
    assert settings.start_date == date(2023, 6, 15)
    assert settings.price_sources == ("files", "binance", "coinbase")  # order is the fallback order
    assert settings.binance_base_url == "http://127.0.0.1:8080"
    assert settings.coinbase_base_url == "https://cb.example.test/api"
    assert settings.bars_dir == bars
    assert settings.horizons_hours == (1, 4, 24, 48)  # whole hours, sorted, as integers


def test_relative_bars_dir_is_relative_to_the_root(tmp_path):
    (tmp_path / "data" / "bars1m").mkdir(parents=True)
    settings = Settings.from_env(
        {
            "META_PIPELINE_ROOT": str(tmp_path),
            "META_PIPELINE_PRICE_SOURCES": "files",
            "META_PIPELINE_BARS_DIR": "data/bars1m",
        }
    )
    assert settings.bars_dir == (tmp_path / "data" / "bars1m").resolve()


def test_root_that_does_not_exist_yet_is_accepted(tmp_path):
    assert (
        Settings.from_env({"META_PIPELINE_ROOT": str(tmp_path / "new")}).root == (tmp_path / "new").resolve()
    )


def test_missing_bars_dir_is_fine_when_files_is_not_a_source(tmp_path):
    settings = Settings.from_env({"META_PIPELINE_ROOT": str(tmp_path), "META_PIPELINE_BARS_DIR": "nowhere"})
    assert settings.bars_dir == (tmp_path / "nowhere").resolve()


def _root_file(tmp_path: Path) -> str:
    path = tmp_path / "a_file"
    path.write_text("not a directory")
    return str(path)


BAD_VALUES = [
    ("META_PIPELINE_START_DATE", "2024-13-01"),
    ("META_PIPELINE_START_DATE", "2024-02-30"),
    ("META_PIPELINE_START_DATE", "yesterday"),
    ("META_PIPELINE_START_DATE", "01/03/2024"),
    ("META_PIPELINE_PRICE_SOURCES", "binance,kraken"),
    ("META_PIPELINE_PRICE_SOURCES", "binance,Binance"),
    ("META_PIPELINE_PRICE_SOURCES", "coinbase,binance,coinbase"),
    ("META_PIPELINE_PRICE_SOURCES", ",,"),
    ("BINANCE_BASE_URL", "api.binance.com"),
    ("BINANCE_BASE_URL", "ftp://api.binance.com"),
    ("BINANCE_BASE_URL", "http://"),
    ("COINBASE_BASE_URL", "localhost:8080"),
    ("COINBASE_BASE_URL", "file:///tmp/candles"),
    ("META_PIPELINE_HORIZONS", "0"),
    ("META_PIPELINE_HORIZONS", "-1,24"),
    ("META_PIPELINE_HORIZONS", "1h,4h"),
    ("META_PIPELINE_HORIZONS", ","),
    ("META_PIPELINE_HORIZONS", "nan"),
    ("META_PIPELINE_HORIZONS", "inf"),
    ("META_PIPELINE_HORIZONS", "721"),
    ("META_PIPELINE_HORIZONS", "0.5"),  # the app reads horizon_hours as an integer
    ("META_PIPELINE_MAX_BAR_GAP_MINUTES", "-1"),
    ("META_PIPELINE_MAX_BAR_GAP_MINUTES", "five"),
    ("META_PIPELINE_MAX_BAR_GAP_MINUTES", "nan"),
    ("META_PIPELINE_PRICE_SOURCES", "binance,kraken"),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES, ids=[f"{n}={v}" for n, v in BAD_VALUES])
def test_bad_value_raises_settings_error_naming_the_variable(tmp_path, name, value):
    with pytest.raises(SettingsError, match=name) as excinfo:
        Settings.from_env({"META_PIPELINE_ROOT": str(tmp_path), name: value})
    assert value.strip() in str(excinfo.value), "the message quotes the offending value"


def test_root_pointing_to_a_file(tmp_path):
    with pytest.raises(SettingsError, match="META_PIPELINE_ROOT"):
        Settings.from_env({"META_PIPELINE_ROOT": _root_file(tmp_path)})


@pytest.mark.parametrize("bars", ["missing", "a_file"])
def test_bars_dir_missing_when_files_is_a_source(tmp_path, bars):
    _root_file(tmp_path)
    with pytest.raises(SettingsError, match="META_PIPELINE_BARS_DIR"):
        Settings.from_env(
            {
                "META_PIPELINE_ROOT": str(tmp_path),
                "META_PIPELINE_PRICE_SOURCES": "binance,files",
                "META_PIPELINE_BARS_DIR": str(tmp_path / bars),
            }
        )


def test_horizon_upper_bound_is_inclusive(tmp_path):
    assert Settings.from_env(
        {"META_PIPELINE_ROOT": str(tmp_path), "META_PIPELINE_HORIZONS": "720"}
    ).horizons_hours == (720,)


def test_settings_error_is_a_value_error():
    assert issubclass(SettingsError, ValueError)


def test_code_location_load_fails_naming_the_variable(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("META_PIPELINE_")}
    env.update(META_PIPELINE_START_DATE="2024-13-01", META_PIPELINE_ROOT=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-c", "import meta_pipeline.definitions"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "SettingsError" in proc.stderr
    assert "META_PIPELINE_START_DATE" in proc.stderr
    assert "2024-13-01" in proc.stderr


@pytest.mark.parametrize(
    ("value", "on"), [(None, False), ("on", True), ("ON", True), ("1", True), ("off", False), ("no", False)]
)
def test_automation_switch(tmp_path, value, on):
    env = {"META_PIPELINE_ROOT": str(tmp_path)} | (
        {} if value is None else {"META_PIPELINE_AUTOMATION": value}
    )
    assert Settings.from_env(env).automation_on is on


def test_a_bad_automation_switch_names_the_variable(tmp_path):
    with pytest.raises(SettingsError, match="META_PIPELINE_AUTOMATION='sometimes' must be on or off"):
        Settings.from_env({"META_PIPELINE_ROOT": str(tmp_path), "META_PIPELINE_AUTOMATION": "sometimes"})
