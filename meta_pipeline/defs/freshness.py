"""``reconciled_is_fresh``: a warning when the reconciliation falls behind what the agents write.

Data time lags by the horizon (a day's 24 h rows mature two days later), so the check compares wall
clocks: when ``reconciled_trades`` was last materialized (any day: the last run that reconciled)
against when an input file was last written. More than an hour between the two means no run has
reconciled for an hour while the agents kept writing — the automation is off, the daemon is down,
or runs fail before reconciling. It warns and never blocks; it runs after ``reconciled_trades`` in
every run of the main job (so every 30-minute tick), and alone from the asset's *Checks* tab.
"""

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from meta_pipeline import names
from meta_pipeline.defs.resources import DataRoot

MAX_LAG_SECONDS = 3600.0


@dataclass(frozen=True)
class Freshness:
    passed: bool
    description: str
    lag_seconds: float | None = None  # how much older the last reconciliation is than the last write


def _at(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:,.0f} min"


def freshness(
    reconciled_at: float | None,
    input_written_at: float | None,
    now: float,
    max_lag_seconds: float = MAX_LAG_SECONDS,
) -> Freshness:
    """Whether the last reconciliation (epoch seconds, ``None`` if never) keeps up with the last write
    to an input file (epoch seconds, ``None`` if there is no input file)."""
    if input_written_at is None:
        return Freshness(True, "no input yet: nothing to reconcile")
    if reconciled_at is None:
        waiting = now - input_written_at
        if waiting > max_lag_seconds:
            return Freshness(
                False,
                f"never reconciled, and the inputs were last written at {_at(input_written_at)} "
                f"({_minutes(waiting)} ago): is the automation on?",
                waiting,
            )
        return Freshness(
            True, f"not reconciled yet; the inputs were written {_minutes(waiting)} ago", waiting
        )
    lag = input_written_at - reconciled_at
    if lag > max_lag_seconds:
        return Freshness(
            False,
            f"last reconciled at {_at(reconciled_at)}, {_minutes(lag)} before the inputs were last written "
            f"({_at(input_written_at)}; limit {_minutes(max_lag_seconds)}): is the automation on, and "
            "do its runs succeed?",
            lag,
        )
    return Freshness(
        True,
        f"last reconciled at {_at(reconciled_at)}; inputs last written at {_at(input_written_at)}",
        lag,
    )


def newest_input(paths: list[Path]) -> tuple[Path, float] | None:
    """The input file written last and its modification time, or ``None`` when none exists."""
    found = []
    for path in paths:
        try:
            found.append((os.stat(path).st_mtime, path))
        except OSError:
            continue
    if not found:
        return None
    mtime, path = max(found)
    return path, mtime


@dg.asset_check(
    asset=names.RECONCILED_TRADES,
    name=names.RECONCILED_FRESH_CHECK,
    blocking=False,
    description=(
        "Warns when reconciled_trades was last materialized more than an hour before alpha/events.jsonl "
        "or telemetry/events.jsonl was last written: no run has reconciled what the agents wrote for "
        "an hour (automation off, daemon down, or runs failing). Compares wall-clock times, not data "
        "times (rows mature a horizon later). Runs with every run of the main job and can be "
        "executed alone; never blocks anything."
    ),
)
def reconciled_is_fresh(context: dg.AssetCheckExecutionContext, data_root: DataRoot) -> dg.AssetCheckResult:
    event = context.instance.get_latest_materialization_event(dg.AssetKey(names.RECONCILED_TRADES))
    reconciled_at = event.timestamp if event is not None else None
    newest = newest_input([data_root.signals_file, data_root.telemetry_file])
    verdict = freshness(reconciled_at, newest[1] if newest else None, datetime.now(UTC).timestamp())
    metadata: dict = {
        "last_reconciled_at": _at(reconciled_at) if reconciled_at is not None else "never",
        "inputs_last_written_at": _at(newest[1]) if newest else "no input file",
        "max_lag_minutes": MAX_LAG_SECONDS / 60,
    }
    if newest:
        metadata["newest_input"] = dg.MetadataValue.path(str(newest[0]))
    if verdict.lag_seconds is not None:
        metadata["lag_minutes"] = round(verdict.lag_seconds / 60, 1)
    return dg.AssetCheckResult(
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=verdict.description,
        metadata=metadata,
    )
