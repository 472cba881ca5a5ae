"""The fast lane (meta_pipeline/ingest/fast.py) against the careful lane (``fast=False``): on ordinary
and hostile lines alike both give exactly the same ``valid`` and ``quarantine`` frames and counts."""

import json
import math
import random

import msgspec
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meta_pipeline import ingest
from meta_pipeline.ingest import fast
from meta_pipeline_tests.test_ingest_hypothesis import _files, _lines

_READERS = {
    "signals": (ingest.validate_signal, ingest.signal_key, ingest.SIGNAL_COLUMNS),
    "telemetry": (ingest.validate_telemetry, ingest.telemetry_key, ingest.TELEMETRY_COLUMNS),
}


def _assert_same(data: bytes, *, first_line_no: int = 1, readers=("signals", "telemetry")) -> None:
    for name in readers:
        validate, key, columns = _READERS[name]
        args = (data, validate, key, columns)
        quick = ingest.ingest_bytes(*args, source="events.jsonl", first_line_no=first_line_no)
        careful = ingest.ingest_bytes(*args, source="events.jsonl", first_line_no=first_line_no, fast=False)
        pd.testing.assert_frame_equal(quick.valid, careful.valid, check_exact=True)
        assert dict(quick.valid.dtypes) == dict(careful.valid.dtypes)
        pd.testing.assert_frame_equal(quick.quarantine, careful.quarantine, check_exact=True)
        for attribute in (
            "lines_read",
            "blank_lines",
            "duplicates",
            "duplicate_lines",
            "recovered_fragments",
        ):
            assert getattr(quick, attribute) == getattr(careful, attribute), (name, attribute)


# --------------------------------------------------------------------------- generated lines

_TS = [
    "2024-03-05T10:12:12.123Z",
    "2024-03-05T10:12:12Z",
    "2024-03-05T23:59:59.999999999Z",
    "2024-03-05T10:12:12.1Z",
    "2024-03-05T10:12:12.1234567Z",
    "2024-03-05T10:12:12.0000000001Z",  # 10 digits: rounds up (careful lane)
    "2024-03-05T10:12:12,123Z",
    "2024-03-05T01:00:00+02:00",
    "2024-03-05T22:00:00-05:00",
    "2024-03-05T10:12:12.5+05:30",
    "2024-03-05T10:12:12-00:00",
    "2024-03-05T10:12:12+23:59",
    "2024-03-05T10:12:12+24:00",
    "2024-03-05T10:12:12+01:60",
    "2024-03-05 10:12:12Z",
    "2024-03-05T10:12:12z",
    "2024-03-05T10:12:12",
    "2024-03-05T24:00:00Z",
    "2024-03-05T23:60:00Z",
    "2024-03-05T23:59:60Z",
    "2024-02-29T12:00:00Z",
    "2023-02-29T12:00:00Z",
    "2024-13-01T00:00:00Z",
    "2024-00-10T00:00:00Z",
    "1999-12-31T23:59:59.999Z",
    "2000-01-01T00:00:00Z",
    "2000-01-01T00:30:00+01:00",
    "2099-12-31T23:59:59.999999999Z",
    "2100-01-01T00:00:00Z",
    "2099-12-31T23:30:00-01:00",
    " 2024-03-05T10:12:12Z",
    "2024-03-05T10:12:12Z ",
    "２024-03-05T10:12:12Z",
    "2024-03-05T1٠:12:12Z",
    "20240305T101212Z",
    "",
    "x",
]


def _plain_ts(rng: random.Random) -> str:
    """A fresh plain instant (the fast lane's caches see misses too)."""
    year = rng.choice([2001, 2024, 2024, 2024, 2099])
    base = f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}"
    fraction = rng.choice(["", "." + "".join(rng.choices("0123456789", k=rng.randint(1, 12)))])
    offset = rng.choice(["Z", "Z", "+02:00", "-07:30", "+00:00"])
    return f"{base}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}{fraction}{offset}"


_ODD_VALUES = {  # a field's value replaced by one of these (or any of them, for any field)
    "ts": [*_TS, None, 1709294400, True, ["2024-03-05T10:12:12Z"]],
    "agent": ["", "  ", None, 7, "é-ö", "\u2028", ["a"], {"a": 1}],
    "symbol": ["BTCUSDT.P", "ETH/BTC", "$$", "", " btc ", None, 5, "FTX:BTCUSDT", "eth-usd"],
    "direction": ["long", " Short ", "BUY", "", None, 1, "ſhort", "LONG "],
    "regime": [None, 3, "", ["x"]],
    "number": [0, 1, 1.0, 0.0, -0.0, 1.7, -0.1, True, None, "0.5", "fast", 10**30, -(10**30), 2**63, 1e308],
    "metric": [0, None, -1, "412", " 1e3 ", "x", ["e"], [], {}, {"a": 1}, True, 10**400, 1e308, -0.0],
}


def _signal(rng: random.Random, index: int) -> dict:
    obj = {
        "ts": _plain_ts(rng),
        "agent": rng.choice(["a1", "a2", "alpha"]),
        "run_id": rng.choice([f"r{index}", f"r{index % 50}"]),
        "symbol": rng.choice(["BTC", "BTC/USDT", "ETH", "BINANCE:XRPUSDT"]),
        "direction": rng.choice(["LONG", "SHORT"]),
        "regime": rng.choice(["trend", "range"]),
        "confidence": rng.choice([rng.random(), 0, 1]),
        "score_final": rng.choice([rng.uniform(-5, 5), rng.randint(-9, 9)]),
    }
    if rng.random() < 0.4:
        name = rng.choice(list(obj))
        kind = "number" if name in ("confidence", "score_final") else "agent" if name == "run_id" else name
        obj[name] = rng.choice(_ODD_VALUES[kind] if rng.random() < 0.8 else sum(_ODD_VALUES.values(), []))
    return obj


def _telemetry(rng: random.Random, index: int) -> dict:
    obj = {
        "ts": _plain_ts(rng),
        "agent": rng.choice(["a1", "a2"]),
        "run_id": rng.choice([f"r{index}", f"r{index % 50}"]),
    }
    for name in ("latency_ms", "tokens_in", "tokens_out", "errors", "cost_usd"):
        obj[name] = rng.choice([rng.uniform(0, 5000), rng.randint(0, 5000), 0])
    if rng.random() < 0.4:
        name = rng.choice(list(obj))
        kind = "metric" if name not in ("ts", "agent", "run_id") else "agent" if name == "run_id" else name
        obj[name] = rng.choice(_ODD_VALUES[kind] if rng.random() < 0.8 else sum(_ODD_VALUES.values(), []))
    return obj


def _shape(rng: random.Random, obj: dict) -> dict:
    """Drop fields, make some null, add extra fields (the order of keys varies too)."""
    obj = dict(obj)
    for name in list(obj):
        roll = rng.random()
        if roll < 0.04:
            del obj[name]
        elif roll < 0.06:
            obj[name] = None
    for _ in range(rng.choice([0, 0, 1, 1, 1, 2])):
        obj[rng.choice(["model", "note", "features", "ts_extra", "é"])] = rng.choice(
            ["m", "gpt-x", "", 1, 2.5, None, True, [1, 2], {"rsi": 71.2, "tags": ["a"]}, "é😀", math.nan]
        )
    if rng.random() < 0.1:
        items = list(obj.items())
        rng.shuffle(items)
        obj = dict(items)
    return obj


def _encode(rng: random.Random, obj: dict) -> bytes:
    ensure_ascii = rng.random() < 0.2
    separators = rng.choice([(",", ":"), (", ", ": "), (" ,", " : ")])
    return json.dumps(obj, ensure_ascii=ensure_ascii, separators=separators).encode("utf-8", "surrogatepass")


_HOSTILE = [
    b"",
    b"   ",
    b"\t",
    b"\x0c",
    b"\xef\xbb\xbf",
    b"{",
    b"[]",
    b"null",
    b'"x"',
    b"this is not json",
    b'{"ts": "2024-03-05T10:00:00Z", "agent": "\xff"}',
    b'{"ts": "2024-03-05T10:00:00Z", "agent": "a", "run_id": "r", "x": "\\ud800"}',
    b'{"ts": "2024-03-05T10:00:00Z", "agent": "a\\ud83d\\ude00", "run_id": "r", "symbol": "BTC", "direction": "LONG"}',
    b'{"ts": "2024-03-05T10:00:00Z", "agent": "caf\\u00e9", "run_id": "r", "symbol": "BTC", "direction": "LONG"}',
    b'{"ts": "2024-03-05T10:00:00Z", "agent": "a", "run_id": "r", "symbol": "BTC", "direction": "LONG", "confidence": NaN}',
    b'{"ts": "2024-03-05T10:00:00Z", "agent": "a", "run_id": "r", "symbol": "BTC", "direction": "LONG", "score_final": 1e400}',
    b'{"ts": "2024-03-05T10:00:00Z", "agent": "a", "run_id": "r", "symbol": "BTC", "direction": "LONG", "n": '
    + b"7" * 5000
    + b"}",
    b'{"ts": "2024-03-05T10:00:00Z", "agent": "a", "run_id": "r", "symbol": "BTC", "direction": "LONG", "latency_ms": '
    + b"9" * 500
    + b"}",
    # duplicate keys: the last wins, and a deep value that is then replaced still makes the line too_deep
    b'{"ts": "2024-03-05T10:00:00Z", "agent": "a", "run_id": "r", "symbol": "BTC", "direction": "LONG", "ts": "2024-03-06T10:00:00Z"}',
    b'{"ts": '
    + b"[" * 70
    + b"]" * 70
    + b', "ts": "2024-03-05T10:00:00Z", "agent": "a", "run_id": "r", "symbol": "BTC", "direction": "LONG"}',
    b'{"ts": "2024-03-05T10:00:00Z", "agent": "a", "run_id": "r", "symbol": "BTC", "direction": "LONG", "f": '
    + b"[" * 63
    + b"]" * 63
    + b"}",
    b'{"ts": "2024-03-05T10:00:00Z", "agent": "a", "run_id": "r", "symbol": "BTC", "direction": "LONG", "s": "'
    + b"[{" * 40
    + b'"}',
    b"[" * 100_000,
    b'{"ts": "2024-03-0{"ts": "2024-03-05T10:00:00Z", "agent": "a", "run_id": "glued", "symbol": "BTC", "direction": "LONG"}',
    b'{"ts": "2024-03-05T10:00:00Z", "agent": "a", "run_id": "r", "symbol": "BTC", "direction": "LONG"}'
    b'{"ts": "2024-03-05T10:00:00Z", "agent": "a", "run_id": "two", "symbol": "BTC", "direction": "LONG"}',
    b'{"ts": "2024-03-05T10:00:00Z", "agent": "a", "run_id": "cr1", "symbol": "BTC", "direction": "LONG"}\r'
    b'{"ts": "2024-03-05T10:00:00Z", "agent": "a", "run_id": "cr2", "symbol": "BTC", "direction": "LONG"}',
    b'{"ts": "2024-03-05T10:00:00Z",\r "agent": "a", "run_id": "r", "symbol": "BTC", "direction": "LONG"}',
    b' {"ts": "2024-03-05T10:00:00Z", "agent": "a", "run_id": "sp", "symbol": "BTC", "direction": "LONG"} ',
    b'{"ts": "2024-03-05T10:00:00Z", "agent": "a", "run_id": "r", "symbol": "BTC", "direction": "LONG"}\x0c',
]


def _generated_lines(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    lines = []
    for index in range(count):
        roll = rng.random()
        if roll < 0.08:
            lines.append(rng.choice(_HOSTILE))
        elif roll < 0.12 and lines:
            lines.append(rng.choice(lines))  # an exact repeat: a duplicate
        else:
            make = _signal if rng.random() < 0.5 else _telemetry
            lines.append(_encode(rng, _shape(rng, make(rng, index))))
    return lines


@pytest.mark.parametrize("seed", range(4))
def test_fast_and_careful_lanes_agree_on_generated_lines(seed):
    lines = _generated_lines(seed, 1500)
    separator = b"\r\n" if seed == 1 else b"\n"
    data = separator.join(lines) + (b"" if seed == 2 else separator)
    if seed == 3:
        data = b"\xef\xbb\xbf" + data
    _assert_same(data)
    # the same data as a chunk of a longer file
    _assert_same(data, first_line_no=101)


def test_the_generated_lines_exercise_both_lanes():
    """Guard the test above: many lines take the fast lane, and many do not."""
    data = b"\n".join(_generated_lines(0, 1500)) + b"\n"
    for validate, key, columns in [
        (ingest.fields._signal_row, ingest.signal_key, ingest.SIGNAL_COLUMNS),
        (ingest.fields._telemetry_row, ingest.telemetry_key, ingest.TELEMETRY_COLUMNS),
    ]:
        lines = ingest.reading._Lines(validate, key, None)
        careful_lines = []
        careful = lines.careful
        lines.careful = lambda *args, careful=careful, seen=careful_lines: (
            seen.append(args[0]) or careful(*args)
        )
        valid, lines_read = fast.ingest(data, 1, fast.spec_for(validate, key, columns), lines)
        assert lines_read == 1500
        assert len(careful_lines) > 700, "the other kind's lines, odd and hostile lines"
        assert (~valid["line_no"].isin(careful_lines)).sum() > 200, "ordinary lines take the fast lane"
        assert valid["line_no"].isin(careful_lines).sum() > 30, "the careful lane's rows are kept too"


def test_ordinary_lines_agree_and_take_the_fast_lane():
    rng = random.Random(7)
    lines = []
    for index in range(3000):
        ts = (
            f"2024-03-{rng.randint(1, 30):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:"
            f"{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}Z"
        )
        if index % 2:
            obj = {"ts": ts, "agent": f"a{index % 7}", "run_id": f"r{index % 1000}", "symbol": "BTC"}
            obj |= {"direction": rng.choice(["LONG", "SHORT"]), "confidence": rng.random(), "model": "m"}
        else:
            obj = {"ts": ts, "agent": "a", "run_id": f"r{index % 1000}", "latency_ms": rng.uniform(0, 9)}
            obj |= {"tokens_in": rng.randint(0, 9), "tokens_out": 3, "errors": 0, "cost_usd": 0.01}
        lines.append(json.dumps(obj).encode())
    _assert_same(b"\n".join(lines) + b"\n")


def test_frames_built_without_pyarrow_shortcut_are_the_same(monkeypatch):
    data = b"\n".join(_generated_lines(11, 600)) + b"\n"
    monkeypatch.setattr(fast, "_ARROW_FRAMES", False)
    _assert_same(data)


@pytest.mark.parametrize(
    "data",
    [b"", b"\n", b"\r\n", b"\xef\xbb\xbf", b"\r", b"\n\n\n", b"{}", b'{"ts": "2024-03-05T10:00:00Z"'],
)
def test_edge_files(data):
    _assert_same(data)
    _assert_same(data, first_line_no=5)


def test_other_validators_or_columns_use_the_careful_lane():
    assert (
        fast.spec_for(ingest.validate_signal, ingest.signal_key, ingest.SIGNAL_COLUMNS) is None
    )  # mapped first
    assert fast.spec_for(ingest.fields._signal_row, ingest.signal_key, ingest.SIGNAL_COLUMNS) is not None
    assert fast.spec_for(ingest.fields._signal_row, ingest.telemetry_key, ingest.SIGNAL_COLUMNS) is None
    assert fast.spec_for(ingest.fields._signal_row, ingest.signal_key, ingest.SIGNAL_COLUMNS[:-1]) is None
    assert (
        fast.spec_for(ingest.fields._telemetry_row, ingest.telemetry_key, ingest.TELEMETRY_COLUMNS)
        is not None
    )


# --------------------------------------------------------------------------- property tests


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(data=_files())
def test_fast_and_careful_lanes_agree_on_hostile_files(data):
    _assert_same(data)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(line=_lines(), terminated=st.booleans())
def test_fast_and_careful_lanes_agree_on_hostile_lines(line, terminated):
    _assert_same(line + (b"\n" if terminated else b""))


_JSON_ALPHABET = st.sampled_from(
    list('{}[]":,.-+eE0123456789 \t\r\\/ubntfrlsaU') + ["\u00e9", "\ud800", "\x00"]
)


@settings(max_examples=2000, deadline=None)
@given(
    text=st.one_of(
        st.text(_JSON_ALPHABET, max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.binary(max_size=40),
        st.recursive(
            st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
            lambda children: st.one_of(
                st.lists(children, max_size=3), st.dictionaries(st.text(max_size=3), children, max_size=3)
            ),
            max_leaves=8,
        ).map(lambda value: json.dumps(value).encode()),
    )
)
def test_msgspec_reads_exactly_what_the_standard_library_reads(text):
    """The fast lane's premise: whatever msgspec decodes, json decodes to the identical value."""
    try:
        quick = fast._decode_json(text)
    except Exception:
        return  # refused: such a line goes to the careful lane
    careful = json.loads(text.decode("utf-8"))
    assert _typed(quick) == _typed(careful)


def _typed(value):
    """A value with every scalar's type spelled out (so 1 != 1.0 != True, and nan == nan)."""
    if isinstance(value, dict):
        return ("dict", [(key, _typed(item)) for key, item in value.items()])
    if isinstance(value, list):
        return ("list", [_typed(item) for item in value])
    if isinstance(value, float):
        return ("float", repr(value))
    return (type(value).__name__, value)


def test_msgspec_refuses_what_the_careful_lane_treats_specially():
    for text in [
        b'{"a": "\\ud800"}',
        b'{"a": "\\udc00x"}',
        b'{"a": "\\ud800\\u0041"}',
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": 1e400}',
        b'{"a": ' + b"9" * 5000 + b"}",
        b'{"a": "\xff"}',
        b"\xef\xbb\xbf{}",
        b'{"a": 1}{"b": 2}',
    ]:
        with pytest.raises((msgspec.DecodeError, ValueError, RecursionError)):
            fast._decode_json(text)
