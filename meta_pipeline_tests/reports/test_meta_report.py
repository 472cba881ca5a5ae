"""meta_report.json: the app's keys, the new ones, severity, rounding, JSON safety and stable bytes."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import stat

import numpy as np
import pandas as pd
import pytest

from meta_pipeline.reports.meta_report import (
    METHOD,
    build_meta_report,
    json_safe,
    report_path,
    severity_of,
    write_meta_report,
)

HOSTILE = "x|y`z\n<script>alert(1)</script>$a$"


def strict_loads(text: str):
    def refuse(constant):
        raise ValueError(f"non-finite number in the output: {constant}")

    return json.loads(text, parse_constant=refuse)


def report(**overrides) -> dict:
    arguments = {
        "generated_at": "2024-03-06T00:00:00Z",
        "fleet": {
            "pnl_bps": np.float64(-12.3456),
            "hit_rate": 0.45678,
            "max_drawdown_bps": 130.004,
            "trades": np.int64(20),
            "mean_bps": -0.61728,
        },
        "agents": {
            "beta": {
                "decision": "HOLD",
                "label": "KEEP",
                "retirement_score": np.int64(0),
                "pnl_sum_bps": 30.126,
                "hit_rate": np.float32(0.5),
                "error_rate": 0.0,
                "avg_latency_ms": 512.25,
                "trades": 5,
                "runs": 6,
                "cost_usd": 0.123456789,
                "timing_psr": 0.612345,
                "failed_gates": ("pnl", "trades"),
            },
            HOSTILE: {
                "decision": "KILLED",
                "label": "RETIRE",
                "pnl_sum_bps": math.nan,
                "hit_rate": float("inf"),
                "error_rate": None,
                "min_trl": float("-inf"),
                "last_trade": pd.Timestamp("2024-03-05T10:00:00.5", tz="Europe/Paris"),
                "failed_gates": [],
            },
        },
        "weights": {"beta": 0.666666666, "gamma": 0.333333334},
        "confidence_state": {
            "beta": {
                "mult": 0.72250001,
                "updated_at": "2024-03-05T00:00:00Z",
                "horizon_hours": 24,
                "recent_sum_bps": -60.004,
            }
        },
        "checks": [{"name": "fleet trades", "passed": np.bool_(True), "blocking": True, "value": 20}],
    }
    arguments.update(overrides)
    return build_meta_report(**arguments)


def test_report_keeps_the_apps_keys_and_adds_the_new_ones():
    built = report()
    assert list(built) == sorted(built)
    assert set(built) == {"meta", "fleet", "agents", "allocation", "checks", "method"}
    assert built["meta"] == {
        "generated_at": "2024-03-06T00:00:00Z",
        "severity": "high",
        "severity_reasons": ["portfolio PnL -12.35 bps is below 0"],
    }
    assert built["fleet"] == {
        "portfolio_pnl_bps": -12.35,
        "portfolio_hit_rate": 0.457,
        "portfolio_max_drawdown_bps": 130.0,
        "trades": 20,
        "mean_bps": -0.62,
    }
    assert set(built["allocation"]) == {"weights", "confidence_state"}
    assert built["method"] == METHOD


def test_figures_are_rounded_by_kind():
    built = report()
    beta = built["agents"]["beta"]
    assert beta["pnl_sum_bps"] == 30.13 and beta["hit_rate"] == 0.5 and beta["avg_latency_ms"] == 512.2
    assert beta["cost_usd"] == 0.123457 and beta["timing_psr"] == 0.6123
    assert built["allocation"]["weights"] == {"beta": 0.6667, "gamma": 0.3333}
    assert built["allocation"]["confidence_state"]["beta"]["mult"] == 0.7225
    assert built["allocation"]["confidence_state"]["beta"]["recent_sum_bps"] == -60.0


def test_a_weight_is_rounded_to_4_decimals_whatever_the_agents_name():
    built = report(weights={"fast_bps": 0.123456, "slow_rate": 0.876544})
    assert built["allocation"]["weights"] == {"fast_bps": 0.1235, "slow_rate": 0.8765}


def test_agents_keep_their_fields_and_get_the_apps_names_beside():
    agents = report()["agents"]
    assert agents["beta"]["retirement_label"] == "KEEP" and agents["beta"]["killed"] is False
    assert agents["beta"]["failed_gates"] == ["pnl", "trades"]
    hostile = agents[HOSTILE]
    assert hostile["killed"] is True and hostile["retirement_label"] == "RETIRE"
    assert hostile["pnl_sum_bps"] is None and hostile["hit_rate"] is None and hostile["min_trl"] is None
    assert hostile["last_trade"] == "2024-03-05T09:00:00.500000Z"


def test_nan_and_infinity_become_null_and_the_output_is_strict_json(tmp_path):
    path = write_meta_report(tmp_path, report())
    text = path.read_text(encoding="utf-8")
    loaded = strict_loads(text)
    assert loaded["agents"][HOSTILE]["pnl_sum_bps"] is None
    assert "NaN" not in text and "Infinity" not in text
    assert loaded == report()


def test_written_bytes_are_stable_and_the_write_is_atomic(tmp_path):
    path = write_meta_report(tmp_path, report())
    assert path == report_path(tmp_path) == tmp_path / "meta_supervisor/reports/meta_report.json"
    first = path.read_bytes()
    write_meta_report(tmp_path, report())
    assert path.read_bytes() == first and first.endswith(b"}\n")
    assert [p.name for p in path.parent.iterdir()] == ["meta_report.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_severity_is_high_on_a_loss_or_a_failed_blocking_check():
    fleet = {"portfolio_pnl_bps": 10.0}
    assert severity_of(fleet) == ("low", [])
    assert severity_of({"portfolio_pnl_bps": -0.01})[0] == "high"
    assert severity_of({"portfolio_pnl_bps": None}) == ("low", [])  # no trade yet is not a loss
    assert severity_of({"portfolio_pnl_bps": math.nan}) == ("low", [])
    failed = [{"name": "unpriced share", "passed": False}]
    assert severity_of(fleet, failed) == ("high", ["blocking check failed: unpriced share"])
    assert severity_of(fleet, [{"name": "x", "passed": False, "blocking": False}]) == ("low", [])
    assert severity_of(fleet, [{"name": "x", "passed": None}]) == ("low", [])  # not evaluated


def test_fleet_block_has_the_four_app_keys_even_when_empty():
    built = report(fleet={}, agents={}, weights={}, confidence_state={}, checks=None)
    assert built["fleet"] == {
        "portfolio_pnl_bps": None,
        "portfolio_hit_rate": None,
        "portfolio_max_drawdown_bps": None,
        "trades": 0,
    }
    assert built["meta"]["severity"] == "low" and built["checks"] == [] and built["agents"] == {}


def test_extra_keys_are_added_but_cannot_replace_the_reports_own():
    assert report(extra={"window_days": 30})["window_days"] == 30
    with pytest.raises(ValueError, match="fleet"):
        report(extra={"fleet": {}})


def test_json_safe_converts_what_pandas_and_numpy_hand_over():
    converted = json_safe(
        {
            1: np.float64("nan"),
            "i": np.int32(7),
            "b": np.bool_(False),
            "neg_zero": -0.0,
            "ts": pd.Timestamp("2024-03-05 10:00", tz="UTC"),
            "naive": dt.datetime(2024, 3, 5, 10, 0),
            "nat": pd.NaT,
            "na": pd.NA,
            "day": dt.date(2024, 3, 5),
            "dt64": np.datetime64("2024-03-05T10:00:00"),
            "td": pd.Timedelta(minutes=90),
            "set": {"b", "a"},
            "arr": np.array([1.0, np.inf]),
            "series": pd.Series([1.5, np.nan], index=["x", "y"]),
        }
    )
    assert converted == {
        "1": None,
        "i": 7,
        "b": False,
        "neg_zero": 0.0,
        "ts": "2024-03-05T10:00:00Z",
        "naive": "2024-03-05T10:00:00Z",
        "nat": None,
        "na": None,
        "day": "2024-03-05",
        "dt64": "2024-03-05T10:00:00Z",
        "td": 5400.0,
        "set": ["a", "b"],
        "arr": [1.0, None],
        "series": {"x": 1.5, "y": None},
    }
    assert str(converted["neg_zero"]) == "0.0"
    strict_loads(json.dumps(converted, allow_nan=False))
