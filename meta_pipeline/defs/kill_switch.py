"""The kill switch from the UI: the ``operate_kill_switch`` job (see :mod:`meta_pipeline.kill_switch`).

An operator launches it from the launchpad with a name, an action, a kind and a reason; it makes the
same change as ``meta-pipeline kill``/``revive`` (logged with ``by: operator``) on the data root of
the ``data_root`` resource, and shows the resulting kill list on the run page.
"""

# no ``from __future__ import annotations`` here: Dagster reads the op's config class from its
# annotation at decoration time, and a string annotation does not resolve

from pathlib import Path
from typing import Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from meta_pipeline import kill_switch, names
from meta_pipeline.defs.metadata import markdown_table
from meta_pipeline.defs.resources import DataRoot

OPERATE_KILL_SWITCH_JOB = names.OPERATE_KILL_SWITCH_JOB


class KillSwitchOrder(dg.Config):
    """One change of the kill list, as an operator."""

    name: str = Field(description="The agent's (or strategy's) name, exactly as it is written.")
    action: Literal["kill", "revive"] = Field(
        description="kill: put it on the kill list; revive: take it off."
    )
    kind: Literal["agent", "strategy"] = Field(default="agent", description="An agent or a strategy.")
    reason: str = Field(description="Why: kept in the kill log.")


def kill_list_table(kind: str, root: Path) -> dg.MetadataValue:
    """The kill list of ``kind`` with since when, by whom and why, as an escaped markdown table."""
    since = kill_switch.killed_since(kind, root=root)
    rows = [
        {
            "name": name,
            "since (UTC)": pd.Timestamp(entry["time"]) if entry["time"] is not None else "not in the log",
            "by": entry["by"],
            "reason": entry["reason"],
        }
        for name, entry in since.items()
    ]
    return markdown_table(
        pd.DataFrame(rows, columns=["name", "since (UTC)", "by", "reason"]), empty=f"_no {kind} is killed_"
    )


@dg.op(
    out=dg.Out(dg.Nothing),
    description=(
        "Kills or revives one agent or strategy, with the reason given, as an operator: the change is "
        "written to the kill list the runtime reads before every agent run and appended to "
        "meta_supervisor/state/kill_log.jsonl. Killing something already killed, or reviving "
        "something live, changes nothing and is logged as a no-op."
    ),
)
def apply_kill_switch(context: dg.OpExecutionContext, config: KillSwitchOrder, data_root: DataRoot) -> None:
    if not config.reason.strip():
        raise dg.Failure("give a reason: it is kept in the kill log", allow_retries=False)
    change = kill_switch.kill if config.action == "kill" else kill_switch.revive
    try:
        entry = change(config.name, config.kind, reason=config.reason, by="operator", root=data_root.path)
    except (ValueError, kill_switch.KillSwitchError) as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc
    done = "killed" if config.action == "kill" else "revived"
    summary = (
        f"{config.kind} {config.name!r} was already {'killed' if config.action == 'kill' else 'live'}: "
        "nothing changed (logged as a no-op)"
        if entry["noop"]
        else f"{done} {config.kind} {config.name!r}"
    )
    context.log.info(summary)
    context.add_output_metadata(
        {
            "change": dg.MetadataValue.text(summary),
            "noop": entry["noop"],
            "time": dg.MetadataValue.text(f"{entry['time']:%Y-%m-%dT%H:%M:%S.%fZ}"),
            "kill_list": kill_list_table(config.kind, data_root.path),
            "kill_list_file": dg.MetadataValue.path(
                str(kill_switch.list_path(config.kind, root=data_root.path))
            ),
        }
    )


@dg.job(
    name=OPERATE_KILL_SWITCH_JOB,
    description=(
        "Kill or revive an agent or a strategy by hand: set the name, the action (kill or revive), "
        "the kind (agent or strategy) and the reason in the launchpad. The agent runtime skips killed "
        "agents from its next run on; after a revive, the supervisor judges the agent only on its "
        "trades from the revive onward. Same as `meta-pipeline kill` / `meta-pipeline revive`."
    ),
)
def operate_kill_switch() -> None:
    apply_kill_switch()
