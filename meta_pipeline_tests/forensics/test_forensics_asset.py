"""The ``failure_forensics`` asset: the app's keys in its JSON, telemetry beside trade fields (never
over them), and a fresh root that says so instead of failing."""

from __future__ import annotations

import json

import dagster as dg

from meta_pipeline import names
from meta_pipeline.defs.forensics import failure_forensics
from meta_pipeline.defs.resources import DataRoot
from meta_pipeline_tests.supervisor.test_supervisor_assets import _rows, _telemetry, write_history


def materialize(root):
    return dg.materialize(
        [failure_forensics],
        resources={"data_root": DataRoot(root=str(root))},
        instance=dg.DagsterInstance.ephemeral(),
    )


def test_fresh_root_writes_an_empty_report(tmp_path):
    result = materialize(tmp_path)
    assert result.success
    report = json.loads((tmp_path / names.FORENSICS_FILE).read_text())
    assert {"generated_at", "horizon_hours", "worst_runs", "by_agent"} <= set(report)
    assert report["worst_runs"] == [] and report["horizon_hours"] == 24


def test_worst_runs_keep_trade_fields_and_carry_their_telemetry(tmp_path):
    trades = _rows("loser", 30, lambda i: -10.0 - i)
    runs = _telemetry(trades, latency=700.0)
    for run in runs:
        run["ts"] = run["ts"] + __import__("pandas").Timedelta(seconds=3)  # telemetry's own ts differs
    write_history(tmp_path, trades, runs)
    result = materialize(tmp_path)
    report = json.loads((tmp_path / names.FORENSICS_FILE).read_text())
    worst = report["worst_runs"][0]
    assert worst["run_id"] == "loser-29" and worst["realized_pnl_bps"] == -39.0
    assert worst["ts"].endswith("01:00:00Z")  # the trade's ts, not the telemetry's
    assert worst["telemetry"]["latency_ms"] == 700.0
    meta = result.asset_materializations_for_node(names.FAILURE_FORENSICS)[0].metadata
    assert "too few chain trades" in meta["top_findings"].value  # all losses: nothing to compare with
