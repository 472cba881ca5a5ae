"""Tests of meta_pipeline.forensics.calibration on a case computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from meta_pipeline.forensics.calibration import BUCKET_LABELS, brier_scores, calibration_table


def hand_case() -> pd.DataFrame:
    """Agent "a": six trades with a confidence and one without; agent "b": no confidence at all.

    confidence  net  hit  bucket       (confidence − hit)²
    0.05        +10  1    [0.0, 0.1)   0.9025
    0.15        −5   0    [0.1, 0.2)   0.0225
    0.15        +3   1    [0.1, 0.2)   0.7225
    0.30         0   0    [0.3, 0.4)   0.09    (0 bps is not a hit)
    0.95        +7   1    [0.9, 1.0]   0.0025
    1.00        −2   0    [0.9, 1.0]   1.0
    NaN         +1   —    —            —
    Brier(a) = 2.74 / 6.
    """
    return pd.DataFrame(
        {
            "agent": ["a"] * 7 + ["b", "b"],
            "net_bps": [10.0, -5.0, 3.0, 0.0, 7.0, -2.0, 1.0, 4.0, -4.0],
            "confidence": [0.05, 0.15, 0.15, 0.3, 0.95, 1.0, np.nan, np.nan, np.nan],
        }
    )


def test_calibration_table_by_hand():
    table = calibration_table(hand_case())
    assert len(table) == 20
    assert table["bucket"].tolist()[:10] == list(BUCKET_LABELS)
    assert BUCKET_LABELS[0] == "[0.0, 0.1)" and BUCKET_LABELS[-1] == "[0.9, 1.0]"
    a = table[table.agent == "a"].set_index("bucket")
    assert a["count"].tolist() == [1, 2, 0, 1, 0, 0, 0, 0, 0, 2]
    assert a.loc["[0.0, 0.1)", "hit_rate"] == 1.0
    assert a.loc["[0.1, 0.2)", "hit_rate"] == 0.5
    assert a.loc["[0.1, 0.2)", "mean_confidence"] == pytest.approx(0.15)
    assert a.loc["[0.3, 0.4)", "hit_rate"] == 0.0
    assert a.loc["[0.9, 1.0]", "hit_rate"] == 0.5
    assert a.loc["[0.9, 1.0]", "mean_confidence"] == pytest.approx(0.975)
    assert np.isnan(a.loc["[0.2, 0.3)", "hit_rate"]) and np.isnan(a.loc["[0.2, 0.3)", "mean_confidence"])
    assert (table[table.agent == "b"]["count"] == 0).all()


def test_brier_score_by_hand():
    scores = brier_scores(hand_case())
    assert scores.loc["a", "brier"] == pytest.approx(2.74 / 6)
    assert scores.loc["a", "n_confidence"] == 6
    assert scores.loc["a", "hit_rate"] == pytest.approx(3 / 6)
    assert scores.loc["a", "mean_confidence"] == pytest.approx(2.6 / 6)
    assert np.isnan(scores.loc["b", "brier"]) and scores.loc["b", "n_confidence"] == 0


def test_bucket_edges_are_the_written_decimals():
    trades = pd.DataFrame(
        {"agent": "a", "net_bps": 1.0, "confidence": [0.0, 0.1, 0.3, 0.7, 0.9, 0.8999999, 1.0]}
    )
    counts = calibration_table(trades).set_index("bucket")["count"]
    assert counts["[0.0, 0.1)"] == 1
    assert counts["[0.1, 0.2)"] == 1
    assert counts["[0.3, 0.4)"] == 1
    assert counts["[0.7, 0.8)"] == 1
    assert counts["[0.8, 0.9)"] == 1
    assert counts["[0.9, 1.0]"] == 2


def test_calibration_rejects_a_confidence_outside_zero_one():
    trades = pd.DataFrame({"agent": ["a"], "net_bps": [1.0], "confidence": [1.2]})
    with pytest.raises(ValueError, match="confidence"):
        calibration_table(trades)
    with pytest.raises(ValueError, match="confidence"):
        brier_scores(trades)
