"""``meta_supervisor/reports/meta_report.json``: the supervisor's report for the app and for people
(docs/rules.md, *File contract*, ``meta_supervisor/``).

Shape — the app's keys, kept as the app reads them, and new keys beside them::

    {
      "meta": {"generated_at": str, "severity": "high" | "low",
               "severity_reasons": [str, ...]},                        # new
      "fleet": {"portfolio_pnl_bps", "portfolio_hit_rate", "portfolio_max_drawdown_bps", "trades",
                ...other portfolio figures as given, e.g. "mean_bps"},
      "agents": {agent: {...stats and decision as given, plus the app's "retirement_label"
                         (= "label") and "killed" (decision is KILLED) when absent}},
      "allocation": {"weights": {agent: weight}, "confidence_state": {agent: {...}}},
      "checks": [{"name", "passed", "blocking", ...}, ...],               # new
      "method": {"pnl", "drawdown", "significance", "severity", "rounding"},  # new
      ...extra                                                            # new, caller's keys
    }

Decisions taken here:

* **Severity.** The app's rule is ``high`` when the portfolio PnL is below 0 bps, else ``low``. It
  is extended, keeping the app's two values: a failed **blocking** check also makes it ``high``
  (no decision was taken this run, which someone must look at). ``meta.severity_reasons`` says why.
  A missing PnL (no trade yet) is not below 0.
* **Rounding** (the report is for reading; the precise figures live in the warehouse and in
  ``decisions.json``): weights and confidence multipliers 4 decimals; keys ending in ``_bps`` 2
  decimals; rates (keys ending in ``_rate``) 3 decimals; PSR/DSR 4 decimals; ``_ms`` 1 decimal;
  ``_usd`` 6 decimals (the app's rounding of cost); ``retirement_score`` 2. This applies to the
  named figures of the fleet block, of each agent and of each confidence entry; values nested
  deeper are kept as given (their keys may be names, not figures), and so are other numbers.
* **Agent names** are JSON keys as written (any character): JSON escapes them; the markdown and
  HTML renderers escape them again for their own syntax.
* **JSON safety** (docs/rules.md, *Outputs*): :func:`json_safe` turns NaN and ±inf into ``null``,
  numpy scalars into Python numbers, timestamps into ISO-8601 UTC strings (``…Z``), tuples and sets
  into lists. Keys are sorted when written, so the same report gives the same bytes.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pandas as pd

from meta_pipeline.storage import atomic_write_json

__all__ = [
    "METHOD",
    "REPORT_PATH",
    "build_meta_report",
    "json_safe",
    "report_path",
    "severity_of",
    "write_meta_report",
]

REPORT_PATH = Path("meta_supervisor/reports/meta_report.json")
"""The report's path relative to the data root."""

# input name (the portfolio module's) → the app's name in the report's fleet block
_FLEET_NAMES = {
    "pnl_bps": "portfolio_pnl_bps",
    "hit_rate": "portfolio_hit_rate",
    "max_drawdown_bps": "portfolio_max_drawdown_bps",
}
_FLEET_KEYS = ("portfolio_pnl_bps", "portfolio_hit_rate", "portfolio_max_drawdown_bps", "trades")
_RESERVED = ("meta", "fleet", "agents", "allocation", "checks", "method")

METHOD = {
    "pnl": (
        "Sum of net PnL (bps, gross minus round-trip cost) of the matured 24 h trades: an additive sum "
        "of trade bps, not a compounded return."
    ),
    "drawdown": (
        "Largest fall of cumulative PnL below its running peak (peak starts at 0), with trades taken "
        "in exit-time order; a positive number of bps."
    ),
    "significance": (
        "Probabilistic Sharpe ratio (Bailey & López de Prado 2012) of each agent's timing returns "
        "(d − mean d)·r on its chain of non-overlapping 24 h trades; deflated Sharpe ratio over every "
        "agent ever evaluated (Bailey & López de Prado 2014); minimum track record length at p = 0.95."
    ),
    "severity": "high when the portfolio PnL is below 0 bps or a blocking check failed, else low.",
    "rounding": (
        "Weights and multipliers 4 decimals, bps 2, rates 3, PSR/DSR 4, ms 1, USD 6; precise figures "
        "live in the warehouse and in decisions.json."
    ),
}
"""The ``method`` block of the report: how the figures were made, in one sentence each."""


# --------------------------------------------------------------------------- JSON safety


def _utc_iso(value: dt.datetime) -> str:
    """ISO-8601 in UTC with ``Z``; a naive time is taken as UTC (every time here is UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat() + "Z"


def json_safe(obj: Any) -> Any:
    """``obj`` made of JSON types only, with no non-finite number (docs/rules.md, *Outputs*).

    * ``None``, ``str``, ``bool`` unchanged; numpy booleans → ``bool``.
    * integers (numpy too) → ``int``; floats (numpy too) → ``float``, NaN and ±inf → ``None``,
      ``-0.0`` → ``0.0`` (so rounding a tiny loss never writes ``-0.0``).
    * ``pd.NA``, ``pd.NaT`` → ``None``; ``datetime``/``pd.Timestamp``/``np.datetime64`` → ISO-8601
      UTC with ``Z`` (naive taken as UTC); ``date`` → ``YYYY-MM-DD``; ``timedelta`` → seconds.
    * mappings → ``dict`` with ``str`` keys (a non-string key becomes the string of its safe value);
      lists, tuples, numpy arrays → lists; sets → sorted lists; ``pd.Series`` → dict by index;
      ``pd.DataFrame`` → list of row dicts.
    * enums → their value; paths → ``str``; anything else → ``str(obj)`` (a report must not fail
      on an unexpected type; the value stays readable).
    """
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        value = float(obj)
        if not math.isfinite(value):
            return None
        return value + 0.0  # -0.0 + 0.0 == 0.0
    if obj is pd.NA or obj is pd.NaT:
        return None
    if isinstance(obj, np.datetime64):
        return None if np.isnat(obj) else _utc_iso(pd.Timestamp(obj))
    if isinstance(obj, dt.datetime):
        return _utc_iso(obj)
    if isinstance(obj, dt.date):
        return obj.isoformat()
    if isinstance(obj, dt.timedelta | np.timedelta64):
        seconds = pd.Timedelta(obj).total_seconds()
        return json_safe(seconds)
    if isinstance(obj, enum.Enum):
        return json_safe(obj.value)
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, pd.DataFrame):
        return [json_safe(row) for row in obj.to_dict(orient="records")]
    if isinstance(obj, pd.Series):
        return json_safe(obj.to_dict())
    if isinstance(obj, Mapping):
        return {(k if isinstance(k, str) else str(json_safe(k))): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, set | frozenset):
        return sorted((json_safe(v) for v in obj), key=lambda v: (str(type(v)), str(v)))
    if isinstance(obj, list | tuple | np.ndarray):
        return [json_safe(v) for v in obj]
    return str(obj)


# --------------------------------------------------------------------------- rounding

_DECIMALS_BY_NAME = {"mult": 4, "weight": 4, "retirement_score": 2}


def _decimals(key: str) -> int | None:
    """Decimals for a figure named ``key`` (see the module docstring), ``None``: keep as is."""
    if key in _DECIMALS_BY_NAME:
        return _DECIMALS_BY_NAME[key]
    if key.endswith("_bps"):
        return 2
    if key.endswith("_rate"):
        return 3
    if "psr" in key or "dsr" in key:
        return 4
    if key.endswith("_ms"):
        return 1
    if key.endswith("_usd"):
        return 6
    return None


def _round(value: Any, decimals: int | None) -> Any:
    if isinstance(value, float) and decimals is not None:
        return round(value, decimals) + 0.0  # + 0.0: never -0.0
    if isinstance(value, list):
        return [_round(v, decimals) for v in value]
    return value


def _rounded_fields(block: Any) -> Any:
    """``block`` (a JSON-safe dict of named figures) with each figure rounded per its name
    (:func:`_decimals`); nested values are kept as given, since their keys may be data (names)."""
    if not isinstance(block, dict):
        return block
    return {key: _round(value, _decimals(key)) for key, value in sorted(block.items())}


# --------------------------------------------------------------------------- the report


def _fleet_block(fleet: Mapping[str, Any]) -> dict[str, Any]:
    """The portfolio figures under the app's names; other keys as given. An app name given
    directly wins over the portfolio module's name for the same figure."""
    block: dict[str, Any] = {}
    for key, value in fleet.items():
        if key not in _FLEET_NAMES.values():
            block[_FLEET_NAMES.get(key, key)] = value
    for key in _FLEET_NAMES.values():
        if key in fleet:
            block[key] = fleet[key]
    for key in _FLEET_KEYS:
        block.setdefault(key, None)
    trades = json_safe(block["trades"])
    block["trades"] = int(trades) if isinstance(trades, int | float) else 0
    return block


def _agent_block(stats: Mapping[str, Any]) -> dict[str, Any]:
    """An agent's stats and decision as given, plus the app's ``retirement_label`` and ``killed``."""
    block = dict(stats)
    if "label" in block:
        block.setdefault("retirement_label", block["label"])
    if "decision" in block:
        block.setdefault("killed", block["decision"] == "KILLED")
    return block


def _is_failed_blocking(check: Mapping[str, Any]) -> bool:
    return check.get("passed") is False and bool(check.get("blocking", True))


def severity_of(fleet: Mapping[str, Any], checks: Sequence[Mapping[str, Any]] = ()) -> tuple[str, list[str]]:
    """``("high" | "low", reasons)``: high when the portfolio PnL (bps, app or portfolio-module key)
    is below 0 or a blocking check failed (``passed`` is ``False``; ``blocking`` defaults to true)."""
    reasons = []
    pnl = json_safe(fleet.get("portfolio_pnl_bps", fleet.get("pnl_bps")))
    if isinstance(pnl, int | float) and pnl < 0:
        reasons.append(f"portfolio PnL {pnl:.2f} bps is below 0")
    for check in checks:
        if _is_failed_blocking(check):
            reasons.append(f"blocking check failed: {check.get('name', '?')}")
    return ("high" if reasons else "low"), reasons


def build_meta_report(
    *,
    generated_at: str,
    fleet: Mapping[str, Any],
    agents: Mapping[str, Mapping[str, Any]],
    weights: Mapping[str, float],
    confidence_state: Mapping[str, Any],
    checks: Sequence[Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
    method: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The report as a JSON-safe dict, keys sorted (see the module docstring for the shape).

    Parameters
    ----------
    generated_at
        ISO-8601 UTC time of the report (the caller chooses: a data time makes re-runs byte-stable).
    fleet
        Portfolio figures: ``pnl_bps``, ``hit_rate``, ``max_drawdown_bps`` (bps, positive),
        ``trades``, ``mean_bps`` … (or the app's ``portfolio_*`` names).
    agents
        ``{agent: {decision, label, retirement_score, pnl_sum_bps, hit_rate, error_rate,
        avg_latency_ms, trades, runs, cost_usd, timing_psr, failed_gates, ...}}``.
    weights
        ``{agent: weight}``, summing to 1 (or empty); rounded to 4 decimals here.
    confidence_state
        The content of ``confidence.json``: ``{agent: {mult, updated_at, horizon_hours,
        recent_sum_bps}}``.
    checks
        The blocking checks' results, each ``{"name", "passed": bool | None, "blocking": bool,
        ...}`` (``value``, ``threshold``, ``detail`` are shown by the PR comment). Order kept.
    extra
        More top-level keys. Must not reuse a key the report sets.
    method
        Replaces :data:`METHOD`, the ``method`` block.

    Raises
    ------
    ValueError
        ``extra`` names a key the report sets itself.
    """
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(_RESERVED))
    if clash:
        raise ValueError(f"extra cannot set the report's own keys: {clash}")
    checks = [dict(check) for check in (checks or [])]
    fleet_block = _fleet_block(fleet)
    severity, reasons = severity_of(fleet_block, checks)
    report = {
        "meta": {"generated_at": generated_at, "severity": severity, "severity_reasons": reasons},
        "fleet": fleet_block,
        "agents": {str(name): _agent_block(stats) for name, stats in agents.items()},
        "allocation": {
            "weights": {str(name): weight for name, weight in weights.items()},
            "confidence_state": dict(confidence_state),
        },
        "checks": checks,
        "method": dict(METHOD if method is None else method),
        **extra,
    }
    safe = json_safe(report)
    safe["fleet"] = _rounded_fields(safe["fleet"])
    safe["agents"] = {name: _rounded_fields(stats) for name, stats in sorted(safe["agents"].items())}
    allocation = safe["allocation"]
    allocation["weights"] = {name: _round(w, 4) for name, w in sorted(allocation["weights"].items())}
    allocation["confidence_state"] = {
        name: _rounded_fields(state) for name, state in sorted(allocation["confidence_state"].items())
    }
    return dict(sorted(safe.items()))


def report_path(root: Path | str) -> Path:
    """``<root>/meta_supervisor/reports/meta_report.json``."""
    return Path(root) / REPORT_PATH


def write_meta_report(root: Path | str, report: Mapping[str, Any]) -> Path:
    """Write ``report`` to ``<root>/meta_supervisor/reports/meta_report.json`` atomically (temp file
    + rename, normal permissions; :func:`meta_pipeline.storage.atomic_write_json`): UTF-8 JSON,
    2-space indent, keys sorted, a final newline. The same report always gives the same bytes.

    Raises ``ValueError`` if the report still holds a non-finite number after :func:`json_safe`
    (it cannot). Returns the path written.
    """
    path = report_path(root)
    atomic_write_json(path, json_safe(report))
    return path
