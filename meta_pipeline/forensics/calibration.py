"""Is an agent's stated confidence worth anything? Calibration table and Brier score per agent
(docs/rules.md, *Forensics and the LP email*).

Both are **descriptive**: they are computed on all of the agent's matured 24 h trades (not only the
chain) and test nothing; the overconfidence hypothesis
(:mod:`meta_pipeline.forensics.hypotheses`) is the test. Overlapping trades do not bias these
averages, they only make them less precise than their counts suggest.

Definitions
-----------
* hit = 1 when ``net_bps > 0``, else 0 (a trade at exactly 0 is not a hit, as for the hit rate of
  docs/rules.md, *Per-agent statistics*).
* Buckets of stated confidence: [0, 0.1), [0.1, 0.2), …, [0.8, 0.9), [0.9, 1.0] — ten buckets, the
  last one closed so that a confidence of exactly 1 belongs to it. A bucket is found by comparing
  with the edges 0.1, …, 0.9 as written (``np.searchsorted``), so 0.3 falls in [0.3, 0.4) whatever
  the float rounding of 3 × 0.1.
* Brier score (Brier 1950, "Verification of forecasts expressed in terms of probability", Monthly
  Weather Review 78(1)): mean over the trades with a confidence of (confidence − hit)², in [0, 1];
  0 is perfect, 0.25 what a constant 0.5 scores on a coin.

Trades without a confidence (NaN) take no part.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from meta_pipeline.forensics.hypotheses import agent_codes

__all__ = ["BUCKET_EDGES", "BUCKET_LABELS", "CALIBRATION_COLUMNS", "brier_scores", "calibration_table"]

BUCKET_EDGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Inner edges of the ten confidence buckets."""
BUCKET_LABELS = tuple(
    f"[{lo:.1f}, {hi:.1f}{']' if hi == 1.0 else ')'}"
    for lo, hi in zip((0.0, *BUCKET_EDGES), (*BUCKET_EDGES, 1.0), strict=True)
)
CALIBRATION_COLUMNS = (
    "agent",
    "bucket",
    "bucket_low",
    "bucket_high",
    "count",
    "hit_rate",
    "mean_confidence",
)


def _inputs(trades: pd.DataFrame):
    """Agent codes and names, and for the trades with a confidence: their rows, confidence, hit."""
    for column in ("agent", "net_bps", "confidence"):
        if column not in trades.columns:
            raise KeyError(f"trades frame lacks column {column!r}")
    codes, agents = agent_codes(trades["agent"])
    confidence = pd.to_numeric(trades["confidence"], errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    net = trades["net_bps"].to_numpy(dtype=np.float64)
    if not np.isfinite(net).all():
        raise ValueError("column 'net_bps' has missing or non-finite values")
    if ((confidence < 0) | (confidence > 1)).any():
        raise ValueError("confidence must lie in [0, 1]")
    stated = np.isfinite(confidence)
    return codes[stated], agents, confidence[stated], (net[stated] > 0).astype(np.float64)


def calibration_table(trades: pd.DataFrame) -> pd.DataFrame:
    """Per agent and confidence bucket: how often the signals stated with that confidence hit.

    Parameters
    ----------
    trades : the trades frame (``agent``, ``net_bps`` in bps, ``confidence`` in [0, 1] or NaN), matured
        24 h trades, any row order.

    Returns
    -------
    Long DataFrame with the columns :data:`CALIBRATION_COLUMNS`, ten rows per agent of ``trades``
    (agents sorted as text, buckets in order): ``bucket`` (label such as ``"[0.6, 0.7)"``),
    ``bucket_low`` / ``bucket_high`` (floats), ``count`` (int, trades with a confidence in the bucket),
    ``hit_rate`` (share of them with ``net_bps > 0``) and ``mean_confidence`` (their mean stated
    confidence) — both NaN for an empty bucket. A well-calibrated agent has ``hit_rate`` close to
    ``mean_confidence`` in every bucket with many trades.

    Raises
    ------
    KeyError when a column is missing; ValueError on a missing agent, a non-finite ``net_bps`` or a
    confidence outside [0, 1].
    """
    codes, agents, confidence, hit = _inputs(trades)
    n_buckets = len(BUCKET_EDGES) + 1
    bucket = np.searchsorted(np.asarray(BUCKET_EDGES), confidence, side="right")
    cell = codes * n_buckets + bucket
    size = len(agents) * n_buckets
    count = np.bincount(cell, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        hit_rate = np.bincount(cell, weights=hit, minlength=size) / count
        mean_confidence = np.bincount(cell, weights=confidence, minlength=size) / count
    lows = np.array((0.0, *BUCKET_EDGES))
    highs = np.array((*BUCKET_EDGES, 1.0))
    return pd.DataFrame(
        {
            "agent": np.repeat(agents.to_numpy(dtype=object), n_buckets),
            "bucket": np.tile(np.array(BUCKET_LABELS, dtype=object), len(agents)),
            "bucket_low": np.tile(lows, len(agents)),
            "bucket_high": np.tile(highs, len(agents)),
            "count": count.astype(np.int64),
            "hit_rate": hit_rate,
            "mean_confidence": mean_confidence,
        },
        columns=list(CALIBRATION_COLUMNS),
    )


def brier_scores(trades: pd.DataFrame) -> pd.DataFrame:
    """Brier score of each agent's stated confidence against its hits (module docstring).

    Parameters
    ----------
    trades : as for :func:`calibration_table`.

    Returns
    -------
    DataFrame indexed by ``agent`` (every agent of ``trades``, sorted as text) with ``brier`` (float in
    [0, 1]; NaN when no trade has a confidence), ``n_confidence`` (int, trades with a confidence),
    ``hit_rate`` and ``mean_confidence`` over those trades.

    Raises
    ------
    As :func:`calibration_table`.
    """
    codes, agents, confidence, hit = _inputs(trades)
    n = np.bincount(codes, minlength=len(agents))
    with np.errstate(invalid="ignore", divide="ignore"):
        brier = np.bincount(codes, weights=(confidence - hit) ** 2, minlength=len(agents)) / n
        hit_rate = np.bincount(codes, weights=hit, minlength=len(agents)) / n
        mean_confidence = np.bincount(codes, weights=confidence, minlength=len(agents)) / n
    return pd.DataFrame(
        {
            "brier": brier,
            "n_confidence": n.astype(np.int64),
            "hit_rate": hit_rate,
            "mean_confidence": mean_confidence,
        },
        index=agents,
    )
