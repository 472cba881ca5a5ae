"""Failure forensics, without Dagster: why each agent lost, tested on its own trades
(docs/rules.md, *Forensics and the LP email*).

* :mod:`~meta_pipeline.forensics.hypotheses` — the telemetry join, the volatility before entry, and the
  five hypotheses (regime mismatch, latency, overconfidence, volatility shock, cost) tested on each
  agent's chain of non-overlapping trades with a fleet-wide Benjamini–Yekutieli correction.
* :mod:`~meta_pipeline.forensics.calibration` — calibration table and Brier score of stated confidence.
* :mod:`~meta_pipeline.forensics.report` — :func:`run_forensics` and the JSON of
  ``meta_supervisor/research/failure_forensics.json``.
"""

from __future__ import annotations

from meta_pipeline.forensics.calibration import brier_scores, calibration_table
from meta_pipeline.forensics.hypotheses import (
    HYPOTHESES,
    NOT_ENOUGH_DATA,
    NOT_SUPPORTED,
    SUPPORTED,
    entry_volatility,
    evaluate_hypotheses,
    fleet_correction,
    join_telemetry,
)
from meta_pipeline.forensics.report import ForensicsResult, forensics_json, run_forensics

__all__ = [
    "HYPOTHESES",
    "NOT_ENOUGH_DATA",
    "NOT_SUPPORTED",
    "SUPPORTED",
    "ForensicsResult",
    "brier_scores",
    "calibration_table",
    "entry_volatility",
    "evaluate_hypotheses",
    "fleet_correction",
    "forensics_json",
    "join_telemetry",
    "run_forensics",
]
