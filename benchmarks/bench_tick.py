#!/usr/bin/env python
"""The 30-minute tick at scale: wall time and peak memory of one `refresh_every_30_minutes` run
against a long history, and of a full `reconciled_export` refresh.

    python benchmarks/bench_tick.py [--days 365] [--signals-per-day 40000] [--ticks 5]
    python benchmarks/bench_tick.py --days 30 --signals-per-day 4000          # a quick check

1. History (built once, reused; `<cache>/marker.json` holds the parameters and progress): N days
   ending yesterday (UTC), S signals a day on 4 symbols (and ~2 telemetry runs per signal,
   ``--malformed-share`` of the signal lines quarantined), appended to the data root's input files
   and materialized through the real assets — `meta_pipeline_job` in-process on a persistent
   DagsterInstance in `<cache>/dagster_home`, in chunks of ``--chunk-days`` (each chunk's run also
   covers the REACH_DAYS before it, as the sensor would, so the previous chunk's last days mature).
   Prices come from the `files` source: synthetic Binance-dump CSVs for every day, today's up to the
   current minute (rewritten before every tick). A later invocation extends the history up to
   yesterday again.
2. In-process ticks (a fresh subprocess, so the build does not count in its memory): each appends
   ``--tick-signals`` signals (and their telemetry) timestamped in the last 30 minutes, then runs
   `meta_pipeline_job` over today − REACH_DAYS … today in-process, with the tags the schedule's
   run request carries. Reported: wall time of each run, per-step times (from the run's events),
   and the process's peak RSS (ru_maxrss) before and after the ticks.
3. CLI ticks: the same, each as `python -m meta_pipeline run --start … --end …` in a fresh process
   measured with /usr/bin/time (wall, max RSS). NB: `meta-pipeline run` also runs the full
   `reconciled_export` refresh after the main job; the instance's run records split the two.
4. The full `reconciled_export` refresh once, in its own process (time, max RSS, file size).
5. With ``--profile``: one more in-process tick under cProfile (not counted in the figures).

The product goal: median tick ≤ 10 s and peak RSS ≤ 1 GB on 2 cores, within 20 % between 30 and
365 days of history.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import tick_history as th  # noqa: E402

REACH_DAYS = 2  # checked against meta_pipeline.defs.partitions.REACH_DAYS in the workers
MARKER_VERSION = 1


# ------------------------------------------------------------------------------------------ helpers
def now_utc() -> datetime:
    return datetime.now(UTC)


def rss_mb() -> float:
    """Current resident set size of this process (MB)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def environment(cache: Path, start: date) -> dict[str, str]:
    root = cache / "root"
    return {
        "META_PIPELINE_ROOT": str(root),
        "META_PIPELINE_PRICE_SOURCES": "files",
        "META_PIPELINE_BARS_DIR": str(root / "bars"),
        "META_PIPELINE_START_DATE": start.isoformat(),
        "DAGSTER_HOME": str(cache / "dagster_home"),
    }


def load_marker(cache: Path) -> dict | None:
    path = cache / "marker.json"
    return json.loads(path.read_text()) if path.exists() else None


def save_marker(cache: Path, marker: dict) -> None:
    tmp = cache / "marker.json.tmp"
    tmp.write_text(json.dumps(marker, indent=1))
    tmp.replace(cache / "marker.json")


def append_tick_lines(root: Path, n: int, malformed_share: float) -> datetime:
    """Today's bars up to now, then ``n`` signals of the last 30 minutes (and telemetry)."""
    now = now_utc()
    until = int(now.timestamp() * 1000)
    th.write_bars(root / "bars", now.date(), until)
    if (now - timedelta(minutes=30)).date() < now.date():  # the window reaches yesterday
        th.write_bars(root / "bars", now.date() - timedelta(days=1))
    signals, telemetry = th.tick_lines(now, n, malformed_share)
    th.append(root / "alpha" / "events.jsonl", signals)
    th.append(root / "telemetry" / "events.jsonl", telemetry)
    return now


def worker(phase: str, cache: Path, args: list[str], log: Path) -> dict:
    """Run a phase of this script in a fresh process (the environment set before any import of
    meta_pipeline.definitions); returns the JSON it writes, plus its wall time and max RSS."""
    marker = load_marker(cache)
    env = {**os.environ, **environment(cache, date.fromisoformat(marker["start"]))}
    out = cache / f"{phase}.json"
    out.unlink(missing_ok=True)
    timing = cache / f"{phase}.time"
    command = [
        "/usr/bin/time", "-f", "%e %M", "-o", str(timing),
        sys.executable, str(Path(__file__).resolve()), "--_phase", phase, "--cache", str(cache),
        "--_out", str(out), *args,
    ]  # fmt: skip
    with log.open("a") as fh:
        proc = subprocess.run(command, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"phase {phase} failed (exit {proc.returncode}); see {log}")
    wall, kb = timing.read_text().split()[-2:]
    return {**json.loads(out.read_text()), "wall_s": float(wall), "maxrss_mb": int(kb) / 1024}


# ------------------------------------------------------------------------------------ phase: build
def phase_build(ns: argparse.Namespace) -> dict:
    """Append and materialize the history days the marker says are missing, chunk by chunk."""
    cache = Path(ns.cache)
    marker = load_marker(cache)
    import dagster as dg

    from meta_pipeline import names, run_liveness
    from meta_pipeline.definitions import defs
    from meta_pipeline.defs.partitions import REACH_DAYS as reach

    assert reach == REACH_DAYS, reach
    root = cache / "root"
    start = date.fromisoformat(marker["start"])
    target = date.fromisoformat(ns.until)
    job = defs.resolve_job_def(names.MAIN_JOB)
    chunks = []
    with dg.DagsterInstance.get() as instance:
        while True:
            done = (
                date.fromisoformat(marker["run_through"]) if marker["run_through"] else start - timedelta(1)
            )
            if done >= target:
                break
            first, last = done + timedelta(days=1), min(done + timedelta(days=ns.chunk_days), target)
            appended = date.fromisoformat(marker["appended_through"]) if marker["appended_through"] else None
            t0 = time.perf_counter()
            if appended is None or appended < last:
                # a crash while appending leaves a partial chunk: cut the files back first
                for name, size in marker["sizes"].items():
                    path = root / name
                    if path.exists() and path.stat().st_size > size:
                        os.truncate(path, size)
                for day in th.days(first, last):
                    signals, telemetry = th.day_lines(
                        day, marker["signals_per_day"], marker["malformed_share"]
                    )
                    th.append(root / "alpha" / "events.jsonl", signals)
                    th.append(root / "telemetry" / "events.jsonl", telemetry)
                    th.write_bars(root / "bars", day)
                marker["appended_through"] = last.isoformat()
                save_marker(cache, marker)
            gen_s = time.perf_counter() - t0
            run_first = max(start, first - timedelta(days=REACH_DAYS))
            t1 = time.perf_counter()
            for dead in run_liveness.reap_dead_runs(instance):
                print(f"reaped dead run {dead}")
            result = job.execute_in_process(
                instance=instance,
                tags={names.RANGE_START_TAG: run_first.isoformat(), names.RANGE_END_TAG: last.isoformat()},
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
                raise_on_error=False,
            )
            run_s = time.perf_counter() - t1
            if not result.success:
                raise SystemExit(f"history run {run_first} … {last} failed: run {result.run_id}")
            marker["run_through"] = last.isoformat()
            marker["sizes"] = {
                name: (root / name).stat().st_size
                for name in ("alpha/events.jsonl", "telemetry/events.jsonl")
            }
            marker["build_seconds"] = marker.get("build_seconds", 0.0) + gen_s + run_s
            save_marker(cache, marker)
            chunks.append(
                {"first": run_first.isoformat(), "last": last.isoformat(), "gen_s": gen_s, "run_s": run_s}
            )
            print(
                f"history {run_first} … {last}: generate {gen_s:.1f}s, run {run_s:.1f}s, "
                f"RSS {rss_mb():.0f} MB (peak {maxrss_mb():.0f} MB)",
                flush=True,
            )
    return {"chunks": chunks}


# ------------------------------------------------------------------------------------ phase: ticks
def step_times(instance, run_id: str) -> dict[str, float]:
    """Seconds per step of a run, from its STEP_START / STEP_SUCCESS (or FAILURE) events."""
    import dagster as dg

    started: dict[str, float] = {}
    took: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            started[event.step_key] = entry.timestamp
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            took[event.step_key] = entry.timestamp - started.get(event.step_key, entry.timestamp)
    return took


def phase_ticks(ns: argparse.Namespace) -> dict:
    """``--ticks`` in-process ticks on the persistent instance, then optionally one under cProfile."""
    import dagster as dg

    from meta_pipeline import names, run_liveness
    from meta_pipeline.definitions import defs
    from meta_pipeline.defs.partitions import REACH_DAYS as reach

    assert reach == REACH_DAYS, reach
    cache = Path(ns.cache)
    marker = load_marker(cache)
    root = cache / "root"
    job = defs.resolve_job_def(names.MAIN_JOB)
    baseline = {"rss_after_import_mb": rss_mb(), "maxrss_after_import_mb": maxrss_mb()}
    ticks = []

    def one_tick(instance) -> tuple[float, str, str]:
        now = append_tick_lines(root, ns.tick_signals, marker["malformed_share"])
        today = now.date()
        first = max(date.fromisoformat(marker["start"]), today - timedelta(days=REACH_DAYS))
        run_id = str(uuid.uuid4())
        t0 = time.perf_counter()
        result = job.execute_in_process(
            instance=instance,
            run_id=run_id,
            tags={
                names.RANGE_START_TAG: first.isoformat(),
                names.RANGE_END_TAG: today.isoformat(),
                **run_liveness.run_process_tags(run_id),
            },
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            raise_on_error=False,
        )
        wall = time.perf_counter() - t0
        if not result.success:
            raise SystemExit(f"tick run {run_id} failed")
        return wall, run_id, f"{first} … {today}"

    with dg.DagsterInstance.get() as instance:
        for dead in run_liveness.reap_dead_runs(instance):
            print(f"reaped dead run {dead}")
        for i in range(ns.ticks):
            before = maxrss_mb()
            wall, run_id, span = one_tick(instance)
            steps = step_times(instance, run_id)
            ticks.append(
                {
                    "wall_s": wall,
                    "range": span,
                    "steps": steps,
                    "rss_mb": rss_mb(),
                    "maxrss_mb": maxrss_mb(),
                    "maxrss_growth_mb": maxrss_mb() - before,
                }
            )
            print(
                f"in-process tick {i + 1} ({span}): {wall:.2f}s, RSS {rss_mb():.0f} MB, peak {maxrss_mb():.0f} MB; "
                + ", ".join(f"{k} {v:.2f}s" for k, v in sorted(steps.items(), key=lambda kv: -kv[1])),
                flush=True,
            )
        profile = None
        if ns.profile:
            import cProfile
            import io
            import pstats

            profiler = cProfile.Profile()
            profiler.enable()
            wall, run_id, span = one_tick(instance)
            profiler.disable()
            stats_path = cache / "tick.prof"
            profiler.dump_stats(str(stats_path))
            text = io.StringIO()
            stats = pstats.Stats(profiler, stream=text)
            stats.sort_stats("cumulative").print_stats(
                r"meta_pipeline|pandas/io|pyarrow|dagster/_core/storage", 45
            )
            stats.sort_stats("tottime").print_stats(25)
            profile = {"wall_s": wall, "steps": step_times(instance, run_id), "stats": str(stats_path)}
            (cache / "tick_profile.txt").write_text(text.getvalue())
            print(f"profiled tick ({span}): {wall:.2f}s under cProfile; {cache / 'tick_profile.txt'}")
    return {"baseline": baseline, "ticks": ticks, "profile": profile}


# ----------------------------------------------------------------------------------- phase: export
def phase_export(ns: argparse.Namespace) -> dict:
    """The full reconciled_export refresh once (the job, in-process), plus the durations the
    instance recorded for the CLI ticks' runs (main job and the export job each CLI run ends with)."""
    import dagster as dg

    from meta_pipeline import names
    from meta_pipeline.definitions import defs

    cache = Path(ns.cache)
    target = cache / "root" / names.RECONCILED_FILE
    with dg.DagsterInstance.get() as instance:
        cli_runs = {}
        for job_name in (names.MAIN_JOB, names.EXPORT_JOB):
            records = instance.get_run_records(dg.RunsFilter(job_name=job_name), limit=ns.ticks)
            cli_runs[job_name] = [
                (r.end_time or 0) - (r.start_time or 0) for r in records if r.start_time and r.end_time
            ]
        base = rss_mb()
        t0 = time.perf_counter()
        result = defs.resolve_job_def(names.EXPORT_JOB).execute_in_process(
            instance=instance,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            raise_on_error=False,
        )
        wall = time.perf_counter() - t0
    if not result.success:
        raise SystemExit("export run failed")
    lines = 0
    with target.open("rb") as fh:
        while chunk := fh.read(16 << 20):
            lines += chunk.count(b"\n")
    return {
        "export_s": wall,
        "export_bytes": target.stat().st_size,
        "export_lines": lines,
        "rss_before_mb": base,
        "cli_run_durations": cli_runs,
    }


# ---------------------------------------------------------------------------------------- the driver
def cli_ticks(cache: Path, n: int, tick_signals: int, log: Path) -> list[dict]:
    marker = load_marker(cache)
    root = cache / "root"
    env = {**os.environ, **environment(cache, date.fromisoformat(marker["start"]))}
    out = []
    export_file = root / "alpha" / "reconciled.jsonl"
    for i in range(n):
        # the CLI's export refresh writes a new alpha/reconciled.jsonl beside the old one: when the
        # disk cannot hold both, drop the old one first (the refresh then costs the same writes)
        if export_file.exists():
            size = export_file.stat().st_size
            if shutil.disk_usage(root).free < 2.2 * size + 5e9:
                export_file.unlink()
                print(f"(removed the previous {size / 1e9:.1f} GB export before the CLI tick: disk space)")
        now = append_tick_lines(root, tick_signals, marker["malformed_share"])
        first = max(date.fromisoformat(marker["start"]), now.date() - timedelta(days=REACH_DAYS))
        timing = cache / "cli.time"
        command = [
            "/usr/bin/time", "-f", "%e %M", "-o", str(timing), sys.executable, "-m", "meta_pipeline", "run",
            "--start", first.isoformat(), "--end", now.date().isoformat(),
        ]  # fmt: skip
        with log.open("a") as fh:
            proc = subprocess.run(
                command, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, check=False
            )
        if proc.returncode != 0:
            raise SystemExit(f"CLI tick failed (exit {proc.returncode}); see {log}")
        wall, kb = timing.read_text().split()[-2:]
        out.append({"wall_s": float(wall), "maxrss_mb": int(kb) / 1024})
        print(
            f"CLI tick {i + 1} ({first} … {now.date()}): {float(wall):.2f}s, max RSS {int(kb) / 1024:.0f} MB",
            flush=True,
        )
    return out


def joined(values, spec: str = ".2f") -> str:
    return ", ".join(format(v, spec) for v in values)


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=365, help="days of history (default %(default)s)")
    ap.add_argument("--signals-per-day", type=int, default=40_000, help="default %(default)s")
    ap.add_argument("--cache", help="default ~/.cache/meta_pipeline_bench/<days>x<signals>")
    ap.add_argument(
        "--chunk-days", type=int, default=30, help="history days per build run (default %(default)s)"
    )
    ap.add_argument("--ticks", type=int, default=5, help="timed ticks of each kind (default %(default)s)")
    ap.add_argument(
        "--tick-signals", type=int, default=800, help="signals appended per tick (default %(default)s)"
    )
    ap.add_argument(
        "--malformed-share", type=float, default=0.001, help="signal lines quarantined (default %(default)s)"
    )
    ap.add_argument("--profile", action="store_true", help="profile one extra in-process tick with cProfile")
    ap.add_argument("--skip-cli", action="store_true", help="no CLI-subprocess ticks")
    ap.add_argument("--rebuild", action="store_true", help="delete the cache first")
    ap.add_argument("--_phase", help=argparse.SUPPRESS)
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    ap.add_argument("--until", help=argparse.SUPPRESS)
    ns = ap.parse_args(argv)
    if ns.cache is None:
        ns.cache = str(Path.home() / ".cache" / "meta_pipeline_bench" / f"{ns.days}x{ns.signals_per_day}")

    if ns._phase:  # a worker process
        import warnings

        warnings.filterwarnings("ignore", module="dagster")
        result = {"build": phase_build, "ticks": phase_ticks, "export": phase_export}[ns._phase](ns)
        Path(ns._out).write_text(json.dumps(result))
        return 0

    cache = Path(ns.cache).expanduser().resolve()
    if ns.rebuild and cache.exists():
        shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    log = cache / "bench.log"
    today = now_utc().date()
    params = {
        "version": MARKER_VERSION,
        "days": ns.days,
        "signals_per_day": ns.signals_per_day,
        "malformed_share": ns.malformed_share,
    }
    marker = load_marker(cache)
    if marker is not None and {k: marker.get(k) for k in params} != params:
        raise SystemExit(f"{cache} holds a history built with {marker}; use another --cache or --rebuild")
    if marker is None:
        marker = {
            **params,
            "start": (today - timedelta(days=ns.days)).isoformat(),
            "appended_through": None,
            "run_through": None,
            "sizes": {},
            "build_seconds": 0.0,
        }
        home = cache / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        (cache / "root" / "bars").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
        save_marker(cache, marker)

    # 1. the history, up to yesterday (extended if the cache was built on an earlier day)
    yesterday = today - timedelta(days=1)
    if marker["run_through"] is None or date.fromisoformat(marker["run_through"]) < yesterday:
        print(f"building history {marker['start']} … {yesterday} in {cache} (log: {log})", flush=True)
        build = worker(
            "build", cache, ["--until", yesterday.isoformat(), "--chunk-days", str(ns.chunk_days)], log
        )
        print(f"history built: {build['wall_s']:.0f}s wall, max RSS {build['maxrss_mb']:.0f} MB", flush=True)
    else:
        build = None
    marker = load_marker(cache)
    root = cache / "root"
    history_days = (date.fromisoformat(marker["run_through"]) - date.fromisoformat(marker["start"])).days + 1
    sizes = {
        "signals file": (root / "alpha" / "events.jsonl").stat().st_size,
        "telemetry file": (root / "telemetry" / "events.jsonl").stat().st_size,
        "warehouse": dir_size(root / "warehouse"),
    }

    # 2. in-process ticks; 3. CLI ticks; 4. the export refresh
    extra = ["--ticks", str(ns.ticks), "--tick-signals", str(ns.tick_signals)] + (
        ["--profile"] if ns.profile else []
    )
    inproc = worker("ticks", cache, extra, log)
    cli = [] if ns.skip_cli else cli_ticks(cache, ns.ticks, ns.tick_signals, log)
    exported = worker("export", cache, ["--ticks", str(ns.ticks)], log)

    # ------------------------------------------------------------------------------ the report
    walls = [t["wall_s"] for t in inproc["ticks"]]
    steps: dict[str, list[float]] = {}
    for t in inproc["ticks"]:
        for k, v in t["steps"].items():
            steps.setdefault(k, []).append(v)
    print()
    print(
        f"history: {history_days} days × {marker['signals_per_day']:,} signals/day (+~2 telemetry runs/signal, "
        f"{marker['malformed_share']:.1%} malformed) on 4 symbols, {marker['start']} … {marker['run_through']}; "
        f"build {marker['build_seconds']:.0f}s in all"
        + (
            f" (this invocation: {build['wall_s']:.0f}s, max RSS {build['maxrss_mb']:.0f} MB)"
            if build
            else ""
        )
    )
    print("sizes: " + ", ".join(f"{k} {v / 1e6:,.0f} MB" for k, v in sizes.items()))
    print(f"tick: {ns.tick_signals} signals in the last 30 min, range {inproc['ticks'][0]['range']}")
    print()
    print("median step time, in-process tick:")
    for k, v in sorted(steps.items(), key=lambda kv: -statistics.median(kv[1])):
        print(f"  {k:<28} {statistics.median(v):6.2f}s   (min {min(v):.2f}, max {max(v):.2f})")
    main_runs = exported["cli_run_durations"].get("meta_pipeline_job", [])
    export_runs = exported["cli_run_durations"].get("refresh_reconciled_export", [])
    print()
    header = (
        f"{'history':>8} {'tick in-proc':>13} {'tick CLI':>9} {'CLI: main job':>14} {'CLI: export':>12} "
        f"{'peak RSS in-proc':>17} {'peak RSS CLI':>13} {'export refresh':>15} {'export size':>12}"
    )
    print(header)
    print("-" * len(header))
    med = statistics.median
    print(
        f"{history_days:>7}d {med(walls):>12.2f}s "
        + (f"{med([c['wall_s'] for c in cli]):>8.2f}s " if cli else f"{'-':>9} ")
        + (f"{med(main_runs):>13.2f}s " if main_runs and cli else f"{'-':>14} ")
        + (f"{med(export_runs):>11.2f}s " if export_runs and cli else f"{'-':>12} ")
        + f"{inproc['maxrss_mb']:>14.0f} MB "
        + (f"{max(c['maxrss_mb'] for c in cli):>10.0f} MB " if cli else f"{'-':>13} ")
        + f"{exported['export_s']:>14.2f}s {exported['export_bytes'] / 1e6:>9.0f} MB"
    )
    print()
    print(
        f"in-process worker: RSS after import {inproc['baseline']['rss_after_import_mb']:.0f} MB, "
        f"peak after {ns.ticks} ticks {inproc['ticks'][-1]['maxrss_mb']:.0f} MB "
        f"(growth per tick: {joined(t['maxrss_growth_mb'] for t in inproc['ticks'])} MB); "
        f"worker process max RSS {inproc['maxrss_mb']:.0f} MB"
        + (" incl. the profiled tick" if ns.profile else "")
    )
    print(f"in-process ticks: {joined(walls)} s")
    if cli:
        print(
            f"CLI ticks (main job + export refresh, process start included): {joined(c['wall_s'] for c in cli)} s"
        )
        print(f"  CLI runs' main job durations: {joined(main_runs)} s; export job: {joined(export_runs)} s")
    print(
        f"export refresh: {exported['export_s']:.2f}s, {exported['export_lines']:,} lines, "
        f"{exported['export_bytes'] / 1e6:.0f} MB, process max RSS {exported['maxrss_mb']:.0f} MB"
    )
    if inproc.get("profile"):
        print(f"cProfile of one tick: {cache / 'tick_profile.txt'} (raw stats {inproc['profile']['stats']})")
    goal_t, goal_m = med(walls) <= 10, inproc["maxrss_mb"] <= 1024
    print(
        f"goal (median tick ≤ 10 s, peak RSS ≤ 1 GB): time {'met' if goal_t else 'NOT met'}, memory {'met' if goal_m else 'NOT met'}"
    )
    summary = {
        "history_days": history_days,
        "signals_per_day": marker["signals_per_day"],
        "build_seconds": marker["build_seconds"],
        "sizes": sizes,
        "inprocess": inproc,
        "cli": cli,
        "export": exported,
    }
    (cache / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
