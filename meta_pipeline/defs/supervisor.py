"""The supervisor's assets: confidence, agent statistics (with the blocking checks that gate every
decision), decisions and the kill switch, allocation, portfolio and the meta report.

Each asset is unpartitioned — the current view computed from the reconciled history — so a backfill
of thirty old days updates it once. The rules are in ``meta_pipeline/supervisor/`` (no Dagster there);
this module reads the warehouse, calls them, writes the state files and shows the result in the UI.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
from filelock import FileLock

from meta_pipeline import kill_switch, names
from meta_pipeline.defs.metadata import markdown_table
from meta_pipeline.defs.resources import DataRoot, SupervisorSettings
from meta_pipeline.reports import charts, meta_report, pr_comment
from meta_pipeline.storage import atomic_write_bytes, atomic_write_json
from meta_pipeline.supervisor import (
    allocation,
    confidence,
    decisions,
    history,
    ledger,
    ledger_confidence,
    ledger_portfolio,
    ledger_quality,
    portfolio,
    stats,
)
from meta_pipeline.supervisor.policy import FOCUS_HORIZON_HOURS, SupervisorPolicy

OWNERS = ["team:meta-pipeline"]

# Follows the reconciled history: requested once after its inputs changed — a backfill of thirty
# days is one update, not thirty — never while an input is still being written, and never while a
# blocking check on an input has failed (also a check that failed in an earlier run). Built from
# parts rather than ``eager()``, whose ~any_deps_missing() would wait for every past day of the
# daily parents to exist.
FOLLOWS_INPUTS = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
    & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("follows its inputs")
CHECK_ENOUGH_TRADES = "enough_matured_trades"
CHECK_UNPRICED_SHARE = "unpriced_share_below_limit"
CHECK_TELEMETRY_COVERAGE = "telemetry_coverage"
BLOCKING_CHECKS = (CHECK_ENOUGH_TRADES, CHECK_UNPRICED_SHARE, CHECK_TELEMETRY_COVERAGE)


def _now() -> str:
    return pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


@contextmanager
def ledger_dir(data_root: DataRoot, part: str) -> Iterator[Path]:
    """The directory of one of the supervisor's ledgers (per-day summaries of the reconciled history,
    so a run re-reads only the days that changed), held under a file lock: a manual run beside the
    automation's never interleaves two updates of the same ledger."""
    directory = data_root.warehouse.directory / names.SUPERVISOR_LEDGER_DIR / part
    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory.parent / f".{part}.lock")):
        yield directory


def _ledger_metadata(report) -> dict:
    """A ledger report as one markdown line in the UI: what was read raw and what was reused."""
    figures = report.as_metadata()
    return {"ledger": dg.MetadataValue.md(", ".join(f"{k}: {v}" for k, v in figures.items() if v != ""))}


def window_days(data_root: DataRoot, policy: SupervisorPolicy) -> list[str] | None:
    """The signal days the look-back covers (None: all history)."""
    if policy.lookback_days is None:
        return None
    first = (pd.Timestamp.now(tz="UTC").normalize() - pd.Timedelta(days=policy.lookback_days)).date()
    keys = data_root.warehouse.stored_keys(names.RECONCILED_TRADES)
    return [key for key in keys if date.fromisoformat(key) >= first - timedelta(days=1)]


@dg.asset(
    name=names.CONFIDENCE_STATE,
    group_name=names.SUPERVISOR_GROUP,
    deps=[names.RECONCILED_TRADES],
    kinds={"python", "json"},
    owners=OWNERS,
    automation_condition=FOLLOWS_INPUTS,
    description=(
        "Each agent's confidence multiplier (0.20 … 1.20, starting at 1.0), folded over the matured "
        "24 h trades day by day: once per UTC day on which one of its trades matured, the sum of its "
        "last 5 trades moves it (below −50 bps ×0.85, below 0 ×0.93, above +50 ×1.03). The same "
        "history always gives the same file: meta_supervisor/state/confidence.json."
    ),
)
def confidence_state(context: dg.AssetExecutionContext, data_root: DataRoot) -> dg.MaterializeResult:
    with ledger_dir(data_root, "confidence") as directory:
        state, report = ledger_confidence.ledger_confidence(directory, data_root.warehouse)
    data_root.warehouse.write_table(names.CONFIDENCE_STATE, state.reset_index())
    atomic_write_json(data_root.path / names.CONFIDENCE_FILE, confidence.confidence_json(state))
    shown = state.reset_index()[["agent", "mult", "last_change", "recent_sum_bps", "updated_at", "updates"]]
    shown = shown.rename(columns={"last_change": "mult before last update"})
    context.log.info(
        f"confidence of {len(state)} agent(s); {len(report.days_read)} day(s) read, "
        f"{report.days_reused} reused ({report.mode})"
    )
    return dg.MaterializeResult(
        metadata={
            "agents": dg.MetadataValue.int(len(state)),
            "confidence": markdown_table(shown.sort_values("mult"), empty="_no matured 24 h trades yet_"),
            **_ledger_metadata(report),
        }
    )


def _check(name: str, passed: bool, description: str, **values) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        passed=bool(passed),
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={k: v for k, v in values.items() if v is not None},
    )


def quality_checks(quality: history.InputQuality, policy: SupervisorPolicy) -> list[dg.AssetCheckResult]:
    """The three fleet-level blocking checks; with no trades yet every one passes ("no data yet")."""
    if quality.empty:
        return [_check(name, True, "no data yet") for name in BLOCKING_CHECKS]
    # telemetry without matured trades (the first day of a deployment) is not "no data": the trade
    # check fails, so no agent is killed on a day of error counts alone
    enough = quality.matured_trades >= policy.check_min_fleet_trades
    unpriced_ok = quality.unpriced_share <= policy.check_max_unpriced_share
    coverage_ok = quality.telemetry_coverage >= policy.check_min_telemetry_coverage
    return [
        _check(
            CHECK_ENOUGH_TRADES,
            enough,
            f"{quality.matured_trades} matured 24 h trades across the fleet; "
            f"{policy.check_min_fleet_trades} needed before any decision"
            + ("" if enough else f" ({policy.check_min_fleet_trades - quality.matured_trades} short)"),
            matured_trades=quality.matured_trades,
            needed=policy.check_min_fleet_trades,
        ),
        _check(
            CHECK_UNPRICED_SHARE,
            unpriced_ok,
            f"{quality.unpriced_rows} of {quality.due_rows} due rows unpriced "
            f"({quality.unpriced_share:.2%}; limit {policy.check_max_unpriced_share:.2%})",
            unpriced_rows=quality.unpriced_rows,
            due_rows=quality.due_rows,
            unpriced_share=float(quality.unpriced_share),
            limit=float(policy.check_max_unpriced_share),
        ),
        _check(
            CHECK_TELEMETRY_COVERAGE,
            coverage_ok,
            f"{quality.covered_runs} of {quality.traded_runs} traded runs have telemetry with a readable "
            f"errors field ({quality.telemetry_coverage:.2%}; at least "
            f"{policy.check_min_telemetry_coverage:.2%} needed)",
            covered_runs=quality.covered_runs,
            traded_runs=quality.traded_runs,
            coverage=float(quality.telemetry_coverage),
            needed=float(policy.check_min_telemetry_coverage),
        ),
    ]


@dg.asset(
    name=names.AGENT_STATS,
    group_name=names.SUPERVISOR_GROUP,
    deps=[names.RECONCILED_TRADES, names.TELEMETRY],
    kinds={"python", "parquet"},
    owners=OWNERS,
    automation_condition=FOLLOWS_INPUTS,
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_ENOUGH_TRADES,
            asset=names.AGENT_STATS,
            blocking=True,
            description="Enough matured 24 h trades across the fleet to act on.",
        ),
        dg.AssetCheckSpec(
            CHECK_UNPRICED_SHARE,
            asset=names.AGENT_STATS,
            blocking=True,
            description="Few due (signal, horizon) rows are unpriced.",
        ),
        dg.AssetCheckSpec(
            CHECK_TELEMETRY_COVERAGE,
            asset=names.AGENT_STATS,
            blocking=True,
            description="Traded runs have telemetry whose errors field is readable.",
        ),
    ],
    description=(
        "Per agent: trades, PnL, hit rate, drawdown and the split of its mean PnL into directional bias "
        "and timing, from matured 24 h trades; runs, error rate, latency and cost from all telemetry "
        "runs; and the evidence behind promotion: the probabilistic and deflated Sharpe ratio of its "
        "timing returns on the chain of non-overlapping trades, and how many more trades it needs. "
        "Three blocking checks stop every decision when the data under them is bad."
    ),
)
def agent_stats(
    context: dg.AssetExecutionContext, data_root: DataRoot, supervisor_settings: SupervisorSettings
):
    policy = supervisor_settings.policy
    warehouse = data_root.warehouse
    revived = kill_switch.revived_at(root=data_root.path)
    since = {name: pd.Timestamp(when) for name, when in revived.items()}
    previous = warehouse.read_table_facts(names.AGENT_STATS) or {}
    seen = set(previous.get("agents_seen", []))
    seen |= {
        entry["name"] for entry in kill_switch.kill_log(root=data_root.path) if entry.get("kind") == "agent"
    }
    days = window_days(data_root, policy)
    if days is None:
        # all history (the default): from the ledgers, re-reading only the days that changed
        now = pd.Timestamp.now(tz="UTC")
        with ledger_dir(data_root, "quality") as directory:
            quality, quality_report = ledger_quality.ledger_input_quality(directory, warehouse, as_of=now)
        with ledger_dir(data_root, "stats") as directory:
            # the deflated Sharpe ratio's trials: every agent ever seen, this history's included
            table, report = ledger.ledger_agent_stats(
                directory, warehouse, since=since, known_agents=seen, psr_probability=policy.psr_probability
            )
        seen |= set(table.index)
        reads = {**_ledger_metadata(report), "quality_ledger": _ledger_metadata(quality_report)["ledger"]}
    else:
        # a look-back window bounds the read by itself: the window's days, read as they are
        trades = history.matured_trades(warehouse, days, horizon_hours=FOCUS_HORIZON_HOURS)
        runs = history.telemetry_runs(warehouse, days)
        if not trades.empty:
            start = pd.Timestamp.now(tz="UTC").normalize() - pd.Timedelta(days=policy.lookback_days)
            trades = trades[trades["exit_ts"] >= start]
            runs = runs[runs["ts"] >= start]
        quality = history.input_quality(warehouse, trades, runs, as_of=pd.Timestamp.now(tz="UTC"), days=days)
        seen |= set(trades["agent"].astype(str)) | set(runs["agent"].astype(str))
        table = stats.agent_stats(
            trades,
            runs,
            since=since,
            n_trials=max(len(seen), 1),
            psr_probability=policy.psr_probability,
        )
        reads = {"ledger": dg.MetadataValue.text(f"not used: a look-back window of {len(days)} day(s)")}
    warehouse.write_table(
        names.AGENT_STATS,
        table.reset_index(),
        facts={
            "agents_seen": sorted(seen),
            "quality": quality.__dict__,
            "window_days": None if days is None else len(days),
        },
    )
    shown = table.reset_index()[
        [
            "agent",
            "trades",
            "pnl_sum_bps",
            "hit_rate",
            "max_drawdown_bps",
            "bias_bps",
            "timing_bps",
            "chain_trades",
            "timing_psr",
            "deflated_sharpe",
            "more_trades_needed",
            "runs",
            "error_rate",
            "avg_latency_ms",
            "p95_latency_ms",
            "cost_usd",
        ]
    ]
    checks = quality_checks(quality, policy)
    for check in checks:
        if not check.passed:
            context.log.warning(f"blocking check {check.check_name} failed: {check.description}")
    yield dg.MaterializeResult(
        metadata={
            "agents": dg.MetadataValue.int(len(table)),
            "agents_ever_seen": dg.MetadataValue.int(len(seen)),
            "matured_24h_trades": dg.MetadataValue.int(quality.matured_trades),
            "telemetry_runs": dg.MetadataValue.int(quality.telemetry_runs),
            "revived_agents": dg.MetadataValue.text(", ".join(sorted(revived)) or "none"),
            **reads,
            "agents_table": markdown_table(
                shown.sort_values("pnl_sum_bps", ascending=False), empty="_no agents yet_"
            ),
        },
        check_results=checks,
    )


@dg.asset(
    name=names.AGENT_DECISIONS,
    group_name=names.SUPERVISOR_GROUP,
    deps=[names.AGENT_STATS, names.CONFIDENCE_STATE],
    kinds={"python", "json"},
    owners=OWNERS,
    automation_condition=FOLLOWS_INPUTS,
    description=(
        "The decision for every agent — KILLED (on the kill list), RETIRE, KILL, PROMOTE or HOLD, in that "
        "precedence — with its retirement score and label (KEEP, WATCH, RETIRE) and every promotion gate "
        "(value, rule, pass or fail). KILL and RETIRE are applied through the kill switch with the numbers "
        "as the reason. Writes meta_supervisor/state/decisions.json. Not run when a blocking check on "
        "agent_stats fails: the previous decisions and kill list stay."
    ),
)
def agent_decisions(
    context: dg.AssetExecutionContext, data_root: DataRoot, supervisor_settings: SupervisorSettings
) -> dg.MaterializeResult:
    policy = supervisor_settings.policy
    table = _read_stats(data_root)
    killed_before = kill_switch.killed_agents(root=data_root.path)
    verdicts = decisions.decide(table, policy, killed=killed_before)
    combined = table.join(verdicts)
    # everything that can fail (e.g. an allocation cap too small for the agents that qualify) is
    # computed before the kill switch is touched: a failed step changes nothing
    weights = _weights(combined, data_root, policy)
    gates = decisions.gate_table(table, policy)
    applied = []
    for agent, row in verdicts[verdicts["decision"].isin([decisions.KILL, decisions.RETIRE])].iterrows():
        kill_switch.kill_agent(
            str(agent), reason=f"{row['decision']}: {row['kill_reason']}", by="pipeline", root=data_root.path
        )
        applied.append(str(agent))
    if applied:
        context.log.warning(f"kill switch applied to {len(applied)} agent(s): {', '.join(applied)}")
    stored = combined.assign(failed_gates=combined["failed_gates"].map(", ".join)).reset_index()
    data_root.warehouse.write_table(names.AGENT_DECISIONS, stored)
    severity = "high" if float(table["pnl_sum_bps"].sum()) < 0 else "low"
    atomic_write_json(
        data_root.path / names.DECISIONS_FILE,
        {
            "generated_at": _now(),
            "severity": severity,
            "weights": {agent: round(float(w), 4) for agent, w in weights.items()},
            "decisions": _decisions_json(combined, gates),
        },
    )
    counts = verdicts["decision"].value_counts()
    summary = stored[
        [
            "agent",
            "decision",
            "label",
            "retirement_score",
            "trades",
            "pnl_sum_bps",
            "hit_rate",
            "timing_psr",
            "error_rate",
            "avg_latency_ms",
            "cost_usd",
            "failed_gates",
            "kill_reason",
        ]
    ].sort_values("pnl_sum_bps", ascending=False)
    return dg.MaterializeResult(
        metadata={
            **{f"{d.lower()}": dg.MetadataValue.int(int(counts.get(d, 0))) for d in decisions.DECISIONS},
            "applied_to_kill_switch": dg.MetadataValue.text(", ".join(applied) or "none"),
            "decisions": markdown_table(summary, empty="_no agents yet_"),
            "why_not_promoted": markdown_table(_gate_matrix(gates), empty="_no gates active_"),
            "held_for_evidence": markdown_table(
                _held_for_evidence(gates, table),
                empty="_no agent passes the app's thresholds but fails the evidence gates_",
            ),
        }
    )


def _read_stats(data_root: DataRoot) -> pd.DataFrame:
    table = data_root.warehouse.read_table(names.AGENT_STATS)
    if table is None:
        return stats.agent_stats(history.empty_trades(), history.telemetry_runs(data_root.warehouse, []))
    return table.set_index("agent")


def _multipliers(data_root: DataRoot) -> pd.Series:
    state = data_root.warehouse.read_table(names.CONFIDENCE_STATE)
    if state is None or state.empty:
        return pd.Series(dtype="float64")
    return state.set_index("agent")["mult"]


def _weights(combined: pd.DataFrame, data_root: DataRoot, policy: SupervisorPolicy) -> pd.Series:
    return allocation.allocation_weights(
        combined[["pnl_sum_bps", "hit_rate", "error_rate", "decision"]],
        _multipliers(data_root),
        max_error_rate=policy.allocation_max_error_rate,
        cap=policy.allocation_cap,
    )


APP_GATES = ("pnl", "hit rate", "error rate", "avg latency")  # the app's own promotion thresholds
EVIDENCE_GATES = ("trades", "timing PSR")


def _held_for_evidence(gates: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Agents the app's thresholds alone would promote but the evidence gates hold, with why."""
    if gates.empty:
        return gates
    passed = gates.pivot(index="agent", columns="gate", values="passed")
    app = [g for g in APP_GATES if g in passed]
    evidence = [g for g in EVIDENCE_GATES if g in passed]
    if not evidence:
        return pd.DataFrame()
    held = passed[passed[app].all(axis=1) & ~passed[evidence].all(axis=1)]
    rows = []
    for agent in held.index:
        failed = [g for g in evidence if not held.loc[agent, g]]
        stats_row = table.loc[agent] if agent in table.index else {}
        reason = stats_row.get("psr_reason") if "timing PSR" in failed else None
        rows.append(
            {
                "agent": agent,
                "failed evidence gates": ", ".join(failed),
                "trades": stats_row.get("trades"),
                "pnl_sum_bps": stats_row.get("pnl_sum_bps"),
                "bias_bps": stats_row.get("bias_bps"),
                "timing_bps": stats_row.get("timing_bps"),
                "timing_psr": stats_row.get("timing_psr"),
                "why": reason or "",
            }
        )
    return pd.DataFrame(rows)


def _gate_matrix(gates: pd.DataFrame) -> pd.DataFrame:
    """agent × gate, each cell "✓ value (rule)" or "✗ value (rule)"."""
    if gates.empty:
        return gates
    cell = (
        gates["passed"].map({True: "✓", False: "✗"})
        + " "
        + gates["value"].map(lambda v: "n/a" if pd.isna(v) else f"{v:.4g}")
        + " ("
        + gates["rule"]
        + ")"
    )
    matrix = gates.assign(cell=cell).pivot(index="agent", columns="gate", values="cell")
    return matrix[list(dict.fromkeys(gates["gate"]))].reset_index()


def _decisions_json(combined: pd.DataFrame, gates: pd.DataFrame) -> dict:
    by_agent = {agent: group for agent, group in gates.groupby("agent", sort=False)} if len(gates) else {}
    out = {}
    for agent, row in combined.iterrows():
        g = by_agent.get(str(agent))
        out[str(agent)] = {
            "decision": row["decision"],
            "label": row["label"],
            "retirement_score": int(row["retirement_score"]),
            "kill_reason": row["kill_reason"] or None,
            "gates": {}
            if g is None
            else {
                r.gate: {
                    "value": None if pd.isna(r.value) else float(r.value),
                    "rule": r.rule,
                    "passed": bool(r.passed),
                }
                for r in g.itertuples()
            },
        }
    return out


@dg.asset(
    name=names.ALLOCATION_WEIGHTS,
    group_name=names.SUPERVISOR_GROUP,
    deps=[names.AGENT_DECISIONS, names.CONFIDENCE_STATE],
    kinds={"python", "parquet"},
    owners=OWNERS,
    automation_condition=FOLLOWS_INPUTS,
    description=(
        "Capital weights per agent: PnL × (0.5 + hit rate) × confidence multiplier, normalised to sum "
        "to 1. Agents that are killed, retired or to be killed, that lost money or whose error rate is "
        "above 5 % get nothing; empty when no agent qualifies."
    ),
)
def allocation_weights(data_root: DataRoot, supervisor_settings: SupervisorSettings) -> dg.MaterializeResult:
    policy = supervisor_settings.policy
    combined = data_root.warehouse.read_table(names.AGENT_DECISIONS)
    if combined is None:
        combined = pd.DataFrame(columns=["agent", "pnl_sum_bps", "hit_rate", "error_rate", "decision"])
    combined = combined.set_index("agent")
    weights = _weights(combined, data_root, policy)
    frame = pd.DataFrame({"agent": weights.index.astype(str), "weight": weights.to_numpy(dtype="float64")})
    data_root.warehouse.write_table(names.ALLOCATION_WEIGHTS, frame)
    return dg.MaterializeResult(
        metadata={
            "agents_with_capital": dg.MetadataValue.int(len(frame)),
            "weights": markdown_table(
                frame.sort_values("weight", ascending=False).assign(weight=lambda f: f["weight"].round(4)),
                empty="_no agent qualifies for capital_",
            ),
        }
    )


@dg.asset(
    name=names.PORTFOLIO,
    group_name=names.SUPERVISOR_GROUP,
    deps=[names.RECONCILED_TRADES],
    kinds={"python", "parquet"},
    owners=OWNERS,
    automation_condition=FOLLOWS_INPUTS,
    description=(
        "Every matured 24 h trade in exit-time order: PnL, hit rate, maximum drawdown (additive bps) and "
        "trade count, for the fleet and by agent, symbol and regime, with the equity curve and PnL by "
        "agent as charts."
    ),
)
def portfolio_asset(data_root: DataRoot) -> dg.MaterializeResult:
    with ledger_dir(data_root, "portfolio") as directory:
        summary, by_key, series, report = ledger_portfolio.ledger_portfolio_figures(
            directory, data_root.warehouse
        )
    breakdown = pd.concat(
        [part.reset_index().rename(columns={by: "key"}).assign(by=by) for by, part in by_key.items()],
        ignore_index=True,
    )
    data_root.warehouse.write_table(names.PORTFOLIO, breakdown, facts={"summary": summary})
    by_agent = (
        breakdown[breakdown["by"] == "agent"].set_index("key")["pnl_bps"] if len(breakdown) else pd.Series()
    )
    # one point per exit day (its close and its deepest drawdown): the per-day summaries are what the
    # asset keeps, so a tick does not re-read every trade to draw the curve
    equity = charts.equity_chart_png(ledger_portfolio.chart_curve(series))
    atomic_write_bytes(data_root.path / names.EQUITY_CHART_FILE, equity)  # the LP email attaches it
    return dg.MaterializeResult(
        metadata={
            "trades": dg.MetadataValue.int(int(summary["trades"])),
            **{
                key: dg.MetadataValue.float(float(summary[key]))
                for key in ("pnl_bps", "hit_rate", "max_drawdown_bps")
                if summary.get(key) is not None and pd.notna(summary[key])
            },
            "equity_curve": dg.MetadataValue.md(charts.png_markdown(equity, "equity curve and drawdown")),
            "pnl_by_agent_chart": dg.MetadataValue.md(
                charts.png_markdown(charts.pnl_by_agent_png(by_agent), "pnl by agent")
            ),
            **_ledger_metadata(report),
            **{
                f"by_{by}": markdown_table(
                    breakdown[breakdown["by"] == by].drop(columns="by").rename(columns={"key": by}),
                    empty="_no trades yet_",
                )
                for by in ("agent", "instrument", "regime")
            },
        }
    )


@dg.asset(
    name=names.META_REPORT,
    group_name=names.SUPERVISOR_GROUP,
    deps=[names.AGENT_DECISIONS, names.ALLOCATION_WEIGHTS, names.PORTFOLIO, names.CONFIDENCE_STATE],
    kinds={"python", "json", "markdown"},
    owners=OWNERS,
    automation_condition=FOLLOWS_INPUTS,
    description=(
        "The report the rest of the system reads: meta_supervisor/reports/meta_report.json (fleet, agents "
        "with their decisions and evidence, allocation, confidence) and the PR comment "
        "meta_supervisor/reports/pr_comment.md."
    ),
)
def meta_report_asset(context: dg.AssetExecutionContext, data_root: DataRoot) -> dg.MaterializeResult:
    warehouse = data_root.warehouse
    combined = warehouse.read_table(names.AGENT_DECISIONS)
    agents = {} if combined is None else _agents_json(combined)
    weights_table = warehouse.read_table(names.ALLOCATION_WEIGHTS)
    weights = (
        {}
        if weights_table is None
        else dict(zip(weights_table["agent"], weights_table["weight"], strict=True))
    )
    facts = warehouse.read_table_facts(names.PORTFOLIO) or {}
    fleet = facts.get("summary") or portfolio.portfolio_summary(history.empty_trades())
    confidence_file = data_root.path / names.CONFIDENCE_FILE
    confidence_json = json.loads(confidence_file.read_text()) if confidence_file.exists() else {}
    report = meta_report.build_meta_report(
        generated_at=_now(),
        fleet=fleet,
        agents=agents,
        weights=weights,
        confidence_state=confidence_json,
        checks=_latest_checks(context),
    )
    meta_report.write_meta_report(data_root.path, report)
    text = pr_comment.pr_comment(report)
    pr_comment.write_pr_comment(data_root.path, text)
    return dg.MaterializeResult(
        metadata={
            "severity": dg.MetadataValue.text(report["meta"]["severity"]),
            "agents": dg.MetadataValue.int(len(agents)),
            "pr_comment": dg.MetadataValue.md(text),
            "path": dg.MetadataValue.path(str(data_root.path / names.META_REPORT_FILE)),
        }
    )


_AGENT_FIELDS = [
    "decision",
    "label",
    "retirement_score",
    "trades",
    "pnl_sum_bps",
    "hit_rate",
    "mean_bps",
    "max_drawdown_bps",
    "bias_bps",
    "timing_bps",
    "chain_trades",
    "timing_sharpe",
    "timing_psr",
    "deflated_sharpe",
    "min_track_record",
    "more_trades_needed",
    "pnl_psr",
    "psr_reason",
    "runs",
    "error_rate",
    "avg_latency_ms",
    "p95_latency_ms",
    "cost_usd",
    "kill_reason",
]


def _agents_json(combined: pd.DataFrame) -> dict:
    out = {}
    for row in combined.to_dict("records"):
        entry = {field: row.get(field) for field in _AGENT_FIELDS}
        gates = row.get("failed_gates") or ""
        entry["failed_gates"] = [g for g in str(gates).split(", ") if g]
        out[str(row["agent"])] = entry
    return out


def _latest_checks(context: dg.AssetExecutionContext) -> list[dict]:
    """The latest result of each blocking check on agent_stats, from the instance."""
    out = []
    for name in BLOCKING_CHECKS:
        key = dg.AssetCheckKey(dg.AssetKey(names.AGENT_STATS), name)
        record = context.instance.event_log_storage.get_latest_asset_check_execution_by_key([key]).get(key)
        evaluation = getattr(getattr(record, "event", None), "dagster_event", None)
        data = getattr(evaluation, "event_specific_data", None) if evaluation else None
        if data is None:
            continue
        out.append(
            {"name": name, "passed": bool(data.passed), "blocking": True, "detail": data.description or ""}
        )
    return out
