"""``meta_supervisor/reports/pr_comment.md``: the report as a markdown comment (docs/rules.md, *File
contract*, ``meta_supervisor/``).

It keeps the app's sections and lines — ``## Meta-Agent Report``, ``- Generated:``, ``- Severity:``,
``### Portfolio`` (Trades, PnL (bps), Hit rate, Max DD (bps)), ``### Decisions (top)`` (the top
agents by PnL), ``### Allocation (top)`` (the top weights) — and adds ``### Checks`` when the report
has checks. The decisions are a table (agent, decision, label, trades, PnL, hit rate, error rate,
latency, failed promotion gates) rather than the app's one line per agent: easier to scan in a PR
or in the UI. Agents rank by ``pnl_sum_bps`` descending (missing last, ties by name); weights by
weight descending.

Names are data: an agent name is shown in a code span (:func:`~meta_pipeline.reports.markdown.inline`,
as the app did, with a fence no backtick in the name can close), every other text is escaped
(:func:`~meta_pipeline.reports.markdown.escape`). A name longer than :data:`NAME_CHARS` characters is
cut with ``…``. A missing figure shows as an empty cell, or nothing after its label.

Numbers: bps 2 decimals, rates 3, weights 4, latency whole ms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from meta_pipeline.reports.markdown import Markdown, escape, inline, table
from meta_pipeline.storage import atomic_write_text

__all__ = ["COMMENT_PATH", "NAME_CHARS", "comment_path", "pr_comment", "write_pr_comment"]

COMMENT_PATH = Path("meta_supervisor/reports/pr_comment.md")
"""The comment's path relative to the data root."""

NAME_CHARS = 100
"""Longest agent name shown in full (characters); longer names are cut with ``…``."""

_DECISION_COLUMNS = [
    "agent",
    "decision",
    "label",
    "trades",
    "PnL bps",
    "hit",
    "err",
    "lat ms",
    "failed gates",
]
_DECISION_ALIGN = [None, None, None, "right", "right", "right", "right", "right", None]
_CHECK_COLUMNS = ["check", "blocking", "result", "value", "threshold", "detail"]


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` (missing, NaN, ±inf, not a number)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _fmt(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec``, or ``""`` when it is not a finite number."""
    number = _number(value)
    return "" if number is None else format(number, spec)


def _num(value: Any, spec: str) -> Markdown:
    """A table cell for a number: formatted digits need no escaping (and stay readable)."""
    return Markdown(_fmt(value, spec))


def _bold(text: str) -> str:
    return f"**{text}**" if text else ""


def _line(label: str, value: str) -> str:
    return f"- {label}: {value}".rstrip()


def _ranked_agents(agents: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any]]]:
    """Agents by ``pnl_sum_bps`` descending, missing PnL last, ties by name (stable output)."""

    def key(item: tuple[str, Mapping[str, Any]]) -> tuple[int, float, str]:
        pnl = _number(item[1].get("pnl_sum_bps")) if isinstance(item[1], Mapping) else None
        return (pnl is None, -(pnl or 0.0), str(item[0]))

    return sorted(agents.items(), key=key)


def _decision_row(name: str, stats: Mapping[str, Any]) -> list[object]:
    return [
        Markdown(inline(name, table=True, max_chars=NAME_CHARS)),
        stats.get("decision"),
        stats.get("label", stats.get("retirement_label")),
        _num(stats.get("trades"), ".0f"),
        _num(stats.get("pnl_sum_bps"), ".2f"),
        _num(stats.get("hit_rate"), ".3f"),
        _num(stats.get("error_rate"), ".3f"),
        _num(stats.get("avg_latency_ms"), ".0f"),
        list(stats.get("failed_gates") or []),
    ]


def _more(count: int, what: str) -> list[str]:
    return ["", f"_… and {count} more {what}_"] if count > 0 else []


def _check_row(check: Mapping[str, Any]) -> list[object]:
    passed = check.get("passed")
    result = "pass" if passed is True else "FAIL" if passed is False else "n/a"
    blocking = check.get("blocking", True)
    return [
        check.get("name"),
        "yes" if blocking else "no",
        result,
        check.get("value"),
        check.get("threshold"),
        check.get("detail", check.get("description")),
    ]


def pr_comment(report: Mapping[str, Any], top: int = 10) -> str:
    """The markdown comment for ``report`` (the dict of
    :func:`~meta_pipeline.reports.meta_report.build_meta_report`, or the app's older shape).

    ``top`` agents by PnL and ``top`` weights are listed; a line says how many more there are. Any
    key may be missing. Returns the text with a final newline.
    """
    meta = report.get("meta") or {}
    fleet = report.get("fleet") or {}
    agents = report.get("agents") or {}
    allocation = report.get("allocation") or {}
    weights = allocation.get("weights") or {}
    checks = report.get("checks") or []

    trades = _number(fleet.get("trades"))
    lines = [
        "## Meta-Agent Report",
        _line("Generated", inline(meta.get("generated_at"))),
        _line("Severity", _bold(escape(meta.get("severity") or ""))),
        "",
        "### Portfolio",
        _line("Trades", _bold("" if trades is None else f"{trades:.0f}")),
        _line("PnL (bps)", _bold(_fmt(fleet.get("portfolio_pnl_bps"), ".2f"))),
        _line("Hit rate", _bold(_fmt(fleet.get("portfolio_hit_rate"), ".3f"))),
        _line("Max DD (bps)", _bold(_fmt(fleet.get("portfolio_max_drawdown_bps"), ".2f"))),
        "",
        "### Decisions (top)",
    ]
    ranked = _ranked_agents(agents)
    if ranked:
        rows = [_decision_row(name, s if isinstance(s, Mapping) else {}) for name, s in ranked[:top]]
        lines.append(table(rows, _DECISION_COLUMNS, align=_DECISION_ALIGN))
        lines.extend(_more(len(ranked) - top, "agents"))
    else:
        lines.append("_no agents yet_")

    lines += ["", "### Allocation (top)"]
    ranked_weights = sorted(
        weights.items(), key=lambda kv: (_number(kv[1]) is None, -(_number(kv[1]) or 0.0), str(kv[0]))
    )
    if ranked_weights:
        for name, weight in ranked_weights[:top]:
            lines.append(_line(inline(name, max_chars=NAME_CHARS), _bold(_fmt(weight, ".4f"))))
        lines.extend(_more(len(ranked_weights) - top, "weights"))
    else:
        lines.append("_no capital allocated: no agent qualifies_")

    if checks:
        lines += ["", "### Checks"]
        lines.append(table([_check_row(c) for c in checks if isinstance(c, Mapping)], _CHECK_COLUMNS))
    return "\n".join(lines) + "\n"


def comment_path(root: Path | str) -> Path:
    """``<root>/meta_supervisor/reports/pr_comment.md``."""
    return Path(root) / COMMENT_PATH


def write_pr_comment(root: Path | str, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``<root>/meta_supervisor/reports/pr_comment.md`` atomically (temp
    file + rename, normal permissions). Returns the path written."""
    path = comment_path(root)
    atomic_write_text(path, text)
    return path
