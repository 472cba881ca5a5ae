"""The supervisor's assets end to end on a warehouse written by hand: decisions and the kill switch,
blocking checks that leave every output untouched, revive semantics, idempotent state files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from meta_pipeline import kill_switch, names
from meta_pipeline.defs import supervisor as sup
from meta_pipeline.defs.resources import DataRoot, SupervisorSettings
from meta_pipeline.storage import Warehouse

SUPERVISOR_ASSETS = [
    sup.confidence_state,
    sup.agent_stats,
    sup.agent_decisions,
    sup.allocation_weights,
    sup.portfolio_asset,
    sup.meta_report_asset,
]
START = pd.Timestamp("2026-01-01T00:00:00Z")
HOSTILE = "x|y`z\n<script>alert(1)</script>$a$"


def _rows(agent: str, days: int, pnl, *, symbol: str = "BTCUSDT", direction=None, start_day: int = 0):
    """One 24 h trade a day (so the chain is every trade); ``pnl`` is a callable day → gross bps."""
    rows = []
    for i in range(start_day, start_day + days):
        ts = START + pd.Timedelta(days=i, hours=1)
        gross = float(pnl(i))
        d = direction(i) if direction else ("LONG" if gross >= 0 else "SHORT")
        rows.append(
            {
                "date": ts.date().isoformat(),
                "ts": ts,
                "agent": agent,
                "run_id": f"{agent}-{i}",
                "symbol": symbol,
                "instrument": symbol,
                "direction": d,
                "horizon_hours": 24,
                "entry_time": ts,
                "entry_price": 100.0,
                "exit_time": ts + pd.Timedelta(hours=24),
                "exit_price": 100.0 * (1 + gross / 1e4),
                "realized_pnl_bps": gross,
                "net_pnl_bps": gross,
                "status": "matured",
                "reason": "",
                "regime": "trend",
                "confidence": 0.6,
                "score_final": 1.0,
            }
        )
    return rows


def _telemetry(rows, *, errors=0.0, latency=500.0, cost=0.01):
    return [
        {
            "date": r["date"],
            "ts": r["ts"],
            "agent": r["agent"],
            "run_id": r["run_id"],
            "latency_ms": latency,
            "tokens_in": 1000.0,
            "tokens_out": 100.0,
            "errors": errors,
            "cost_usd": cost,
            "unreadable_metrics": "",
            "metrics_raw": "",
            "extra": "",
            "line_no": 1,
        }
        for r in rows
    ]


def write_history(root: Path, trades: list[dict], runs: list[dict]) -> None:
    warehouse = Warehouse(root / names.WAREHOUSE_DIR)
    for name, rows in ((names.RECONCILED_TRADES, trades), (names.TELEMETRY, runs)):
        if not rows:
            continue
        frame = pd.DataFrame(rows)
        for day, part in frame.groupby("date"):
            warehouse.write_partition(name, day, part.reset_index(drop=True))


def _skilled(i):  # knows the next day's direction: wins every trade
    return 40.0 + (i % 5) * 7


def _loser(i):
    return -30.0 - (i % 3) * 5


def fleet(root: Path, *, extra_trades=(), extra_runs=()):
    rng = np.random.default_rng(3)
    moves = rng.normal(0, 80, 40)
    skilled = _rows(
        "skilled", 40, lambda i: abs(moves[i]), direction=lambda i: "LONG" if moves[i] > 0 else "SHORT"
    )
    loser = _rows("loser", 40, _loser, symbol="ETHUSDT")
    hostile = _rows(HOSTILE, 12, lambda i: 5.0 * (-1) ** i, symbol="SOLUSDT")
    trades = [*skilled, *loser, *hostile, *extra_trades]
    runs = [*_telemetry(skilled), *_telemetry(loser), *_telemetry(hostile), *extra_runs]
    write_history(root, trades, runs)


def materialize(root: Path, **settings) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        SUPERVISOR_ASSETS,
        resources={
            "data_root": DataRoot(root=str(root)),
            "supervisor_settings": SupervisorSettings(**settings),
        },
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def state(root: Path, name: str):
    return json.loads((root / name).read_text())


def test_fresh_root_every_check_passes_with_no_data_yet(tmp_path):
    result = materialize(tmp_path)
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 3 and all(c.passed for c in checks)
    assert all(c.description == "no data yet" for c in checks)
    assert state(tmp_path, names.DECISIONS_FILE)["decisions"] == {}
    assert state(tmp_path, names.CONFIDENCE_FILE) == {}
    assert (tmp_path / names.PR_COMMENT_FILE).read_text().startswith("## Meta-Agent Report")


def test_decisions_kill_switch_and_killed_on_the_next_run(tmp_path):
    fleet(tmp_path)
    assert materialize(tmp_path).success
    decided = state(tmp_path, names.DECISIONS_FILE)
    assert decided["decisions"]["skilled"]["decision"] == "PROMOTE"
    assert decided["decisions"]["loser"]["decision"] in ("KILL", "RETIRE")
    assert decided["decisions"][HOSTILE]["decision"] == "HOLD"
    assert set(decided["weights"]) == {"skilled"}
    assert kill_switch.killed_agents(root=tmp_path) == ["loser"]
    entry = kill_switch.killed_since(root=tmp_path)["loser"]
    assert entry["by"] == "pipeline" and "pnl" in entry["reason"]

    assert materialize(tmp_path).success
    again = state(tmp_path, names.DECISIONS_FILE)
    assert again["decisions"]["loser"]["decision"] == "KILLED"
    log = kill_switch.kill_log(root=tmp_path)
    assert [e["action"] for e in log] == ["kill"]  # KILLED is reported, not killed again
    report = state(tmp_path, names.META_REPORT_FILE)
    assert set(report) >= {"meta", "fleet", "agents", "allocation"}
    assert report["allocation"]["weights"] == {"skilled": 1.0}


def test_why_not_promoted_table_names_every_gate(tmp_path):
    fleet(tmp_path)
    result = materialize(tmp_path)
    meta = result.asset_materializations_for_node(names.AGENT_DECISIONS)[0].metadata
    table = meta["why_not_promoted"].value
    for gate in ("pnl", "hit rate", "error rate", "avg latency", "trades", "timing PSR"):
        assert gate in table
    gates = state(tmp_path, names.DECISIONS_FILE)["decisions"]["loser"]["gates"]
    assert gates["pnl"]["passed"] is False and gates["pnl"]["rule"] == "≥ 150"


def _files(root: Path) -> dict[str, bytes]:
    paths = [names.DECISIONS_FILE, names.KILLED_AGENTS_FILE, names.CONFIDENCE_FILE]
    stored = [
        Path(names.WAREHOUSE_DIR) / f"{a}.parquet" for a in (names.AGENT_DECISIONS, names.ALLOCATION_WEIGHTS)
    ]
    return {str(p): (root / p).read_bytes() for p in [*map(Path, paths), *stored] if (root / p).exists()}


def test_a_failing_blocking_check_leaves_decisions_kill_list_and_allocation_untouched(tmp_path):
    fleet(tmp_path)
    assert materialize(tmp_path, promote_min_pnl_bps=1e9).success  # nobody promoted yet
    before = _files(tmp_path)
    kill_log_before = (tmp_path / names.KILL_LOG_FILE).read_bytes()
    # a new agent whose losses would be a KILL, but whose telemetry is missing: coverage drops
    newcomer = _rows("newcomer", 30, _loser, start_day=5)
    write_history(tmp_path, [*newcomer], [])
    result = materialize(tmp_path)
    # the failed blocking check fails agent_stats' step (no run retry: step failures are not
    # retried); everything downstream of it is skipped
    assert not result.success
    failed = [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failed == [names.AGENT_STATS]
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks[sup.CHECK_TELEMETRY_COVERAGE].passed
    assert "traded runs" in checks[sup.CHECK_TELEMETRY_COVERAGE].description
    materialized = {m.asset_key.path[-1] for m in result.get_asset_materialization_events()}
    assert names.AGENT_DECISIONS not in materialized and names.ALLOCATION_WEIGHTS not in materialized
    assert _files(tmp_path) == {**before, names.CONFIDENCE_FILE: _files(tmp_path)[names.CONFIDENCE_FILE]}
    assert (tmp_path / names.KILL_LOG_FILE).read_bytes() == kill_log_before
    assert "newcomer" not in kill_switch.killed_agents(root=tmp_path)


def test_one_young_agent_does_not_block_the_fleet(tmp_path):
    young = _rows("young", 2, _skilled, start_day=37)
    fleet(tmp_path, extra_trades=young, extra_runs=_telemetry(young))
    result = materialize(tmp_path)
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    decided = state(tmp_path, names.DECISIONS_FILE)["decisions"]["young"]
    assert decided["decision"] == "HOLD" and decided["gates"]["trades"]["passed"] is False


def test_too_few_fleet_trades_blocks_decisions(tmp_path):
    few = _rows("a", 5, _loser)
    write_history(tmp_path, few, _telemetry(few))
    result = materialize(tmp_path)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks[sup.CHECK_ENOUGH_TRADES].passed
    assert "15 short" in checks[sup.CHECK_ENOUGH_TRADES].description
    assert not (tmp_path / names.DECISIONS_FILE).exists()


def test_unpriced_share_check(tmp_path):
    fleet(tmp_path)
    bad = _rows("gappy", 10, _skilled, symbol="DOGEUSDT")
    for row in bad:
        row.update(status="unpriced", realized_pnl_bps=np.nan, net_pnl_bps=np.nan, reason="no bar")
    write_history(tmp_path, bad, _telemetry(bad))
    result = materialize(tmp_path)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks[sup.CHECK_UNPRICED_SHARE].passed
    assert checks[sup.CHECK_UNPRICED_SHARE].metadata["unpriced_rows"].value == 10


def test_an_operator_revive_holds(tmp_path):
    fleet(tmp_path)
    assert materialize(tmp_path).success
    assert "loser" in kill_switch.killed_agents(root=tmp_path)
    # revived after its losses: only what it does from now on counts toward KILL and RETIRE
    kill_switch.revive_agent("loser", reason="new prompt", root=tmp_path, now=START + pd.Timedelta(days=41))
    assert materialize(tmp_path).success
    decided = state(tmp_path, names.DECISIONS_FILE)["decisions"]["loser"]
    assert decided["decision"] == "HOLD"
    assert "loser" not in kill_switch.killed_agents(root=tmp_path)


def test_confidence_file_is_identical_on_every_run(tmp_path):
    fleet(tmp_path)
    materialize(tmp_path)
    first = (tmp_path / names.CONFIDENCE_FILE).read_bytes()
    materialize(tmp_path)
    assert (tmp_path / names.CONFIDENCE_FILE).read_bytes() == first
    assert state(tmp_path, names.CONFIDENCE_FILE)["loser"]["mult"] == pytest.approx(0.2)


def test_hostile_agent_name_cannot_break_the_pr_comment(tmp_path):
    fleet(tmp_path)
    materialize(tmp_path)
    text = (tmp_path / names.PR_COMMENT_FILE).read_text()
    markdown_it = pytest.importorskip("markdown_it")
    rendered = markdown_it.MarkdownIt("commonmark").enable("table").render(text)
    assert "<script" not in rendered  # the name is shown as text, never markup
    table_lines = [line for line in text.splitlines() if line.startswith("|")]
    widths = {line.replace("\\|", "").count("|") for line in table_lines}
    assert len(widths) <= 2  # every row of each table has its header's cell count


def test_supervisor_settings_mirror_the_policy():
    from meta_pipeline.supervisor.policy import SupervisorPolicy

    fields = set(SupervisorPolicy.__dataclass_fields__)
    assert fields == set(SupervisorSettings.model_fields) - {"model_config"}
    assert SupervisorSettings().policy == SupervisorPolicy()


def test_the_ui_names_agents_held_only_by_the_evidence_gates(tmp_path):
    rising = _rows("always_long", 30, lambda i: 40.0 + (i % 4) * 10, direction=lambda i: "LONG")
    lucky = _rows("lucky", 5, lambda i: 80.0, symbol="ETHUSDT")
    fleet(tmp_path, extra_trades=[*rising, *lucky], extra_runs=_telemetry([*rising, *lucky]))
    result = materialize(tmp_path)
    meta = result.asset_materializations_for_node(names.AGENT_DECISIONS)[0].metadata
    held = meta["held_for_evidence"].value
    assert "always\\_long" in held or "always_long" in held
    assert "no timing variation" in held
    assert "lucky" in held and "trades" in held
    assert "skilled" not in held  # promoted: not held


def test_telemetry_before_any_trade_matured_decides_nothing(tmp_path):
    """The first day of a deployment: runs (many erroring) but no matured trade yet. That is not
    "no data": the fleet-trades check fails, so nobody is killed on error counts alone."""
    runs = _telemetry(_rows("flaky", 10, _skilled), errors=1.0)
    write_history(tmp_path, [], runs)
    result = materialize(tmp_path)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks[sup.CHECK_ENOUGH_TRADES].passed
    assert kill_switch.killed_agents(root=tmp_path) == []
    assert not (tmp_path / names.DECISIONS_FILE).exists()


def test_an_impossible_allocation_cap_fails_before_the_kill_switch_is_touched(tmp_path):
    fleet(tmp_path)
    result = materialize(tmp_path, allocation_cap=0.5)  # one agent qualifies: 0.5 × 1 < 1
    assert not result.success
    assert kill_switch.kill_log(root=tmp_path) == []  # "loser" would be killed: nothing was applied
    assert not (tmp_path / names.DECISIONS_FILE).exists()


def _outputs(root: Path) -> dict:
    """What the supervisor's runs leave for the app and the UI, comparable across runs."""
    warehouse = Warehouse(root / names.WAREHOUSE_DIR)
    return {
        "confidence": (root / names.CONFIDENCE_FILE).read_bytes(),
        "decisions": state(root, names.DECISIONS_FILE)["decisions"],
        "stats": warehouse.read_table(names.AGENT_STATS),
        "portfolio": warehouse.read_table(names.PORTFOLIO),
        "portfolio_summary": warehouse.read_table_facts(names.PORTFOLIO)["summary"],
        "quality": warehouse.read_table_facts(names.AGENT_STATS)["quality"],
    }


def _ledger_read(result: dg.ExecuteInProcessResult, asset: str) -> str:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return event.materialization.metadata["ledger"].value


def test_a_tick_re_reads_only_the_changed_days_and_gives_what_a_fresh_ledger_gives(tmp_path):
    """The supervisor keeps per-day summaries (warehouse/_supervisor_ledger): after a late trade
    lands on an old day, its next run reads that day (and the chain's days from it), not the whole
    history, and every output equals a run that rebuilds the ledgers from nothing."""
    fleet(tmp_path)
    assert materialize(tmp_path).success
    late = _rows("loser", 1, lambda i: -400.0, symbol="ETHUSDT", start_day=30)[0]
    late |= {"run_id": "loser-late", "ts": late["ts"] + pd.Timedelta(hours=3)}
    late["entry_time"], late["exit_time"] = late["ts"], late["ts"] + pd.Timedelta(hours=24)
    warehouse = Warehouse(tmp_path / names.WAREHOUSE_DIR)
    day = late["date"]
    for asset, row in ((names.RECONCILED_TRADES, late), (names.TELEMETRY, _telemetry([late])[0])):
        frame = warehouse.read_partition(asset, day)
        warehouse.write_partition(asset, day, pd.concat([frame, pd.DataFrame([row])], ignore_index=True))
    tick = materialize(tmp_path)
    assert tick.success
    for asset in (names.AGENT_STATS, names.CONFIDENCE_STATE, names.PORTFOLIO):
        read = _ledger_read(tick, asset)
        assert "mode: ledger" in read and day in read, (asset, read)
        assert "2026-01-01" not in read, (asset, read)  # the first days were not read again
    after_tick = _outputs(tmp_path)
    assert after_tick["stats"].set_index("agent").at["loser", "trades"] == 41

    shutil.rmtree(tmp_path / names.WAREHOUSE_DIR / names.SUPERVISOR_LEDGER_DIR)
    rebuilt = materialize(tmp_path)
    assert rebuilt.success and "2026-01-01" in _ledger_read(rebuilt, names.PORTFOLIO)
    fresh = _outputs(tmp_path)
    assert after_tick["confidence"] == fresh["confidence"]
    assert after_tick["decisions"] == fresh["decisions"]
    assert after_tick["quality"] == fresh["quality"]
    pd.testing.assert_frame_equal(after_tick["stats"], fresh["stats"], rtol=1e-9, atol=1e-9)
    pd.testing.assert_frame_equal(after_tick["portfolio"], fresh["portfolio"], rtol=1e-9, atol=1e-9)
    assert after_tick["portfolio_summary"] == pytest.approx(fresh["portfolio_summary"], rel=1e-9, abs=1e-9)
