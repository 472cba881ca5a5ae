"""Validation of the JSON Lines inputs: every line becomes a typed row or a quarantine row."""

import json
import math
import os
import time

import pandas as pd
import pytest

from meta_pipeline import ingest
from meta_pipeline.ingest import Rejected, parse_ts, read_signals, read_telemetry

# --------------------------------------------------------------------------- helpers

_DROP = object()  # marks a field to leave out


def _signal(**changes) -> dict:
    obj = {
        "ts": "2024-03-01T12:00:00Z",
        "agent": "alpha",
        "run_id": "run-1",
        "symbol": "BTC/USDT",
        "direction": "LONG",
        "regime": "trend",
        "confidence": 0.7,
        "score_final": 1.25,
    }
    obj.update(changes)
    return {k: v for k, v in obj.items() if v is not _DROP}


def _telemetry(**changes) -> dict:
    obj = {
        "ts": "2024-03-01T12:00:00Z",
        "agent": "alpha",
        "run_id": "run-1",
        "latency_ms": 812.5,
        "tokens_in": 1200,
        "tokens_out": 300,
        "errors": 0,
        "cost_usd": 0.012,
    }
    obj.update(changes)
    return {k: v for k, v in obj.items() if v is not _DROP}


def _line(obj) -> bytes:
    return json.dumps(obj).encode()


def _signals(data: bytes) -> ingest.IngestResult:
    return ingest.ingest_bytes(data, ingest.validate_signal, ingest.signal_key, ingest.SIGNAL_COLUMNS)


def _telemetries(data: bytes) -> ingest.IngestResult:
    return ingest.ingest_bytes(
        data, ingest.validate_telemetry, ingest.telemetry_key, ingest.TELEMETRY_COLUMNS
    )


def _file(*lines: bytes, final_newline: bool = True) -> bytes:
    return b"\n".join(lines) + (b"\n" if final_newline else b"")


# --------------------------------------------------------------------------- rejection table
# (case id, raw line bytes, expected reason). Each line is bad for exactly one reason.

SIGNAL_REJECTIONS = [
    ("invalid_utf8", b'{"ts": "2024-03-01T12:00:00Z", "agent": "\xff\xfe"}', "invalid_utf8"),
    ("invalid_utf8_truncated_sequence", b'{"agent": "caf\xc3", "run_id": "x"}', "invalid_utf8"),
    ("invalid_json_truncated", b'{"ts": "2024-03-01T12:00:00Z", "agent": ', "invalid_json"),
    ("invalid_json_garbage", b"this is not json", "invalid_json"),
    ("invalid_json_single_quotes", b"{'ts': '2024-03-01T12:00:00Z'}", "invalid_json"),
    ("not_an_object_list", b'[{"ts": "2024-03-01T12:00:00Z"}]', "not_an_object"),
    ("not_an_object_string", b'"BTC LONG"', "not_an_object"),
    ("not_an_object_number", b"42", "not_an_object"),
    ("not_an_object_null", b"null", "not_an_object"),
    ("missing_ts", _line(_signal(ts=_DROP)), "missing_field"),
    ("missing_agent", _line(_signal(agent=_DROP)), "missing_field"),
    ("missing_run_id", _line(_signal(run_id=_DROP)), "missing_field"),
    ("missing_symbol", _line(_signal(symbol=_DROP)), "missing_field"),
    ("missing_direction", _line(_signal(direction=_DROP)), "missing_field"),
    ("null_agent", _line(_signal(agent=None)), "missing_field"),
    ("empty_agent", _line(_signal(agent="  ")), "missing_field"),
    ("empty_run_id", _line(_signal(run_id="")), "missing_field"),
    ("null_symbol", _line(_signal(symbol=None)), "missing_field"),
    ("null_direction", _line(_signal(direction=None)), "missing_field"),
    ("agent_number", _line(_signal(agent=7)), "wrong_type"),
    ("run_id_number", _line(_signal(run_id=12345)), "wrong_type"),
    ("regime_number", _line(_signal(regime=3)), "wrong_type"),
    ("confidence_string", _line(_signal(confidence="0.5")), "wrong_type"),
    ("confidence_bool", _line(_signal(confidence=True)), "wrong_type"),
    ("score_final_string", _line(_signal(score_final="high")), "wrong_type"),
    ("ts_numeric", _line(_signal(ts=1709294400)), "ts_not_iso_string"),
    ("ts_numeric_ms", _line(_signal(ts=1709294400000.0)), "ts_not_iso_string"),
    ("ts_bool", _line(_signal(ts=True)), "ts_not_iso_string"),
    ("ts_null", _line(_signal(ts=None)), "missing_field"),
    ("ts_words", _line(_signal(ts="yesterday at noon")), "ts_unparseable"),
    ("ts_month_13", _line(_signal(ts="2024-13-01T12:00:00Z")), "ts_unparseable"),
    ("ts_empty", _line(_signal(ts="")), "ts_unparseable"),
    ("ts_naive", _line(_signal(ts="2024-03-01T12:00:00")), "ts_without_offset"),
    ("ts_date_only", _line(_signal(ts="2024-03-01")), "ts_without_offset"),
    ("direction_buy", _line(_signal(direction="BUY")), "bad_direction"),
    ("direction_empty", _line(_signal(direction="")), "bad_direction"),
    ("direction_number", _line(_signal(direction=1)), "bad_direction"),
    ("symbol_eur", _line(_signal(symbol="BTC/EUR")), "bad_symbol"),
    ("symbol_empty", _line(_signal(symbol="")), "bad_symbol"),
    ("symbol_quote_only", _line(_signal(symbol="USDT")), "bad_symbol"),
    ("symbol_number", _line(_signal(symbol=42)), "bad_symbol"),
    ("symbol_punctuation", _line(_signal(symbol="$$$")), "bad_symbol"),
    ("confidence_above_one", _line(_signal(confidence=1.7)), "bad_confidence"),
    ("confidence_negative", _line(_signal(confidence=-0.1)), "bad_confidence"),
    ("confidence_nan", _line(_signal(confidence=math.nan)), "not_finite"),
    ("confidence_infinity", _line(_signal(confidence=math.inf)), "not_finite"),
]

TELEMETRY_REJECTIONS = [
    ("invalid_utf8", b'{"run_id": "r\xc3\x28"}', "invalid_utf8"),
    ("invalid_json", b'{"run_id": "r1",,}', "invalid_json"),
    ("not_an_object", b'["run_id", "r1"]', "not_an_object"),
    ("missing_ts", _line(_telemetry(ts=_DROP)), "missing_field"),
    ("missing_agent", _line(_telemetry(agent=_DROP)), "missing_field"),
    ("missing_run_id", _line(_telemetry(run_id=_DROP)), "missing_field"),
    ("run_id_number", _line(_telemetry(run_id=7)), "wrong_type"),
    ("tokens_in_string", _line(_telemetry(tokens_in="1200")), "wrong_type"),
    ("errors_bool", _line(_telemetry(errors=False)), "wrong_type"),
    ("ts_numeric", _line(_telemetry(ts=1709294400)), "ts_not_iso_string"),
    ("ts_unparseable", _line(_telemetry(ts="not a time")), "ts_unparseable"),
    ("ts_naive", _line(_telemetry(ts="2024-03-01 12:00:00")), "ts_without_offset"),
    ("negative_latency", _line(_telemetry(latency_ms=-1)), "negative_metric"),
    ("negative_tokens_in", _line(_telemetry(tokens_in=-5)), "negative_metric"),
    ("negative_tokens_out", _line(_telemetry(tokens_out=-1)), "negative_metric"),
    ("negative_errors", _line(_telemetry(errors=-2)), "negative_metric"),
    ("negative_cost", _line(_telemetry(cost_usd=-0.01)), "negative_metric"),
    ("nan_latency", _line(_telemetry(latency_ms=math.nan)), "not_finite"),
]


def _ids(table):
    return [case[0] for case in table]


def _replaced(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


@pytest.mark.parametrize(("case", "raw", "reason"), SIGNAL_REJECTIONS, ids=_ids(SIGNAL_REJECTIONS))
def test_signal_rejection_reason_line_number_and_raw_text(case, raw, reason):
    before = _line(_signal(run_id="before"))
    after = _line(_signal(run_id="after"))
    result = _signals(_file(before, raw, after))

    assert list(result.valid["run_id"]) == ["before", "after"], "a bad line must not affect its neighbours"
    assert len(result.quarantine) == 1
    row = result.quarantine.iloc[0]
    assert row["reason"] == reason
    assert row["line_no"] == 2
    assert row["raw"] == _replaced(raw)
    assert row["detail"]  # a human-readable explanation accompanies the code
    assert result.lines_read == 3
    assert result.rejected_by_reason() == {reason: 1}


@pytest.mark.parametrize(("case", "raw", "reason"), TELEMETRY_REJECTIONS, ids=_ids(TELEMETRY_REJECTIONS))
def test_telemetry_rejection_reason_line_number_and_raw_text(case, raw, reason):
    before = _line(_telemetry(run_id="before"))
    after = _line(_telemetry(run_id="after"))
    result = _telemetries(_file(before, raw, after))

    assert list(result.valid["run_id"]) == ["before", "after"]
    assert len(result.quarantine) == 1
    row = result.quarantine.iloc[0]
    assert (row["reason"], row["line_no"], row["raw"]) == (reason, 2, _replaced(raw))
    assert row["detail"]


@pytest.mark.parametrize(
    ("case", "raw", "reason"),
    [
        ("valid_json_never_incomplete", _line(_signal(run_id="last")), None),
        ("truncated_object", _line(_signal())[:25], "incomplete_last_line"),
        ("truncated_bad_object", _line(_signal(direction="BUY"))[:-1], "incomplete_last_line"),
        ("complete_but_invalid", _line(_signal(direction="BUY")), "bad_direction"),
    ],
)
def test_last_line_without_newline(case, raw, reason):
    result = _signals(_file(_line(_signal(run_id="first")), raw, final_newline=False))
    if reason is None:
        assert list(result.valid["run_id"]) == ["first", "last"]
        assert result.quarantine.empty
    else:
        assert list(result.valid["run_id"]) == ["first"]
        assert result.quarantine[["line_no", "reason", "raw"]].values.tolist() == [
            [2, reason, _replaced(raw)]
        ]


def test_unterminated_garbage_in_the_middle_is_invalid_json_not_incomplete():
    result = _signals(_file(b'{"ts": ', _line(_signal())))
    assert result.quarantine[["line_no", "reason"]].values.tolist() == [[1, "invalid_json"]]


def test_file_mixing_valid_lines_with_every_malformed_kind():
    lines: list[bytes] = []
    expected_bad: list[tuple[int, str, str]] = []
    expected_valid: list[str] = []
    for index, (_, raw, reason) in enumerate(SIGNAL_REJECTIONS):
        run_id = f"ok-{index}"
        lines.append(_line(_signal(run_id=run_id, direction="long" if index % 2 else "Short")))
        expected_valid.append(run_id)
        lines.append(raw)
        expected_bad.append((len(lines), reason, _replaced(raw)))
        if index % 7 == 0:
            lines.append(b"   ")  # blank lines scattered in between
    lines.append(_line(_signal(run_id="tail")))
    expected_valid.append("tail")
    lines.append(b'{"ts": "2024-03-01T')  # being appended right now
    expected_bad.append((len(lines), "incomplete_last_line", '{"ts": "2024-03-01T'))

    result = _signals(_file(*lines, final_newline=False))

    assert list(result.valid["run_id"]) == expected_valid
    got = list(result.quarantine[["line_no", "reason", "raw"]].itertuples(index=False, name=None))
    assert got == expected_bad
    assert result.lines_read == len(lines)
    assert result.blank_lines == sum(1 for line in lines if not line.strip())
    expected_counts = pd.Series([reason for _, reason, _ in expected_bad]).value_counts().to_dict()
    assert result.rejected_by_reason() == expected_counts
    assert result.rejected == len(expected_bad)
    assert result.rejected_share == pytest.approx(len(expected_bad) / (len(lines) - result.blank_lines))
    # every line is accounted for exactly once
    assert len(result.valid) + result.rejected + result.blank_lines + result.duplicates == result.lines_read


# --------------------------------------------------------------------------- valid rows


@pytest.mark.parametrize("direction", ["LONG", "long", "Long", " lOnG ", "SHORT", "short", "sHoRt"])
def test_direction_any_case_is_normalised(direction):
    result = _signals(_file(_line(_signal(direction=direction))))
    assert result.quarantine.empty
    assert result.valid["direction"].tolist() == [direction.strip().upper()]


def test_valid_signal_is_typed():
    result = _signals(_file(_line(_signal(symbol="eth-usd", ts="2024-03-01T14:30:00+02:00"))))
    row = result.valid.iloc[0]
    assert list(result.valid.columns) == ingest.SIGNAL_COLUMNS
    assert row["ts"] == pd.Timestamp("2024-03-01T12:30:00Z")
    assert str(result.valid["ts"].dtype) == "datetime64[ns, UTC]"
    assert row["date"] == "2024-03-01"
    assert row["symbol"] == "eth-usd"  # as written, for the record
    assert row["instrument"] == "ETHUSDT"
    assert (row["agent"], row["run_id"], row["regime"]) == ("alpha", "run-1", "trend")
    assert row["confidence"] == 0.7
    assert row["score_final"] == 1.25
    assert row["extra"] == ""
    assert row["line_no"] == 1


@pytest.mark.parametrize("confidence", [_DROP, None])
def test_absent_confidence_is_nan(confidence):
    result = _signals(_file(_line(_signal(confidence=confidence, score_final=_DROP, regime=_DROP))))
    assert result.quarantine.empty
    row = result.valid.iloc[0]
    assert math.isnan(row["confidence"])
    assert math.isnan(row["score_final"])
    assert result.valid["confidence"].dtype == "float64"
    assert pd.isna(row["regime"])


@pytest.mark.parametrize("confidence", [0, 0.0, 1, 1.0, 0.5])
def test_confidence_bounds_are_inclusive(confidence):
    result = _signals(_file(_line(_signal(confidence=confidence))))
    assert result.quarantine.empty
    assert result.valid["confidence"].tolist() == [float(confidence)]


def test_unknown_extra_fields_are_kept_as_json():
    extra = {"model": "gpt-x", "features": {"rsi": 71.2, "tags": ["a", "b"]}, "note": "héllo", "n": None}
    result = _signals(_file(_line(_signal(**extra))))
    row = result.valid.iloc[0]
    assert json.loads(row["extra"]) == extra
    assert not set(ingest.SIGNAL_COLUMNS) & set(json.loads(row["extra"]))

    telemetry = _telemetries(_file(_line(_telemetry(model="gpt-x", retries=2))))
    assert json.loads(telemetry.valid.iloc[0]["extra"]) == {"model": "gpt-x", "retries": 2}


def test_duplicates_count_once_and_report_line_numbers():
    first = _signal(run_id="r1", symbol="BTC", direction="LONG", ts="2024-03-01T12:00:00Z", confidence=0.9)
    lines = [
        _line(first),  # 1
        _line(
            _signal(
                run_id="r1",
                symbol="btc/usdt",
                direction="long",
                ts="2024-03-01T14:00:00+02:00",
                confidence=0.1,
            )
        ),  # 2: same signal
        _line(
            _signal(run_id="r1", symbol="BTC-USD", direction="Long", ts="2024-03-01T07:00:00.000-05:00")
        ),  # 3
        _line(
            _signal(run_id="r1", symbol="BTC", direction="SHORT", ts="2024-03-01T12:00:00Z")
        ),  # 4: other direction
        _line(
            _signal(run_id="r1", symbol="ETH", direction="LONG", ts="2024-03-01T12:00:00Z")
        ),  # 5: other instrument
        _line(
            _signal(run_id="r1", symbol="BTC", direction="LONG", ts="2024-03-01T12:00:01Z")
        ),  # 6: other instant
        _line(
            _signal(run_id="r2", symbol="BTC", direction="LONG", ts="2024-03-01T12:00:00Z")
        ),  # 7: other run
        _line(first),  # 8: verbatim repeat
    ]
    result = _signals(_file(*lines))
    assert result.valid["line_no"].tolist() == [1, 4, 5, 6, 7]
    assert result.duplicates == 3
    assert result.duplicate_lines == [(2, 1), (3, 1), (8, 1)]
    assert result.quarantine.empty, "duplicates are counted, not quarantined"
    assert result.valid.iloc[0]["confidence"] == 0.9, "the first occurrence wins"


@pytest.mark.parametrize(
    ("ts", "date"),
    [
        ("2024-03-01T23:59:59.999Z", "2024-03-01"),
        ("2024-03-02T00:00Z", "2024-03-02"),
        ("2024-03-02T00:00:00Z", "2024-03-02"),
        ("2024-03-02T01:00:00+02:00", "2024-03-01"),  # previous UTC day
        ("2024-03-01T20:00:00-05:00", "2024-03-02"),  # next UTC day
        ("2024-02-29T12:00:00+00:00", "2024-02-29"),
        ("2024-12-31T23:59:59.999999+00:00", "2024-12-31"),
    ],
)
def test_partition_date_is_the_utc_date(ts, date):
    result = _signals(_file(_line(_signal(ts=ts))))
    assert result.quarantine.empty
    assert result.valid["date"].tolist() == [date]
    telemetry = _telemetries(_file(_line(_telemetry(ts=ts))))
    assert telemetry.valid["date"].tolist() == [date]


def test_parse_ts_returns_aware_utc():
    parsed = parse_ts(" 2024-03-02T01:00:00+02:00 ")
    assert parsed.utcoffset().total_seconds() == 0
    assert parsed.isoformat() == "2024-03-01T23:00:00+00:00"
    with pytest.raises(Rejected) as excinfo:
        parse_ts("2024-03-01T12:00:00")
    assert excinfo.value.reason == "ts_without_offset"


def test_blank_lines_are_counted_not_quarantined():
    data = b"\n" + _line(_signal(run_id="a")) + b"\n   \n\t\r\n\r\n" + _line(_signal(run_id="b")) + b"\n\n"
    result = _signals(data)
    assert result.valid["run_id"].tolist() == ["a", "b"]
    assert result.valid["line_no"].tolist() == [2, 6]
    assert result.quarantine.empty
    assert result.blank_lines == 5
    assert result.lines_read == 7
    assert result.rejected_share == 0.0


def test_crlf_line_endings_are_accepted():
    data = _line(_signal(run_id="a")) + b"\r\n" + _line(_signal(run_id="b")) + b"\r\n"
    result = _signals(data)
    assert result.valid["run_id"].tolist() == ["a", "b"]
    assert result.quarantine.empty


def test_invalid_bytes_in_the_middle_do_not_stop_later_lines():
    lines = [_line(_signal(run_id=f"r{i}")) for i in range(5)]
    lines.insert(2, b'{"agent": "\xc0\xaf\xff", "run_id": "bad"}')
    lines.insert(4, b"\x00\x01\x02\xfe")
    result = _signals(_file(*lines))
    assert result.valid["run_id"].tolist() == [f"r{i}" for i in range(5)]
    assert result.quarantine[["line_no", "reason"]].values.tolist() == [
        [3, "invalid_utf8"],
        [5, "invalid_utf8"],
    ]


def test_long_raw_line_is_truncated_in_quarantine_but_still_quarantined():
    raw = b'{"junk": "' + b"x" * 10_000
    result = _signals(_file(raw))
    assert result.quarantine["reason"].tolist() == ["invalid_json"]
    assert 0 < len(result.quarantine.iloc[0]["raw"]) < len(raw), "a huge line is kept readable"
    assert result.quarantine.iloc[0]["raw"].startswith('{"junk": "xxx')


def test_empty_and_missing_files(tmp_path):
    for result in (read_signals(tmp_path / "absent.jsonl"), _signals(b"")):
        assert result.valid.empty and result.quarantine.empty
        assert list(result.valid.columns) == ingest.SIGNAL_COLUMNS
        assert list(result.quarantine.columns) == ingest.QUARANTINE_COLUMNS
        assert (result.lines_read, result.rejected_share) == (0, 0.0)


def test_input_files_are_not_modified(tmp_path):
    signals = tmp_path / "alpha" / "events.jsonl"
    telemetry = tmp_path / "telemetry" / "events.jsonl"
    signals.parent.mkdir()
    telemetry.parent.mkdir()
    signals.write_bytes(
        _file(
            _line(_signal()), b"garbage\xff", b"", _line(_signal(run_id="x")), b'{"ts":', final_newline=False
        )
    )
    telemetry.write_bytes(_file(_line(_telemetry()), b"[1]", _line(_telemetry()), b"\xff"))
    old = time.time() - 3600
    for path in (signals, telemetry):
        os.utime(path, (old, old))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_size) for p in (signals, telemetry)}
    listing = sorted(tmp_path.rglob("*"))

    assert len(read_signals(signals).valid) == 2
    assert len(read_telemetry(telemetry).valid) == 1

    after = {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_size) for p in (signals, telemetry)}
    assert after == before
    assert sorted(tmp_path.rglob("*")) == listing, "reading creates no files beside the inputs"


# --------------------------------------------------------------------------- telemetry


def test_valid_telemetry_is_typed():
    result = _telemetries(_file(_line(_telemetry(tokens_in=0, errors=None))))
    assert list(result.valid.columns) == ingest.TELEMETRY_COLUMNS
    row = result.valid.iloc[0]
    assert row["latency_ms"] == 812.5
    assert row["tokens_in"] == 0.0
    assert math.isnan(row["errors"])
    for name in ("latency_ms", "tokens_in", "tokens_out", "errors", "cost_usd"):
        assert result.valid[name].dtype == "float64"


def test_telemetry_runs_without_signals_are_fine():
    """Telemetry is read on its own; a run that emitted no signal (and fields the signal schema
    requires, such as symbol/direction) is a valid telemetry row."""
    lines = [_line(_telemetry(run_id=f"run-{i}", agent="quiet" if i % 2 else "busy")) for i in range(4)]
    result = _telemetries(_file(*lines))
    assert result.quarantine.empty
    assert result.valid["run_id"].tolist() == ["run-0", "run-1", "run-2", "run-3"]
    assert "symbol" not in result.valid.columns


def test_telemetry_duplicate_run_id_counted_once():
    lines = [
        _line(_telemetry(run_id="a", latency_ms=100)),
        _line(_telemetry(run_id="b")),
        _line(_telemetry(run_id="a", latency_ms=999, ts="2024-03-02T00:00:00Z")),
        _line(_telemetry(run_id="a")),
    ]
    result = _telemetries(_file(*lines))
    assert result.valid["run_id"].tolist() == ["a", "b"]
    assert result.valid.iloc[0]["latency_ms"] == 100.0
    assert result.duplicates == 2
    assert result.duplicate_lines == [(3, 1), (4, 1)]
    assert result.quarantine.empty


def test_read_functions_read_files(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(_file(_line(_signal()), b"{", _line(_telemetry(run_id="t"))))
    signals = read_signals(path)
    assert signals.valid["run_id"].tolist() == ["run-1"]
    assert signals.quarantine["reason"].tolist() == ["invalid_json", "missing_field"]
    telemetry = read_telemetry(path)
    # a signal line is not a telemetry record but carries ts/agent/run_id; extra fields are kept
    assert telemetry.valid["run_id"].tolist() == ["run-1", "t"]
    assert json.loads(telemetry.valid.iloc[0]["extra"])["symbol"] == "BTC/USDT"


def test_a_utf8_byte_order_mark_does_not_cost_the_first_line():
    data = b"\xef\xbb\xbf" + _line(_signal()) + b"\n"
    result = ingest.ingest_bytes(data, ingest.validate_signal, ingest.signal_key, ingest.SIGNAL_COLUMNS)
    assert len(result.valid) == 1 and result.rejected == 0
