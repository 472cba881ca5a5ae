"""Property tests: no generated input, however hostile, stops ingestion or yields a frame that
cannot be stored, and every line read is accounted for exactly once."""

import json
import math
from datetime import date
from io import BytesIO

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meta_pipeline import ingest

_BASE_SIGNAL = {
    "ts": "2024-03-01T12:00:00Z",
    "agent": "alpha",
    "run_id": "run-1",
    "symbol": "BTC/USDT",
    "direction": "LONG",
    "confidence": 0.5,
    "score_final": 1.0,
}
_BASE_TELEMETRY = {
    "ts": "2024-03-01T12:00:00Z",
    "agent": "alpha",
    "run_id": "run-1",
    "latency_ms": 800,
    "tokens_in": 1000,
    "tokens_out": 200,
    "errors": 0,
    "cost_usd": 0.01,
}

# --------------------------------------------------------------------------- value strategies

_huge_ints = st.builds(lambda n, sign: sign * int("9" * n), st.integers(300, 4200), st.sampled_from([1, -1]))
_odd_floats = st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308, 1e-400])
_surrogates = st.builds(
    lambda prefix, code: prefix + chr(code), st.text(max_size=5), st.integers(0xD800, 0xDFFF)
)
_ts_texts = st.one_of(
    st.builds(
        lambda year, month, day, hour, minute, second, frac, offset: (
            f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}{frac}{offset}"
        ),
        st.integers(1, 9999),
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 25),
        st.integers(0, 60),
        st.integers(0, 60),
        st.one_of(st.just(""), st.from_regex(r"[.,][0-9]{1,15}", fullmatch=True)),
        st.sampled_from(
            ["Z", "z", "+00:00", "-01:00", "+14:00", "-23:59", "+02", "", "+99:99", "+01:00:00.5"]
        ),
    ),
    st.text(max_size=40),
    st.from_regex(
        r"20[0-9]{2}-[01][0-9]-[0-3][0-9][T ][0-2][0-9]:[0-5][0-9](:[0-5][0-9](\.[0-9]{0,12})?)?(Z|[+-][0-2][0-9]:?[0-5][0-9])?",
        fullmatch=True,
    ),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    _huge_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    _odd_floats,
    st.text(max_size=20),
    _surrogates,
    _ts_texts,
)
_json_values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _dumps(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, allow_nan=True).encode("utf-8", errors="surrogatepass")


def _dumps_escaped(value) -> bytes:
    return json.dumps(value, ensure_ascii=True, allow_nan=True).encode()


@st.composite
def _records(draw, base):
    """A record close to valid, with some fields replaced, dropped or added."""
    obj = dict(base)
    for name in draw(st.lists(st.sampled_from(sorted(base)), max_size=3)):
        if draw(st.booleans()):
            obj[name] = draw(_json_values if name != "ts" else st.one_of(_ts_texts, _json_values))
        else:
            obj.pop(name, None)
    for key, value in draw(st.dictionaries(st.text(max_size=6), _json_values, max_size=2)).items():
        obj.setdefault(key, value)
    obj["run_id"] = obj.get("run_id", draw(st.text(max_size=3)))
    return draw(st.sampled_from([_dumps, _dumps_escaped]))(obj)


@st.composite
def _lines(draw):
    record = _records(draw(st.sampled_from([_BASE_SIGNAL, _BASE_TELEMETRY])))
    kind = draw(st.integers(0, 10))
    if kind == 0:
        return draw(st.binary(max_size=120))
    if kind == 1:
        return _dumps_escaped(draw(_json_values))
    if kind == 2:  # a crashed writer's fragment glued to the next record
        first, second = draw(record), draw(record)
        return first[: draw(st.integers(0, len(first)))] + second
    if kind == 3:  # CR-only line endings
        return b"\r".join(draw(st.lists(record, min_size=2, max_size=3)))
    if kind == 4:  # multi-byte UTF-8 cut anywhere
        line = draw(record).replace(b'"alpha"', '"αλφα😀"'.encode())
        return line[: draw(st.integers(0, len(line)))]
    if kind == 5:
        depth = draw(st.sampled_from([ingest.MAX_DEPTH - 1, ingest.MAX_DEPTH + 1, 1000, 100_000]))
        return draw(st.sampled_from([b"[", b'{"a":', b'{"ts":['])) * depth
    if kind == 6:
        return draw(st.sampled_from([b"", b"   ", b"\t", b"\xef\xbb\xbf", b"\x0c"]))
    if kind == 7:  # a number of 5,000+ digits somewhere
        return draw(record).replace(b"{", b'{"n": ' + b"1" * draw(st.integers(4000, 6000)) + b", ", 1)
    return draw(record)


@st.composite
def _files(draw):
    lines = draw(st.lists(_lines(), min_size=0, max_size=25))
    separator = draw(st.sampled_from([b"\n", b"\r\n"]))
    data = separator.join(lines)
    if lines and draw(st.booleans()):
        data += separator
    if draw(st.integers(0, 9)) == 0:
        data = b"\xef\xbb\xbf" + data
    return data


def _line_count(data: bytes) -> int:
    data = data.removeprefix(b"\xef\xbb\xbf")
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


# --------------------------------------------------------------------------- the invariants

_READERS = [
    (ingest.validate_signal, ingest.signal_key, ingest.SIGNAL_COLUMNS),
    (ingest.validate_telemetry, ingest.telemetry_key, ingest.TELEMETRY_COLUMNS),
]
_FLOATS = {"confidence", "score_final", "latency_ms", "tokens_in", "tokens_out", "errors", "cost_usd"}


def _check(data: bytes, *, parquet: bool = True) -> None:
    for validate, key, columns in _READERS:
        result = ingest.ingest_bytes(data, validate, key, columns, source="events.jsonl")
        lines = _line_count(data)

        # every line is exactly one of: row, duplicate, rejected line, blank line
        assert result.lines_read == lines
        assert len(result.valid) + result.duplicates + result.rejected + result.blank_lines == lines
        reasons = result.quarantine["reason"]
        assert result.recovered_fragments == int((reasons == "fragment_recovered").sum())
        rejected_lines = result.quarantine.loc[reasons != "fragment_recovered", "line_no"].tolist()
        duplicate_lines = [line for line, _ in result.duplicate_lines]
        accounted = result.valid["line_no"].tolist() + rejected_lines + duplicate_lines
        assert len(accounted) == len(set(accounted)), "no line is counted twice"
        assert set(accounted) <= set(range(1, lines + 1))
        fragment_lines = set(result.quarantine.loc[reasons == "fragment_recovered", "line_no"])
        assert fragment_lines <= set(accounted), "a fragment belongs to a line that was also read"

        # the frames can be stored as they are
        assert list(result.valid.columns) == columns
        assert list(result.quarantine.columns) == ingest.QUARANTINE_COLUMNS
        if parquet:  # the slow part: checked on whole files, not on every single line
            result.valid.to_parquet(BytesIO())
            result.quarantine.to_parquet(BytesIO())
        assert str(result.valid["ts"].dtype) == "datetime64[ns, UTC]"
        assert result.valid["line_no"].dtype == "int64"
        assert result.quarantine["line_no"].dtype == "int64"
        for column in result.valid.columns:
            values = result.valid[column]
            if column in _FLOATS:
                assert values.dtype == "float64"
                assert not values.isin([math.inf, -math.inf]).any(), f"{column} holds infinity"
            elif column not in ("ts", "line_no"):
                assert all(type(v) is str or v is None for v in values), column
        for column in ("reason", "detail", "raw"):
            assert all(type(v) is str for v in result.quarantine[column])
        if len(result.valid):
            assert result.valid["ts"].min() >= pd.Timestamp(ingest.TS_MIN, tz="UTC")
            assert result.valid["ts"].max() < pd.Timestamp(ingest.TS_MAX, tz="UTC")
            assert (result.valid["ts"].dt.strftime("%Y-%m-%d") == result.valid["date"]).all()
        if "confidence" in result.valid:
            confidence = result.valid["confidence"].dropna()
            assert ((confidence >= 0) & (confidence <= 1)).all()
        if "unreadable_metrics" in result.valid:
            for names, row in zip(result.valid["unreadable_metrics"], result.valid.itertuples(), strict=True):
                for name in filter(None, names.split(",")):
                    assert math.isnan(getattr(row, name)), "an unreadable metric is missing, never a value"


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(data=_files())
def test_hostile_files_are_fully_accounted_for_and_storable(data):
    _check(data)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(line=_lines(), terminated=st.booleans())
def test_every_hostile_line_is_a_row_or_a_quarantine_row(line, terminated):
    _check(line + (b"\n" if terminated else b""), parquet=False)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes(data):
    _check(data, parquet=False)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(raw=st.one_of(_lines(), st.binary(max_size=200)))
def test_line_day_never_raises(raw):
    day = ingest.line_day(raw)
    assert day is None or (isinstance(day, date) and ingest.TS_MIN.date() <= day < ingest.TS_MAX.date())


@settings(max_examples=500, deadline=None)
@given(value=st.one_of(_ts_texts, _json_values))
def test_parse_ts_raises_only_rejected(value):
    try:
        parsed = ingest.parse_ts(value)
    except ingest.Rejected as exc:
        assert exc.reason.startswith("ts_")
        return
    assert parsed.tzinfo is not None and parsed.utcoffset().total_seconds() == 0
    assert ingest.TS_MIN <= parsed.tz_localize(None) < ingest.TS_MAX
    # the instant is never earlier than the one written (to the microsecond, Python's own reading)
    from datetime import datetime

    assert parsed >= datetime.fromisoformat(value.strip())
