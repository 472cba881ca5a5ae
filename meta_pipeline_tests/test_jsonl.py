"""``jsonl.encode_rows`` is byte-identical to ``jsonl_oracle.to_jsonl(rows).encode()`` (and fails alike)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meta_pipeline.export import EXPORT_FIELDS
from meta_pipeline.jsonl import encode_rows
from meta_pipeline_tests.jsonl_oracle import to_jsonl

NS_LOW = pd.Timestamp("1678-01-01", tz="UTC").value
NS_HIGH = pd.Timestamp("2262-01-01", tz="UTC").value
TEXT_FIELDS = ["agent", "symbol", "instrument", "direction", "regime", "status"]
FLOAT_FIELDS = ["entry_price", "exit_price", "realized_pnl_bps", "confidence", "score_final", "net_pnl_bps"]

# no lone surrogates here (export cannot UTF-8 encode them either: tested separately)
odd_text = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=12),
    st.sampled_from(["", '"', "\\", '\\"', "\n", "\r\t\x00\x1f\x7f", "é", "日本", "🚀", "\u2028", "a,b: c"]),
)
edge_floats = st.sampled_from(
    [0.0, -0.0, 1e-05, 1e-4, 9.999999999999999e-05, 1e10, 9999999999.5, 1e16, 1e15, 12345.678, 0.1, 5e-324,
     1.7976931348623157e308, -2.5, 1e22, 2.0**53, float("nan")]
)  # fmt: skip
any_float = st.one_of(
    st.floats(allow_infinity=False), edge_floats, st.floats(-1e6, 1e6).map(lambda v: round(v, 2))
)
stamp = st.one_of(
    st.integers(NS_LOW, NS_HIGH),
    st.integers(NS_LOW, NS_HIGH).map(lambda v: v - v % 10**9),  # whole seconds
    st.integers(NS_LOW // 10**3, NS_HIGH // 10**3).map(lambda v: v * 10**3),  # microseconds
    st.none(),
)


def _text_column(values: list, kind: str) -> pd.Series:
    if kind == "category":  # object categories: pandas would refuse lone surrogates as "str"
        categories = pd.Index(sorted({v for v in values if v is not None}), dtype=object)
        codes = [-1 if v is None else categories.get_loc(v) for v in values]
        return pd.Series(pd.Categorical.from_codes(codes, categories=categories))
    if kind == "str":
        return pd.Series(values, dtype="str")
    return pd.Series(values, dtype=object)


@st.composite
def frames(draw, max_rows: int = 6) -> pd.DataFrame:
    n = draw(st.integers(0, max_rows))
    column = {}
    for name in ("ts", "entry_time", "exit_time"):
        values = draw(st.lists(stamp, min_size=n, max_size=n))
        times = pd.to_datetime(pd.Series([pd.NaT if v is None else v for v in values], dtype="int64"
                                         if None not in values else object), utc=True)  # fmt: skip
        unit = draw(st.sampled_from(["ns", "ns", "us", "ms", "s"]))
        column[name] = pd.Series(times, dtype="datetime64[ns, UTC]").dt.as_unit(unit)
    for name in TEXT_FIELDS:
        values = draw(st.lists(st.one_of(odd_text, st.none()) if draw(st.booleans()) else odd_text,
                               min_size=n, max_size=n))  # fmt: skip
        column[name] = _text_column(values, draw(st.sampled_from(["category", "str", "object"])))
    column["run_id"] = _text_column(
        draw(st.lists(odd_text, min_size=n, max_size=n)), draw(st.sampled_from(["str", "object"]))
    )
    for name in FLOAT_FIELDS:
        column[name] = pd.Series(draw(st.lists(any_float, min_size=n, max_size=n)), dtype="float64")
    if draw(st.booleans()):
        column["horizon_hours"] = pd.Series(
            draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n)), dtype="int64"
        )
    else:
        horizon = st.one_of(st.sampled_from([1.0, 4.0, 24.0, 0.5, -0.0, 1e20, float("nan")]), any_float)
        column["horizon_hours"] = pd.Series(draw(st.lists(horizon, min_size=n, max_size=n)), dtype="float64")
    frame = pd.DataFrame(column, index=range(n))[EXPORT_FIELDS]
    # repeated rows take the run / table fast paths (runs need ≥ 64 rows)
    repeat = draw(st.sampled_from([1, 1, 30]))
    return frame.take(np.repeat(np.arange(n), repeat)).reset_index(drop=True) if repeat > 1 else frame


def expected(rows: pd.DataFrame) -> bytes:
    return to_jsonl(rows).encode("utf-8")


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(frames())
def test_byte_identical_to_export(rows):
    assert encode_rows(rows, EXPORT_FIELDS) == expected(rows)


def test_typical_rows_byte_identical():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_encode import synthetic_rows

    for full in (False, True):
        rows = synthetic_rows(3_000, full_precision_prices=full, seed=7)
        rows.loc[5:9, "exit_price"] = np.nan
        rows["exit_time"] = rows["exit_time"].where(rows.index % 7 != 0)
        assert encode_rows(rows, EXPORT_FIELDS) == expected(rows)


def test_empty_frames():
    assert (
        encode_rows(pd.DataFrame(columns=EXPORT_FIELDS), EXPORT_FIELDS)
        == b""
        == expected(pd.DataFrame(columns=EXPORT_FIELDS))
    )


def _one_row(**overrides) -> pd.DataFrame:
    row = {
        "ts": pd.Timestamp("2024-03-01T10:00:00.123456789Z"),
        "agent": "a",
        "run_id": "r",
        "symbol": "BTCUSDT",
        "direction": "LONG",
        "entry_price": 1.5,
        "exit_price": 2.0,
        "horizon_hours": 4,
        "realized_pnl_bps": 1e-05,
        "regime": "trend",
        "confidence": float("nan"),
        "score_final": -0.0,
        "instrument": "BTCUSDT",
        "entry_time": pd.Timestamp("2024-03-01T10:01:00Z"),
        "exit_time": pd.NaT,
        "net_pnl_bps": 12345.678,
        "status": "matured",
    }
    row.update(overrides)
    frame = pd.DataFrame([row] * 100)
    for name in ("ts", "entry_time", "exit_time"):
        frame[name] = pd.to_datetime(frame[name], utc=True)
    return frame


def test_known_line():
    line = encode_rows(_one_row().head(1), EXPORT_FIELDS)
    assert line == (
        b'{"ts": "2024-03-01T10:00:00.123456789Z", "agent": "a", "run_id": "r", "symbol": "BTCUSDT", '
        b'"direction": "LONG", "entry_price": 1.5, "exit_price": 2.0, "horizon_hours": 4, '
        b'"realized_pnl_bps": 1e-05, "regime": "trend", "confidence": null, "score_final": -0.0, '
        b'"instrument": "BTCUSDT", "entry_time": "2024-03-01T10:01:00Z", "exit_time": null, '
        b'"net_pnl_bps": 12345.678, "status": "matured"}\n'
    )
    assert line == expected(_one_row().head(1))


@pytest.mark.parametrize("field", FLOAT_FIELDS + ["horizon_hours"])
@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_infinity_raises_like_export(field, value):
    rows = _one_row()
    rows[field] = rows[field].astype("float64")
    rows.loc[57, field] = value
    with pytest.raises(ValueError) as theirs:
        expected(rows)
    with pytest.raises(ValueError) as ours:
        encode_rows(rows, EXPORT_FIELDS)
    assert str(ours.value) == str(theirs.value)


def test_first_bad_cell_in_row_order_decides_the_error():
    rows = _one_row()
    rows["agent"] = rows["agent"].astype(object)
    rows.loc[40, "agent"] = {1, 2}  # not JSON: TypeError, but after row 30's infinity
    rows.loc[30, "net_pnl_bps"] = float("inf")
    with pytest.raises(ValueError):
        expected(rows)
    with pytest.raises(ValueError):
        encode_rows(rows, EXPORT_FIELDS)


@pytest.mark.parametrize("kind", ["object", "category"])
def test_lone_surrogate_cannot_be_encoded_like_export(kind):
    rows = _one_row()
    rows["run_id"] = _text_column(["ok"] * 99 + ["bad \ud800"], kind)
    with pytest.raises(UnicodeEncodeError):
        expected(rows)
    with pytest.raises(UnicodeEncodeError):
        encode_rows(rows, EXPORT_FIELDS)


def test_unused_category_with_surrogate_is_harmless():
    rows = _one_row()
    rows["agent"] = pd.Categorical.from_codes([0] * 100, categories=pd.Index(["a", "\udcff"], dtype=object))
    assert encode_rows(rows, EXPORT_FIELDS) == expected(rows)


def test_unusual_dtypes_take_the_per_value_path():
    rows = _one_row()
    rows["ts"] = rows["ts"].dt.tz_convert("Europe/Berlin")  # export writes local wall time + Z
    rows["confidence"] = pd.array([0.5, None] * 50, dtype="Float64")
    rows["horizon_hours"] = pd.Series([4, 2.5] * 50, dtype=object)
    rows["status"] = pd.Series(["matured", None] * 50, dtype=object)
    rows["agent"] = pd.Categorical([1, 2] * 50)
    assert encode_rows(rows, EXPORT_FIELDS) == expected(rows)


def test_nanosecond_fractions_are_written_exactly_on_the_fast_path():
    from meta_pipeline.jsonl import iso_utc

    stamps = [
        "2024-03-05T10:00:00.000000001Z", "2024-03-05T10:00:00.000000010Z", "2024-03-05T10:00:00.123456789Z",
        "2024-03-05T10:00:00.1234567Z", "2024-03-05T10:00:00.5Z", "2024-03-05T10:00:00Z",
    ] * 20  # fmt: skip
    series = pd.Series(pd.to_datetime(stamps, utc=True, format="ISO8601"))
    assert iso_utc(series)[:6] == [
        "2024-03-05T10:00:00.000000001Z", "2024-03-05T10:00:00.00000001Z", "2024-03-05T10:00:00.123456789Z",
        "2024-03-05T10:00:00.1234567Z", "2024-03-05T10:00:00.5Z", "2024-03-05T10:00:00Z",
    ]  # fmt: skip
    rows = _one_row().head(1).loc[[0] * len(stamps)].reset_index(drop=True)
    rows["ts"] = series
    assert encode_rows(rows, EXPORT_FIELDS) == expected(rows)
