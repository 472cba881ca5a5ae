"""The code location as `dg` and the UI see it: every definition in `defs/` is loaded, under one
name, and what an operator reads is written for an operator."""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import dagster as dg
import pytest

from meta_pipeline import names
from meta_pipeline.definitions import defs

REPO = Path(__file__).resolve().parents[1]
EXPECTED = {
    "assets": {
        names.SIGNALS,
        names.TELEMETRY,
        names.SIGNAL_QUARANTINE,
        names.TELEMETRY_QUARANTINE,
        names.PRICE_BARS,
        names.RECONCILED_TRADES,
        names.RECONCILED_EXPORT,
        names.CONFIDENCE_STATE,
        names.AGENT_STATS,
        names.AGENT_DECISIONS,
        names.ALLOCATION_WEIGHTS,
        names.PORTFOLIO,
        names.META_REPORT,
        names.LP_EMAIL,
        names.FAILURE_FORENSICS,
    },
    "asset_checks": {
        "signal_quarantine:rejected_share_below_threshold",
        "telemetry_quarantine:rejected_share_below_threshold",
        "agent_stats:enough_matured_trades",
        "agent_stats:unpriced_share_below_limit",
        "agent_stats:telemetry_coverage",
        "lp_email:delivered",
        f"{names.RECONCILED_TRADES}:{names.RECONCILED_FRESH_CHECK}",
    },
    "jobs": {
        names.MAIN_JOB,
        names.REPROCESS_JOB,
        names.EXPORT_JOB,
        names.SUPERVISOR_JOB,
        names.OPERATE_KILL_SWITCH_JOB,
        names.LP_EMAIL_JOB,
        names.FORENSICS_JOB,
    },
    "schedules": {
        "refresh_every_30_minutes",
        "refresh_export_hourly",
        "lp_email_daily",
        "failure_forensics_daily",
    },
    "sensors": {
        "new_input_lines",
        "reap_dead_runs",
        "export_after_backfill",
        "supervisor_follows_reconciliation",
        "heal_pending_rows",
    },
    "resources": {
        "data_root",
        "ingestion_policy",
        "price_sources",
        "reconciliation_policy",
        "supervisor_settings",
        "lp_mailer",
    },
}


@pytest.fixture(scope="module")
def listed(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("dagster_home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("META_PIPELINE_")}
    env.update(DAGSTER_HOME=str(home), META_PIPELINE_ROOT=str(home))
    proc = subprocess.run(
        [sys.executable, "-m", "dagster_dg_cli.cli", "list", "defs", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_dg_list_defs_shows_every_definition(listed):
    got = {
        "assets": {a["asset_key"] for a in listed["assets"]},
        "asset_checks": {c["key"] for c in listed["asset_checks"]},
        **{
            kind: {item["name"] for item in listed[kind]}
            for kind in ("jobs", "schedules", "sensors", "resources")
        },
    }
    assert got == EXPECTED


def test_every_asset_has_an_operator_description_a_group_an_owner_and_kinds(listed):
    for asset in listed["assets"]:
        text = asset["description"] or ""
        assert len(text) > 80, asset["asset_key"]
        assert "``" not in text and ":mod:" not in text and ":func:" not in text, asset["asset_key"]
        assert asset["group_name"] in (
            *names.PIPELINE_GROUPS,
            names.EXPORTS_GROUP,
            names.SUPERVISOR_GROUP,
            names.REPORTS_GROUP,
            names.RESEARCH_GROUP,
        )
        assert asset["owners"] and asset["kinds"]


def test_one_code_location_name_everywhere():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    workspace = (REPO / "workspace.yaml").read_text()
    assert project["tool"]["dagster"]["code_location_name"] == "meta_pipeline"
    assert project["tool"]["dg"]["project"]["code_location_name"] == "meta_pipeline"
    assert "location_name: meta_pipeline\n" in workspace
    assert project["tool"]["dagster"]["module_name"] == "meta_pipeline.definitions"


def test_the_main_job_never_selects_assets_outside_its_groups():
    job = defs.resolve_job_def(names.MAIN_JOB)
    groups = defs.resolve_asset_graph().get(dg.AssetKey(names.SIGNALS)).group_name
    assert groups == names.INGESTION_GROUP
    selected = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    assert selected == {
        key
        for key in EXPECTED["assets"]
        if defs.resolve_asset_graph().get(dg.AssetKey(key)).group_name in names.PIPELINE_GROUPS
    }
    assert names.RECONCILED_EXPORT not in selected  # the full export is not in the tick
    assert names.AGENT_DECISIONS not in selected  # the supervisor follows, in its own run
