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
    # hostile values that used to raise out of the loop or fail later when writing Parquet
    ("confidence_400_digit_int", _line(_signal(confidence=10**400)), "number_out_of_range"),
    ("score_final_400_digit_int", _line(_signal(score_final=-(10**400))), "number_out_of_range"),
    ("score_final_1e400", _line(_signal()).replace(b"1.25", b"1e400"), "number_out_of_range"),
    ("ts_year_1600", _line(_signal(ts="1600-01-01T00:00:00+01:00")), "ts_out_of_range"),
    ("ts_year_2300", _line(_signal(ts="2300-06-01T00:00:00+02:00")), "ts_out_of_range"),
    ("ts_year_9999_offset", _line(_signal(ts="9999-12-31T23:59:59-01:00")), "ts_out_of_range"),
    ("ts_year_1_offset", _line(_signal(ts="0001-01-01T00:00:00+01:00")), "ts_out_of_range"),
    ("ts_epoch_zero", _line(_signal(ts="1970-01-01T00:00:00Z")), "ts_out_of_range"),
    ("ts_2100", _line(_signal(ts="2100-01-01T00:00:00Z")), "ts_out_of_range"),
    ("lone_surrogate_value", _line(_signal(agent="alpha\ud800")), "invalid_unicode"),
    ("lone_surrogate_key", b'{"\\udfff": 1, ' + _line(_signal())[1:], "invalid_unicode"),
    ("lone_surrogate_extra", _line(_signal(note=["x", {"y": "\udc00"}])), "invalid_unicode"),
    ("too_deep_extra", _line(_signal(features=json.loads("[" * 70 + "]" * 70))), "too_deep"),
    (
        "cr_only_line_endings",
        _line(_signal(run_id="a")) + b"\r" + _line(_signal(run_id="b")),
        "cr_line_endings",
    ),
]

TELEMETRY_REJECTIONS = [
    ("invalid_utf8", b'{"run_id": "r\xc3\x28"}', "invalid_utf8"),
    ("invalid_json", b'{"run_id": "r1",,}', "invalid_json"),
    ("not_an_object", b'["run_id", "r1"]', "not_an_object"),
    ("missing_ts", _line(_telemetry(ts=_DROP)), "missing_field"),
    ("missing_agent", _line(_telemetry(agent=_DROP)), "missing_field"),
    ("missing_run_id", _line(_telemetry(run_id=_DROP)), "missing_field"),
    ("run_id_number", _line(_telemetry(run_id=7)), "wrong_type"),
    ("ts_numeric", _line(_telemetry(ts=1709294400)), "ts_not_iso_string"),
    ("ts_unparseable", _line(_telemetry(ts="not a time")), "ts_unparseable"),
    ("ts_naive", _line(_telemetry(ts="2024-03-01 12:00:00")), "ts_without_offset"),
    ("ts_year_1600", _line(_telemetry(ts="1600-01-01T00:00:00+01:00")), "ts_out_of_range"),
    ("ts_year_9999", _line(_telemetry(ts="9999-12-31T23:59:59-01:00")), "ts_out_of_range"),
    ("run_id_surrogate", _line(_telemetry(run_id="\udbff")), "invalid_unicode"),
    ("agent_huge_int", _line(_telemetry(agent=10**500)), "wrong_type"),
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


def test_empty_file_is_valid_and_has_no_rows(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"")
    for result in (read_signals(path), _signals(b"")):
        assert result.valid.empty and result.quarantine.empty
        assert list(result.valid.columns) == ingest.SIGNAL_COLUMNS
        assert list(result.quarantine.columns) == ingest.QUARANTINE_COLUMNS
        assert (result.lines_read, result.rejected_share) == (0, 0.0)
    assert list(read_telemetry(path).valid.columns) == ingest.TELEMETRY_COLUMNS


@pytest.mark.parametrize("read", [read_signals, read_telemetry])
def test_missing_file_raises_input_file_missing_naming_the_path(tmp_path, read):
    """The reader does not decide that a missing file means "no data": the caller does."""
    path = tmp_path / "alpha" / "events.jsonl"
    with pytest.raises(ingest.InputFileMissing) as excinfo:
        read(path)
    assert isinstance(excinfo.value, FileNotFoundError)
    assert str(path) in str(excinfo.value)
    assert excinfo.value.filename == str(path)
    assert not path.parent.exists(), "reading creates nothing"


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


# --------------------------------------------------------------------------- no line stops ingestion


def _between(raw: bytes, read=None) -> ingest.IngestResult:
    """``raw`` as line 2 between two valid lines; both neighbours must survive."""
    read = read or _signals
    result = read(_file(_line(_signal(run_id="before")), raw, _line(_signal(run_id="after"))))
    assert list(result.valid["run_id"]) == ["before", "after"]
    assert result.lines_read == 3 and result.rejected == 1
    return result


@pytest.mark.parametrize(
    ("case", "raw", "reason"),
    [
        (
            "int_5000_digits_in_number",
            b'{"score_final": ' + b"7" * 5000 + b", " + _line(_signal(score_final=_DROP))[1:],
            "number_out_of_range",
        ),
        ("int_5000_digits_as_agent", _line(_signal()).replace(b'"alpha"', b"1" * 5000), "wrong_type"),
        ("float_5000_digits", _line(_signal()).replace(b"1.25", b"9" * 5000 + b".5"), "number_out_of_range"),
        ("nested_100000_brackets", b"[" * 100_000, "too_deep"),
        ("nested_100000_objects", b'{"a": ' * 100_000, "too_deep"),
        ("nested_deep_then_valid", b"[" * 100_000 + b"]" * 100_000, "too_deep"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_hostile_line_becomes_a_quarantine_row(case, raw, reason):
    result = _between(raw)
    row = result.quarantine.iloc[0]
    assert (row["line_no"], row["reason"]) == (2, reason)
    assert len(row["raw"]) <= 2000


def test_a_5000_digit_integer_in_an_unknown_field_keeps_the_row():
    result = _signals(_file(_line(_signal()).replace(b"{", b'{"big": ' + b"3" * 5000 + b", ", 1)))
    assert result.quarantine.empty
    assert json.loads(result.valid.iloc[0]["extra"]) == {"big": "3" * 5000}, "kept, as its digits"


def test_non_finite_extra_values_are_kept_as_strict_json():
    result = _signals(_file(_line(_signal(weird=[math.nan, math.inf, -math.inf]))))
    extra = result.valid.iloc[0]["extra"]
    assert json.loads(extra, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}")) == {
        "weird": ["NaN", "Infinity", "-Infinity"]
    }


def test_an_unexpected_exception_in_one_line_becomes_a_quarantine_row():
    def validate(obj: dict) -> dict:
        if obj.get("run_id") == "boom":
            raise KeyError("something nobody foresaw")
        return ingest.validate_signal(obj)

    data = _file(_line(_signal(run_id="a")), _line(_signal(run_id="boom")), _line(_signal(run_id="b")))
    result = ingest.ingest_bytes(data, validate, ingest.signal_key, ingest.SIGNAL_COLUMNS, source="x.jsonl")
    assert result.valid["run_id"].tolist() == ["a", "b"]
    row = result.quarantine.iloc[0]
    assert (row["line_no"], row["reason"]) == (2, "unexpected_error")
    assert "KeyError" in row["detail"] and "something nobody foresaw" in row["detail"]
    assert row["detail"].startswith("x.jsonl line 2: ")


def test_an_exception_from_the_key_function_becomes_a_quarantine_row():
    def key(row: dict) -> tuple:
        if row["run_id"] == "boom":
            return ([],)  # unhashable
        return ingest.signal_key(row)

    data = _file(_line(_signal(run_id="a")), _line(_signal(run_id="boom")))
    result = ingest.ingest_bytes(data, ingest.validate_signal, key, ingest.SIGNAL_COLUMNS)
    assert result.valid["run_id"].tolist() == ["a"]
    assert result.quarantine["reason"].tolist() == ["unexpected_error"]


def test_quarantine_details_name_the_file_and_the_line(tmp_path):
    path = tmp_path / "alpha" / "events.jsonl"
    path.parent.mkdir()
    path.write_bytes(_file(_line(_signal()), b"{nope", _line(_signal(direction="BUY"))))
    result = read_signals(path)
    assert result.source == str(path)
    assert [d.split(": ", 1)[0] for d in result.quarantine["detail"]] == [f"{path} line 2", f"{path} line 3"]
    # without a file there is no name to give
    assert not _signals(_file(b"{nope")).quarantine.iloc[0]["detail"].startswith("None")


# --------------------------------------------------------------------------- torn writes, line endings


GLUED = b'{"ts": "2024-03-0' + _line(_signal(run_id="glued", ts="2024-03-05T10:00:00Z"))


def test_fragment_glued_to_a_complete_record_recovers_the_record():
    lines = [_line(_signal(run_id="a")), GLUED, _line(_signal(run_id="b"))]
    result = _signals(_file(*lines))
    assert result.valid["run_id"].tolist() == ["a", "glued", "b"]
    assert result.valid["line_no"].tolist() == [1, 2, 3], "the record keeps its line's number"
    assert result.valid.iloc[1]["ts"] == pd.Timestamp("2024-03-05T10:00:00Z")
    assert result.quarantine[["line_no", "reason"]].values.tolist() == [[2, "fragment_recovered"]]
    assert result.quarantine.iloc[0]["raw"] == GLUED.decode()
    assert '\'{"ts": "2024-03-0\'' in result.quarantine.iloc[0]["detail"]
    assert result.recovered_fragments == 1
    assert result.rejected == 0, "a recovered fragment is not a rejected line"
    assert result.rejected_by_reason() == {"fragment_recovered": 1}
    assert len(result.valid) + result.duplicates + result.rejected + result.blank_lines == result.lines_read


def test_fragment_before_an_invalid_record_reports_both():
    raw = b'{"run_id": "x", "sym' + _line(_signal(direction="BUY"))
    result = _signals(_file(raw))
    assert result.valid.empty
    assert result.quarantine["reason"].tolist() == ["fragment_recovered", "bad_direction"]
    assert (result.recovered_fragments, result.rejected, result.lines_read) == (1, 1, 1)


def test_fragment_glued_on_the_unterminated_last_line():
    result = _signals(_file(_line(_signal(run_id="a")), GLUED, final_newline=False))
    assert result.valid["run_id"].tolist() == ["a", "glued"]
    assert result.quarantine["reason"].tolist() == ["fragment_recovered"]


def test_two_complete_records_on_one_line_are_reported_as_such():
    raw = _line(_signal(run_id="first")) + _line(_signal(run_id="second"))
    result = _signals(_file(raw))
    assert result.valid["run_id"].tolist() == ["second"]
    assert result.quarantine["reason"].tolist() == ["fragment_recovered"]
    assert "two records written without a newline" in result.quarantine.iloc[0]["detail"]


def test_truncated_record_whose_tail_is_a_complete_nested_object_is_not_recovered():
    """Only an object that looks like a record (has ts or run_id) is taken for the next record."""
    raw = _line(_signal(features={"rsi": 71.2}))[:-1]  # outer "}" missing
    assert _signals(_file(raw)).quarantine["reason"].tolist() == ["invalid_json"]
    assert _signals(_file(raw, final_newline=False)).quarantine["reason"].tolist() == ["incomplete_last_line"]


def test_cr_only_file_is_reported_as_such_not_split():
    data = b"\r".join(_line(_signal(run_id=f"r{i}")) for i in range(5)) + b"\r"
    result = _signals(data)
    assert result.valid.empty
    assert result.lines_read == 1
    row = result.quarantine.iloc[0]
    assert (row["line_no"], row["reason"]) == (1, "cr_line_endings")
    assert "CR-only" in row["detail"]


def test_carriage_return_as_json_whitespace_is_fine():
    raw = _line(_signal()).replace(b", ", b",\r ")
    result = _signals(_file(raw))
    assert result.quarantine.empty and len(result.valid) == 1


@pytest.mark.parametrize("char", ["é", "€", "😀"])
def test_last_line_cut_inside_a_multibyte_character_is_incomplete(char):
    line = json.dumps(_signal(agent=f"caf{char}"), ensure_ascii=False).encode()
    cut = line[: line.index(char.encode()) + 1]  # inside the character
    result = _signals(_file(_line(_signal(run_id="a")), cut, final_newline=False))
    assert result.valid["run_id"].tolist() == ["a"]
    assert result.quarantine[["line_no", "reason"]].values.tolist() == [[2, "incomplete_last_line"]]
    # the same bytes on a terminated line are invalid UTF-8
    assert _signals(_file(cut)).quarantine["reason"].tolist() == ["invalid_utf8"]


# --------------------------------------------------------------------------- telemetry shapes


@pytest.mark.parametrize(
    ("errors", "expected"),
    [
        (["timeout"], 1.0),
        (["timeout", "rate limit", "timeout"], 3.0),
        ([], 0.0),
        (True, 1.0),
        (False, 0.0),
        ("upstream timeout", 1.0),
        ("", 0.0),
        ("   ", 0.0),
        ("2", 2.0),
        ({"code": 504, "message": "timeout"}, 1.0),
        ({}, 0.0),
    ],
)
def test_errors_in_other_shapes_are_counted(errors, expected):
    result = _telemetries(_file(_line(_telemetry(errors=errors))))
    assert result.quarantine.empty
    row = result.valid.iloc[0]
    assert row["errors"] == expected
    assert row["unreadable_metrics"] == ""
    assert json.loads(row["metrics_raw"]) == {"errors": errors}, "the original value is kept"


@pytest.mark.parametrize("name", ["latency_ms", "tokens_in", "tokens_out", "errors", "cost_usd"])
@pytest.mark.parametrize(("text", "number"), [("412", 412.0), (" 0.25 ", 0.25), ("1e3", 1000.0), ("0", 0.0)])
def test_numeric_strings_are_read_for_every_metric(name, text, number):
    result = _telemetries(_file(_line(_telemetry(**{name: text}))))
    row = result.valid.iloc[0]
    assert row[name] == number
    assert row["unreadable_metrics"] == ""
    assert json.loads(row["metrics_raw"]) == {name: text}


@pytest.mark.parametrize(
    ("name", "raw_value"),
    [
        ("latency_ms", b'"fast"'),
        ("latency_ms", b"-1"),
        ("latency_ms", b"NaN"),
        ("latency_ms", b"Infinity"),
        ("latency_ms", b"[1, 2]"),
        ("latency_ms", b"true"),
        ("tokens_in", b'"1,200"'),
        ("tokens_in", b"9" * 500),
        ("tokens_in", b"9" * 5000),
        ("tokens_out", b'"-3"'),
        ("tokens_out", b'"inf"'),
        ("cost_usd", b"1e400"),
        ("cost_usd", b'{"usd": 0.1}'),
        ("errors", b"-2"),
        ("errors", b"NaN"),
        ("errors", b"9" * 500),
        ("errors", b'"-1"'),
    ],
    ids=lambda value: value if isinstance(value, str) else value[:12].decode(),
)
def test_unreadable_metric_keeps_the_run_with_that_metric_missing(name, raw_value):
    raw = _line(_telemetry(**{name: "@@"})).replace(b'"@@"', raw_value)
    result = _telemetries(_file(_line(_telemetry(run_id="ok")), raw))
    assert result.quarantine.empty, "only ts, agent and run_id decide whether a run is kept"
    assert result.valid["run_id"].tolist() == ["ok", "run-1"]
    row = result.valid.iloc[1]
    assert math.isnan(row[name]), "unreadable is missing, never 0 and never counted as an error"
    assert row["unreadable_metrics"] == name
    assert name in json.loads(row["metrics_raw"])
    others = [m for m in ("latency_ms", "tokens_in", "tokens_out", "errors", "cost_usd") if m != name]
    assert not row[others].isna().any()
    assert result.valid.iloc[0]["unreadable_metrics"] == "" and result.valid.iloc[0]["metrics_raw"] == ""
    for column in ("latency_ms", "tokens_in", "tokens_out", "errors", "cost_usd"):
        assert result.valid[column].dtype == "float64"
        assert not result.valid[column].isin([math.inf, -math.inf]).any()


def test_several_unreadable_metrics_are_all_named():
    result = _telemetries(_file(_line(_telemetry(latency_ms="fast", errors=-1, cost_usd="?"))))
    row = result.valid.iloc[0]
    assert row["unreadable_metrics"] == "latency_ms,errors,cost_usd"
    assert row["tokens_in"] == 1200.0


# --------------------------------------------------------------------------- nanosecond time


def test_ts_is_exact_to_the_nanosecond():
    result = _signals(_file(_line(_signal(ts="2024-03-05T10:00:00.000000001Z"))))
    assert result.valid.iloc[0]["ts"] == pd.Timestamp("2024-03-05T10:00:00.000000001Z")
    assert result.valid.iloc[0]["ts"] > pd.Timestamp("2024-03-05T10:00:00Z"), "not priced from the 10:00 bar"
    assert result.valid["ts"].dtype == "datetime64[ns, UTC]"


@pytest.mark.parametrize(
    ("ts", "exact"),
    [
        ("2024-03-05T10:00:00.123456789+02:00", "2024-03-05T08:00:00.123456789Z"),
        ("2024-03-05T10:00:00,1234567Z", "2024-03-05T10:00:00.1234567Z"),
        ("2024-03-05T10:00:00.0000000001Z", "2024-03-05T10:00:00.000000001Z"),  # rounds up
        ("2024-03-05T10:00:00.1234567891Z", "2024-03-05T10:00:00.123456790Z"),  # rounds up
        ("2024-03-05T10:00:00.123456789000Z", "2024-03-05T10:00:00.123456789Z"),  # zeros: exact
        ("2024-03-05T10:00:00.5Z", "2024-03-05T10:00:00.5Z"),
        ("20240305T100000.000000007Z", "2024-03-05T10:00:00.000000007Z"),
    ],
)
def test_fractional_seconds_beyond_nine_digits_round_up(ts, exact):
    assert parse_ts(ts) == pd.Timestamp(exact)
    assert _telemetries(_file(_line(_telemetry(ts=ts)))).valid.iloc[0]["ts"] == pd.Timestamp(exact)


def test_partition_date_is_the_signal_date_with_nanoseconds():
    result = _signals(_file(_line(_signal(ts="2024-03-01T23:59:59.999999999Z"))))
    assert result.valid["date"].tolist() == ["2024-03-01"]


def test_duplicate_key_uses_the_exact_instant():
    lines = [
        _line(_signal(ts="2024-03-05T10:00:00.000000001Z")),
        _line(_signal(ts="2024-03-05T10:00:00.000000002Z")),  # 1 ns later: another signal
        _line(_signal(ts="2024-03-05T12:00:00.000000001+02:00")),  # same instant as line 1
        _line(_signal(ts="2024-03-05T10:00:00Z")),  # used to be a duplicate of line 1
    ]
    result = _signals(_file(*lines))
    assert result.valid["line_no"].tolist() == [1, 2, 4]
    assert result.duplicate_lines == [(3, 1)]


def test_parse_ts_keeps_working_for_the_sensor():
    parsed = parse_ts(json.loads(_line(_signal(ts="2024-03-05T23:30:00-02:00")))["ts"])
    assert str(parsed.date()) == "2024-03-06"
    for bad in ("1600-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", 10**400, "x" * 10_000, "\x00"):
        with pytest.raises(Rejected):
            parse_ts(bad)


@pytest.mark.parametrize(
    ("raw", "day"),
    [
        (_line(_signal(ts="2024-03-05T23:30:00-02:00")), "2024-03-06"),
        (_line(_signal(ts="2024-03-05T10:00:00Z")) + b"\r\n", "2024-03-05"),
        (_line(_signal(direction="BUY")), "2024-03-01"),  # the day of a line the run will quarantine
        (GLUED, "2024-03-05"),
        (_line(_telemetry()), "2024-03-01"),
        (b"", None),
        (b"\xff\xfe", None),
        (b"[" * 100_000, None),
        (b'{"ts": 1}', None),
        (_line(_signal(ts="9999-12-31T23:59:59-01:00")), None),
        (b'{"ts": "2024-03-01T12:00:00Z", "a": "\\ud800"}', None),
        (b'{"ts": "2024-03-01T12:00:00Z", "n": ' + b"1" * 5000 + b"}", "2024-03-01"),
    ],
    ids=lambda value: repr(value)[:40] if isinstance(value, bytes) else str(value),
)
def test_line_day(raw, day):
    got = ingest.line_day(raw)
    assert (got.isoformat() if got else None) == day
