"""meta-pipeline: the demo, a UI launcher and the kill switch.

  meta-pipeline demo   writes the deterministic demo data root (12 agents, 120 days, synthetic
                       1-minute bars) and runs the main job over it end to end, offline, then the
                       supervisor (decisions, kill switch, allocation, reports), failure forensics
                       and the LP email (written to files, never sent).
  meta-pipeline run    runs the main job over --start … --end as one run (a backfill), then the
                       supervisor, on the environment's data root or, with --demo, on the demo's.
  meta-pipeline ui     opens the Dagster UI (dagster dev) on the same instance; with --demo, on the
                       demo data root.
  meta-pipeline kill NAME --reason TEXT     puts an agent (or, with --strategy, a strategy) on the
  meta-pipeline revive NAME --reason TEXT   kill list, or takes it off; every change is logged
  meta-pipeline killed                      lists what is killed: since when, by whom and why

demo, run and ui keep the Dagster instance in $DAGSTER_HOME (default ./.dagster_home, with the
project's dagster.yaml copied into it). Settings come from the environment (see README,
Configuration). kill, revive and killed work on the data root given by --root, else
$META_PIPELINE_ROOT, else the current directory, and do not load Dagster.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import uuid
import warnings
from datetime import date, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DEMO_DIR = Path(".meta_pipeline_demo")
DEFAULT_DAGSTER_HOME = Path(".dagster_home")


def _prepare_dagster_home() -> Path:
    """Use $DAGSTER_HOME if set, else ./.dagster_home with the project's dagster.yaml in it."""
    home = Path(os.environ.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME).resolve()
    home.mkdir(parents=True, exist_ok=True)
    template = REPO_ROOT / "dagster.yaml"
    if template.exists() and not (home / "dagster.yaml").exists():
        shutil.copyfile(template, home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def demo_environment(demo_dir: Path, first_day: date) -> dict[str, str]:
    """The environment that points the pipeline at the demo data root: its bar files as the only
    price source, and its own first day as the first partition (so the UI shows only its days)."""
    return {
        "META_PIPELINE_ROOT": str(demo_dir),
        "META_PIPELINE_PRICE_SOURCES": "files",
        "META_PIPELINE_BARS_DIR": str(demo_dir / "bars"),
        "META_PIPELINE_START_DATE": first_day.isoformat(),
    }


def _demo_first_day(demo_dir: Path) -> date | None:
    """The first day of an existing demo data root: the earliest day of its bar files."""
    days = sorted(
        p.name.rsplit("-1m-", 1)[-1].removesuffix(".csv") for p in (demo_dir / "bars").glob("*/*-1m-*.csv")
    )
    with contextlib.suppress(IndexError, ValueError):
        return date.fromisoformat(days[0])
    return None


def _use_demo_root(demo_dir: Path) -> bool:
    """Point the environment at an existing demo data root; False (and why) if there is none."""
    demo_dir = demo_dir.resolve()
    first_day = _demo_first_day(demo_dir)
    if first_day is None:
        print(f"no demo data in {demo_dir}: run `meta-pipeline demo` first", file=sys.stderr)
        return False
    os.environ.update(demo_environment(demo_dir, first_day))
    return True


def demo(args: argparse.Namespace) -> int:
    if args.live:
        return demo_live(args)
    from meta_pipeline.demo import DEFAULT_DAYS, generate_demo

    demo_dir = Path(args.dir).resolve()
    days = DEFAULT_DAYS if args.days is None else args.days
    summary = generate_demo(demo_dir, seed=args.seed, start=date.fromisoformat(args.start), days=days)
    print(
        f"demo data root: {demo_dir}  ({len(summary.agents)} agents, {len(summary.symbols)} symbols, "
        f"{summary.days[0]} → {summary.days[1]}, {summary.n_signals:,} signals, "
        f"{summary.n_telemetry:,} runs, {summary.n_malformed} malformed lines on purpose)"
    )
    os.environ.update(demo_environment(demo_dir, summary.days[0]))
    os.environ.pop("SMTP_HOST", None)  # the demo never emails anyone: the LP email is written, not sent
    # one "planned" event per asset for the demo's range run instead of one per asset and day (≈ 700
    # SQLite writes, several seconds); Dagster's trade-off: if that run failed, its partitions would
    # not be marked failed in the UI. Operators' runs (`meta-pipeline run`) keep the default.
    os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "1")
    from meta_pipeline.defs.partitions import REACH_DAYS

    run_id, ok = run_range(summary.days[0], summary.days[1] + timedelta(days=REACH_DAYS))
    if ok:
        ok = _run_daily_reports()
    _print_results(demo_dir, run_id)
    return 0 if ok else 1


LIVE_DAYS = 30  # the live demo's history: its first backfill takes seconds, not a minute
LIVE_CATCH_UP = timedelta(hours=3)  # held back at the start and replayed fast
LIVE_SPEED = 60.0  # the catch-up runs a minute of data time per second


def _port_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (checked before minutes of preparation:
    `dagster dev` keeps running without its webserver when the port is taken)."""
    import socket

    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def demo_live(args: argparse.Namespace) -> int:
    """``demo --live``: a demo history that ends now, its last hours held back and appended again
    (fast, then in real time) while ``dagster dev`` runs with the daemon and the automation on."""
    import signal
    import subprocess
    import time
    from datetime import UTC, datetime

    from meta_pipeline.demo import generate_demo
    from meta_pipeline.demo.live import LiveFeed, replay_clock

    if not _port_free(args.host, args.port):
        print(f"port {args.port} on {args.host} is in use: pass another with --port", file=sys.stderr)
        return 2
    demo_dir = Path(args.dir).resolve()
    days = LIVE_DAYS if args.days is None else args.days
    today = datetime.now(UTC).date()
    first = today - timedelta(days=days - 1)
    summary = generate_demo(demo_dir, seed=args.seed, start=first, days=days)
    cut = datetime.now(UTC) - LIVE_CATCH_UP
    cut_ms = int(cut.timestamp() * 1000) // 60_000 * 60_000
    feed = LiveFeed(demo_dir, cut_ms)
    print(
        f"live demo data root: {demo_dir}  ({len(summary.agents)} agents, {first} → today; everything "
        f"after {cut:%H:%M} UTC held back and appended again, {LIVE_SPEED:.0f}× fast until it "
        "catches up with now, then as it happens)"
    )
    os.environ.update(demo_environment(demo_dir, first))
    os.environ.pop("SMTP_HOST", None)
    os.environ["META_PIPELINE_AUTOMATION"] = "on"  # the sensors and schedules start running
    os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "1")
    # the history up to the cut, in one run; the supervisor is left to the automation, so its first
    # decisions (and kills) happen in the UI while you watch
    _, ok = run_range(first, today, supervise=False)
    if not ok:
        return 1
    ui = subprocess.Popen(
        [sys.executable, "-m", __package__, "ui", "--host", args.host, "--port", str(args.port)],
        start_new_session=True,
    )
    print(
        f"\nOpen http://{args.host}:{args.port} — Runs: the input sensor starts a run within a minute "
        "of new lines; Assets → reconciled_trades: pending rows mature as their bars arrive; "
        "agent_decisions and the kill list change as the supervisor follows. Ctrl-C stops everything.\n"
    )
    started_ms = int(time.time() * 1000)
    try:
        while ui.poll() is None:
            now_ms = int(time.time() * 1000)
            clock_ms = replay_clock(cut_ms, started_ms, now_ms, LIVE_SPEED)
            released = feed.advance(clock_ms)
            if released.signals or released.runs or released.bars:
                at = datetime.fromtimestamp(clock_ms / 1000, UTC)
                print(
                    f"feed at {at:%Y-%m-%d %H:%M} UTC: +{released.signals} signal line(s), "
                    f"+{released.runs} telemetry line(s), +{released.bars} bar(s)",
                    flush=True,
                )
            time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    finally:
        stopped_by_itself = ui.poll() is not None
        if not stopped_by_itself:
            os.killpg(ui.pid, signal.SIGINT)
            try:
                ui.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(ui.pid, signal.SIGKILL)
    if stopped_by_itself and ui.returncode:
        print(
            f"the UI stopped by itself (exit code {ui.returncode}; is port {args.port} already in use?): "
            "see its output above",
            file=sys.stderr,
        )
        return 1
    return 0


def _run_daily_reports() -> bool:
    """The two daily jobs the schedules run in production: failure forensics and the LP email."""
    import dagster as dg

    from meta_pipeline import names
    from meta_pipeline.definitions import defs

    ok = True
    with dg.DagsterInstance.get() as instance:
        for job in (names.FORENSICS_JOB, names.LP_EMAIL_JOB):
            result = defs.resolve_job_def(job).execute_in_process(instance=instance, raise_on_error=False)
            if not result.success:
                print(f"{job}: run {result.run_id} failed; open the UI to see why", file=sys.stderr)
                ok = False
    return ok


def run_range(first: date, last: date, *, export: bool = False, supervise: bool = True) -> tuple[str, bool]:
    """Run the main job over ``first`` … ``last`` as one run on the persistent instance, after
    failing the runs whose process died (so their pool slots are free), then refresh
    ``alpha/reconciled.jsonl`` if the range is bigger than a tick or ``export``, then (``supervise``)
    the supervisor. Returns (run id, success)."""
    home = _prepare_dagster_home()
    import dagster as dg

    from meta_pipeline import names, run_liveness
    from meta_pipeline.definitions import defs
    from meta_pipeline.defs.partitions import REACH_DAYS

    print(f"running {names.MAIN_JOB} for {first} … {last} as one run (Dagster instance: {home})")
    with dg.DagsterInstance.get() as instance:
        for dead in run_liveness.reap_dead_runs(instance):
            print(f"run {dead}: its process is gone; its pool slots were freed (and the run marked failed)")
        # tagged with this process from the start, so even a run killed while it waits for the
        # exchange_api slot can be reaped by the next one
        run_id = str(uuid.uuid4())
        result = defs.resolve_job_def(names.MAIN_JOB).execute_in_process(
            instance=instance,
            run_id=run_id,
            tags={
                names.RANGE_START_TAG: first.isoformat(),
                names.RANGE_END_TAG: last.isoformat(),
                **run_liveness.run_process_tags(run_id),
            },
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
            raise_on_error=False,
        )
        # the app reads alpha/reconciled.jsonl: bring it up to date after a backfill (or when asked);
        # a tick-sized run leaves it to the hourly refresh (it is a copy of every day's file)
        if result.success and (export or (last - first).days > REACH_DAYS):
            exported = defs.resolve_job_def(names.EXPORT_JOB).execute_in_process(
                instance=instance, raise_on_error=False
            )
            result = result if exported.success else exported
        # the supervisor's views follow the reconciled history (the daemon's automation does this
        # when it runs; a run from the command line has no daemon)
        if result.success and supervise:
            supervised = defs.resolve_job_def(names.SUPERVISOR_JOB).execute_in_process(
                instance=instance, raise_on_error=False
            )
            if not supervised.success:
                print(
                    f"supervisor run {supervised.run_id} did not finish: a blocking check on its inputs "
                    "failed or a step failed; the previous decisions stay (see the UI)",
                    file=sys.stderr,
                )
    if not result.success:
        print(f"run {result.run_id} failed; open the UI to see which step and why", file=sys.stderr)
    return result.run_id, result.success


def run(args: argparse.Namespace) -> int:
    if args.demo and not _use_demo_root(Path(args.dir)):
        return 2
    try:
        first, last = date.fromisoformat(args.start), date.fromisoformat(args.end or args.start)
    except ValueError as exc:
        print(f"--start/--end must be dates in YYYY-MM-DD form: {exc}", file=sys.stderr)
        return 2
    if last < first:
        print(f"--end {last} is before --start {first}", file=sys.stderr)
        return 2
    from meta_pipeline.defs.environment import SETTINGS

    if first < SETTINGS.start_date:
        print(f"--start {first} is before the first partition ({SETTINGS.start_date}, "
              "META_PIPELINE_START_DATE)", file=sys.stderr)  # fmt: skip
        return 2
    run_id, ok = run_range(first, last, export=args.export)
    print(f"run {run_id}: {'succeeded' if ok else 'FAILED'}; data root {SETTINGS.root}")
    return 0 if ok else 1


def _print_results(demo_dir: Path, run_id: str) -> None:
    from meta_pipeline import names
    from meta_pipeline.storage import Warehouse

    warehouse = Warehouse(demo_dir / names.WAREHOUSE_DIR)
    rows = warehouse.read_partitions(names.RECONCILED_TRADES, warehouse.stored_keys(names.RECONCILED_TRADES))
    if rows is not None and len(rows):
        print(
            "\nreconciled (signal, horizon) rows by status:",
            rows["status"].astype(str).value_counts().to_dict(),
        )
    decisions_file = demo_dir / names.DECISIONS_FILE
    if decisions_file.exists():
        table = _decisions_table(json.loads(decisions_file.read_text()).get("decisions", {}), warehouse)
        if table:
            print("\nsupervisor decisions (24 h trades):\n" + table)
    store = warehouse.directory
    print(f"""
Where to look (run {run_id}):
  {demo_dir / names.RECONCILED_FILE}      what the app reads: matured PnL rows
  {store}/<asset>/<YYYY-MM-DD>.parquet   every asset, queryable with pandas or DuckDB
  {store / "signal_quarantine.parquet"}   rejected input lines with line number and reason
  {demo_dir / names.DECISIONS_FILE}   decisions; kill list beside it
  {demo_dir / names.PR_COMMENT_FILE}   the meta report as markdown
  {demo_dir / names.FORENSICS_FILE}   why agents lose, as tested hypotheses
  {demo_dir / "meta_supervisor/reports/lp_email_html.html"}   the LPs' email (written, not sent)
Open the UI:  python -m meta_pipeline ui --demo      then http://127.0.0.1:3000 (Assets, Runs, asset checks)""")


def _decisions_table(decisions: dict, warehouse) -> str:
    """agent, decision, label, trades, pnl, hit rate, timing PSR and the gates it failed."""
    from meta_pipeline import names

    stats = warehouse.read_table(names.AGENT_STATS)
    stats = {} if stats is None else stats.set_index("agent").to_dict("index")
    lines = [
        f"{'agent':<18} {'decision':<8} {'label':<6} {'trades':>6} {'pnl bps':>9} {'hit':>5} {'PSR':>5}  failed gates"
    ]
    for agent, d in sorted(decisions.items(), key=lambda kv: -(stats.get(kv[0], {}).get("pnl_sum_bps") or 0)):
        s = stats.get(agent, {})
        failed = ", ".join(g for g, v in d.get("gates", {}).items() if not v["passed"])
        psr = s.get("timing_psr")
        lines.append(
            f"{_printable(agent)[:18]:<18} {d['decision']:<8} {d['label']:<6} {int(s.get('trades', 0)):>6} "
            f"{s.get('pnl_sum_bps', 0):>9.1f} {s.get('hit_rate') or 0:>5.2f} "
            f"{'' if psr is None or psr != psr else f'{psr:.2f}':>5}  {failed}"
        )
    return "\n".join(lines) if decisions else ""


def ui(args: argparse.Namespace) -> int:
    if args.demo and not _use_demo_root(Path(args.dir)):
        return 2
    _prepare_dagster_home()
    # the workspace names the code location `meta_pipeline`, as `dagster dev` and `dg dev` do
    workspace = REPO_ROOT / "workspace.yaml"
    command = ["dagster", "dev", "-w", str(workspace), "-h", args.host, "-p", str(args.port)]
    print(" ".join(command), f"(DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
    os.execvp(command[0], command)
    return 0  # not reached


def _printable(text: str | None) -> str:
    """``text`` as it may be shown on a terminal: as is when it is plain printable text, else its
    repr, so a newline or an escape sequence in a name (names are data) cannot break or forge a line."""
    if text is None:
        return "?"
    return text if text and text.isprintable() and text == text.strip() else repr(text)


def _kind(args: argparse.Namespace) -> str:
    return "strategy" if args.strategy else "agent"


def switch(args: argparse.Namespace) -> int:
    """``kill`` and ``revive``: one change of the kill list, by an operator, with a reason."""
    from meta_pipeline import kill_switch

    if not args.reason.strip():
        print("--reason must say why (it is kept in the kill log)", file=sys.stderr)
        return 2
    change = kill_switch.kill if args.command == "kill" else kill_switch.revive
    try:
        entry = change(args.name, _kind(args), reason=args.reason, by="operator", root=args.root)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (kill_switch.KillSwitchError, OSError) as exc:  # a corrupt list, a lock, permissions
        print(f"error: {exc}", file=sys.stderr)
        return 1
    what = f"{entry['kind']} {entry['name']!r}"  # quoted: a name may hold spaces or anything else
    done = "killed" if entry["action"] == "kill" else "revived"
    path = kill_switch.list_path(entry["kind"], root=args.root)
    if entry["noop"]:
        state = "killed" if entry["action"] == "kill" else "live"
        print(f"{what} was already {state}: nothing changed (logged as a no-op in {kill_switch.LOG_FILE})")
    else:
        print(f"{done} {what} at {entry['time']:%Y-%m-%dT%H:%M:%SZ} ({path})")
    return 0


def list_killed(args: argparse.Namespace) -> int:
    """``killed``: a plain table of the killed names with since when, by whom and why."""
    from meta_pipeline import kill_switch

    kind = _kind(args)
    path = kill_switch.list_path(kind, root=args.root)
    try:
        since = kill_switch.killed_since(kind, root=args.root)
    except (kill_switch.KillSwitchError, OSError) as exc:  # a corrupt list, a lock, permissions
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not since:
        print(f"no {kind} is killed ({path})")
        return 0
    print(f"{len(since)} killed {kind}{'s' if len(since) > 1 else ''} ({path}):")
    rows = [("NAME", "SINCE (UTC)", "BY", "REASON")]
    for name, entry in since.items():
        moment = entry["time"]
        rows.append(
            (
                _printable(name),
                f"{moment:%Y-%m-%d %H:%M:%S}" if moment is not None else "(not in the log)",
                _printable(entry["by"]),
                _printable(entry["reason"]) if entry["reason"] != "" else "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print(
            "  ".join(
                [*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[3]]
            ).rstrip()
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    # the CLI runs Dagster in-process; its beta/preview notices are for developers, not operators
    warnings.filterwarnings("ignore", module="dagster")
    parser = argparse.ArgumentParser(
        prog="meta-pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo_parser = commands.add_parser("demo", help="write the demo data root and run the main job on it")
    demo_parser.add_argument(
        "--dir", default=str(DEFAULT_DEMO_DIR), help="demo data root (default %(default)s)"
    )
    demo_parser.add_argument("--seed", type=int, default=7, help="random seed (default %(default)s)")
    demo_parser.add_argument(
        "--start", default="2025-09-01", help="first day, YYYY-MM-DD (default %(default)s)"
    )
    demo_parser.add_argument("--days", type=int, help="days of signals (default 120; 30 with --live)")
    demo_parser.add_argument(
        "--live",
        action="store_true",
        help=(
            "a history that ends now, its last hours appended again as you watch, with the UI, the "
            "daemon and the automation running (Ctrl-C stops it)"
        ),
    )
    demo_parser.add_argument("--host", default="127.0.0.1", help="--live: the UI's host")
    demo_parser.add_argument("--port", type=int, default=3000, help="--live: the UI's port")
    demo_parser.add_argument(
        "--interval", type=float, default=5.0, help="--live: seconds between appends (default %(default)s)"
    )
    demo_parser.set_defaults(handler=demo)

    run_parser = commands.add_parser(
        "run", help="run the main job over a range of days as one run (a backfill from the command line)"
    )
    run_parser.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    run_parser.add_argument("--end", help="last day, YYYY-MM-DD (default: --start)")
    run_parser.add_argument("--demo", action="store_true", help="on the demo data root")
    run_parser.add_argument(
        "--export",
        action="store_true",
        help="also rebuild alpha/reconciled.jsonl (done anyway for ranges longer than a tick)",
    )
    run_parser.add_argument(
        "--dir", default=str(DEFAULT_DEMO_DIR), help="demo data root (default %(default)s)"
    )
    run_parser.set_defaults(handler=run)

    ui_parser = commands.add_parser("ui", help="open the Dagster UI (dagster dev)")
    ui_parser.add_argument("--demo", action="store_true", help="on the demo data root")
    ui_parser.add_argument(
        "--dir", default=str(DEFAULT_DEMO_DIR), help="demo data root (default %(default)s)"
    )
    ui_parser.add_argument("--host", default="127.0.0.1")
    ui_parser.add_argument("--port", type=int, default=3000)
    ui_parser.set_defaults(handler=ui)

    root_help = "data root (default: $META_PIPELINE_ROOT, else the current directory)"
    for command, verb in (("kill", "put on"), ("revive", "take off")):
        switch_parser = commands.add_parser(
            command,
            help=f"{verb} the kill list an agent (or, with --strategy, a strategy), with a reason",
            description=(
                f"{verb.capitalize()} the kill list one name, as an operator, and log it in "
                "meta_supervisor/state/kill_log.jsonl. Doing it twice is logged as a no-op. A name "
                "that starts with '-' goes after '--'."
            ),
        )
        switch_parser.add_argument("name", help="the agent's (or strategy's) name, exactly as it is written")
        switch_parser.add_argument("--reason", required=True, help="why (kept in the kill log)")
        switch_parser.add_argument("--strategy", action="store_true", help="a strategy, not an agent")
        switch_parser.add_argument("--root", help=root_help)
        switch_parser.set_defaults(handler=switch)

    killed_parser = commands.add_parser("killed", help="list the killed agents (or strategies)")
    killed_parser.add_argument("--strategy", action="store_true", help="the killed strategies")
    killed_parser.add_argument("--root", help=root_help)
    killed_parser.set_defaults(handler=list_killed)

    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
