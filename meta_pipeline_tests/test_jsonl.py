"""``jsonl.encode_rows`` is byte-identical to ``jsonl_oracle.to_jsonl(rows).encode()`` (and fails alike)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meta_pipeline import jsonl
from meta_pipeline.export import EXPORT_FIELDS
from meta_pipeline.jsonl import encode_rows
from meta_pipeline_tests.jsonl_oracle import to_jsonl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_encode import synthetic_rows  # noqa: E402

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


# ------------------------------------------------------------------ the fast paths, one by one
# Every fast path of the encoder is driven here against the oracle: the property test above on small
# limits (few-decimal floats on small columns, many join blocks), and dedicated strategies for the
# paths that need more rows than the frames above have (number tables, bar-time tables, runs).


def test_msgspec_writes_floats_as_repr_here():
    # the float fast path is only taken where msgspec agrees with repr (checked at import)
    assert jsonl._MSGSPEC_FLOATS


@contextlib.contextmanager
def small_limits(**limits):
    """The encoder with its size thresholds lowered, so small inputs take the paths meant for big ones."""
    defaults = {"_FIXED_MIN_ROWS": 1, "BLOCK_ROWS": 7, "_FLOAT_CHUNK": 3, "_FLOAT_TEXTS": 4}
    with mock.patch.multiple(jsonl, **{**defaults, **limits}):
        yield


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(frames())
def test_byte_identical_with_small_limits(rows):
    with small_limits():
        assert encode_rows(rows, EXPORT_FIELDS) == expected(rows)


def _frame(n: int, **columns) -> pd.DataFrame:
    """``n`` rows of ``_one_row``'s values, with ``columns`` instead."""
    frame = _one_row().head(1).loc[[0] * n].reset_index(drop=True)
    for name, values in columns.items():
        frame[name] = values
    return frame


few_digits = st.one_of(st.integers(0, 999), st.integers(0, 10**8), st.integers(0, 10**15 - 1))


@st.composite
def decimal_columns(draw) -> pd.DataFrame:
    """Columns of decimals with a few digits (prices, rounded scores) — k / 10**d — with a few other
    floats among them, in runs or not."""
    repeat = draw(st.sampled_from([1, 3]))
    n = draw(st.integers(256, 320)) * repeat
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    columns = {}
    for name in FLOAT_FIELDS:
        d = draw(st.integers(0, 6))
        high = draw(few_digits)
        k = rng.integers(0, high + 1, n // repeat) * (
            rng.choice([-1, 1], n // repeat) if draw(st.booleans()) else 1
        )
        x = np.repeat(k / 10.0**d, repeat)
        others = draw(st.lists(st.tuples(st.integers(0, n - 1), any_float), max_size=n // 8))
        for row, value in others:
            x[row] = value
        columns[name] = x
    return _frame(n, **columns)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(decimal_columns())
def test_few_decimal_floats_byte_identical(rows):
    with small_limits(_FIXED_MIN_ROWS=256, BLOCK_ROWS=100):
        assert encode_rows(rows, EXPORT_FIELDS) == expected(rows)


def test_few_decimal_floats_take_the_number_tables():
    n = 3 * jsonl._FIXED_MIN_ROWS
    prices = np.round(np.random.default_rng(1).normal(0, 1, n) * 1e5, 2)
    prices[[3, 500]] = [-0.0, 0.30000000000000004]  # the second is not a 2-decimal number: the other path
    pool, other = jsonl._fixed_point(prices)
    assert other.tolist() == [500]
    rows = _frame(n, exit_price=prices, entry_price=np.repeat(prices[::3], 3))
    assert encode_rows(rows, EXPORT_FIELDS) == expected(rows)


bar_steps = st.sampled_from([60 * 10**9, 10**9, 3600 * 10**9])


@st.composite
def bar_time_frames(draw) -> pd.DataFrame:
    """Times on whole minutes / seconds (bar opens, bar closes) within a short span, in any unit, with
    missing ones: the times are written through a table of every minute (second) in their range."""
    n = draw(st.integers(64, 200))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    columns = {}
    for name in ("ts", "entry_time", "exit_time"):
        step = draw(bar_steps)
        first = draw(st.integers(NS_LOW, NS_HIGH - 10**15)) // step * step
        slots = draw(st.integers(2, 3 * n))
        values = first + rng.integers(0, slots, n) * step
        missing = rng.random(n) < draw(st.sampled_from([0.0, 0.0, 0.1, 1.0]))
        times = pd.Series(np.where(missing, np.iinfo(np.int64).min, values).view("datetime64[ns]"))
        columns[name] = times.dt.tz_localize("UTC").dt.as_unit(draw(st.sampled_from(["ns", "us", "ms", "s"])))
    return _frame(n, **columns)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bar_time_frames())
def test_bar_times_byte_identical(rows):
    assert encode_rows(rows, EXPORT_FIELDS) == expected(rows)


def test_bar_times_take_the_time_table():
    minute = 60 * 10**9
    values = pd.Timestamp("2025-01-01", tz="UTC").value + np.arange(1000) % 37 * minute
    pool = jsonl._time_texts(values, 10**9)
    assert len(pool.offsets) < 200  # one text per minute in range, not per row
    rows = _frame(1000, exit_time=pd.Series(values.view("datetime64[ns]")).dt.tz_localize("UTC"))
    assert encode_rows(rows, EXPORT_FIELDS) == expected(rows)


def test_repeated_fields_are_joined_once_per_run():
    rows = synthetic_rows(3_000, seed=3)
    runs, repeated = jsonl._Runs.of([rows[name] for name in EXPORT_FIELDS])
    assert len(runs.heads) == 1_000
    assert [name for name, r in zip(EXPORT_FIELDS, repeated, strict=True) if not r] == [
        "exit_price", "horizon_hours", "realized_pnl_bps", "exit_time", "net_pnl_bps",
    ]  # fmt: skip
    assert encode_rows(rows, EXPORT_FIELDS) == expected(rows)


def test_more_than_two_gib_paths():
    # int64 offsets, large_binary, int64 gather indices and no joining of repeated fields: what the
    # encoder does when its texts outgrow 2 GiB, here on small texts
    rows = synthetic_rows(3_000, seed=5)
    rows.loc[7:9, "score_final"] = np.nan
    with small_limits(_INT32_MAX=1000, BLOCK_ROWS=512):
        assert encode_rows(rows, EXPORT_FIELDS) == expected(rows)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(frames())
def test_floats_without_msgspec_byte_identical(rows):
    with small_limits(_MSGSPEC_FLOATS=False):
        assert encode_rows(rows, EXPORT_FIELDS) == expected(rows)


def test_infinity_among_few_decimal_floats_raises_like_export():
    n = 2 * jsonl._FIXED_MIN_ROWS
    prices = np.round(np.random.default_rng(4).normal(0, 1, n) * 100, 2)
    prices[[250, 401]] = [float("-inf"), float("inf")]
    rows = _frame(n, exit_price=prices, score_final=np.repeat(prices[::2], 2))
    with pytest.raises(ValueError) as theirs:
        expected(rows)
    with pytest.raises(ValueError) as ours:
        encode_rows(rows, EXPORT_FIELDS)
    assert str(ours.value) == str(theirs.value)


def test_mostly_other_floats_skip_the_number_tables():
    n = 768 * (-(-jsonl._FIXED_MIN_ROWS // 768))
    x = np.random.default_rng(6).normal(0, 1, n)
    x[:: n // 256] = np.round(x[:: n // 256], 2)  # the rows sampled look like 2-decimal numbers, most are not
    assert jsonl._fixed_point(x) is None
    rows = _frame(n, realized_pnl_bps=x)
    assert encode_rows(rows, EXPORT_FIELDS) == expected(rows)


def test_runs_that_do_not_line_up_are_not_used():
    # two fields repeating in runs, but not the same runs: together they change on most rows
    n = 600
    rows = _frame(n, entry_price=np.arange(n) // 2 * 1.5, confidence=(np.arange(n) + 1) // 2 * 0.25)
    assert jsonl._Runs.of([rows[name] for name in EXPORT_FIELDS])[0] is None
    assert encode_rows(rows, EXPORT_FIELDS) == expected(rows)


def test_other_value_dtypes_byte_identical():
    n = 300
    rows = _frame(
        n,
        confidence=np.arange(n) % 7 == 0,  # bool
        score_final=np.arange(n, dtype=np.int64) * 10**15,  # ints, not a small range
        entry_price=np.arange(n, dtype=np.int32) % 5,  # ints, a small range
        agent=pd.Categorical([f"agent {i}" for i in range(n)]),  # more categories than a table holds
        ts=pd.Series(pd.date_range("2024-03-01", periods=n, freq="37s")),  # naive times
    )
    with small_limits(_MAX_TABLE=64):
        assert encode_rows(rows, EXPORT_FIELDS) == expected(rows)


@pytest.mark.parametrize("year", [999, 10_000])
def test_years_strftime_writes_otherwise_take_the_per_value_path(year):
    times = pd.Series(np.full(100, (year - 1970) * 31_556_952, dtype=np.int64).view("datetime64[s]"))
    rows = _frame(100, entry_time=times.dt.tz_localize("UTC"))
    rows.loc[::3, "entry_time"] = pd.NaT
    assert encode_rows(rows, EXPORT_FIELDS) == expected(rows)


def test_no_fields():
    rows = _one_row()
    assert encode_rows(rows, []) == b"{}\n" * len(rows)


def test_float_texts_fall_back_to_repr_if_msgspec_misplaces_a_comma():
    rows = synthetic_rows(500, full_precision_prices=True, seed=8)
    with mock.patch.object(jsonl, "_json_arrays_pool", lambda encoded, ends, m: None):
        assert encode_rows(rows, EXPORT_FIELDS) == expected(rows)


@pytest.mark.parametrize("advice", [True, False])
def test_large_output_with_and_without_huge_page_advice(advice):
    rows = synthetic_rows(20_000, seed=2)
    with mock.patch.object(jsonl, "_madvise", jsonl._madvise if advice else lambda: None):
        assert encode_rows(rows, EXPORT_FIELDS) == expected(rows)


@st.composite
def mixed_runs_frames(draw) -> pd.DataFrame:
    """The frames above with each row repeated a few times (runs), and some fields changing within
    the runs: fields encoded once per run next to fields encoded per row."""
    rows = draw(frames().filter(lambda f: len(f) >= 2))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    repeats = rng.integers(1, 2 * draw(st.integers(1, 30)), len(rows))
    order = np.repeat(np.arange(len(rows)), np.maximum(repeats, 64 // len(rows) + 1))
    out = rows.take(order).reset_index(drop=True)
    for name in draw(st.lists(st.sampled_from(EXPORT_FIELDS), max_size=8, unique=True)):
        out[name] = rows[name].take(rng.integers(0, len(rows), len(out))).reset_index(drop=True)
    return out


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(mixed_runs_frames())
def test_mixed_runs_byte_identical(rows):
    assert encode_rows(rows, EXPORT_FIELDS) == expected(rows)
