"""Reading one line: bytes → a JSON object (:func:`_decode`), with the careful handling of hostile
text (invalid UTF-8, deep nesting, lone surrogates, huge integers, CR-only files, a crashed writer's
fragment glued to the next record). The rules are in the package docstring (:mod:`meta_pipeline.ingest`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 64
"""Deepest JSON nesting accepted on a line (a record is 1; its ``extra`` fields may nest). Deeper
lines are ``too_deep``: far beyond any real record, and it keeps the JSON parser and encoder well
away from Python's recursion limit."""

_MAX_RECOVERY_TRIES = 100  # candidate "{" positions tried when looking for a glued record
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_DEPTH_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_OBJECT_START = re.compile(r'\{[ \t]*["}]')


class Rejected(ValueError):
    """A line is invalid; ``reason`` is a short stable code used for counts, ``detail`` says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------- JSON decoding


class _JsonConstant(float):
    """``NaN``/``Infinity``/``-Infinity`` written as such (``not_finite``), as opposed to a finite
    literal too large for a float such as ``1e400`` (``number_out_of_range``)."""


class _LongInteger:
    """An integer literal with more digits than Python converts (``sys.get_int_max_str_digits``)."""

    __slots__ = ("digits",)

    def __init__(self, digits: str):
        self.digits = digits

    def __repr__(self) -> str:
        return f"<integer with {len(self.digits.lstrip('-'))} digits>"


def _parse_long_int(text: str) -> int | _LongInteger:
    try:
        return int(text)
    except ValueError:
        return _LongInteger(text)


_DECODER = json.JSONDecoder(parse_constant=_JsonConstant)
_LONG_INT_DECODER = json.JSONDecoder(parse_constant=_JsonConstant, parse_int=_parse_long_int)


def _json_default(value: object) -> object:
    if isinstance(value, _LongInteger):
        return value.digits  # kept as text: no JSON reader would take it as a number anyway
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, allow_nan=False, default=_json_default)


def _dumps(value: object) -> str:
    """Strict JSON text (non-finite floats written as the strings "NaN"/"Infinity"/"-Infinity")."""
    try:
        return _ENCODER.encode(value)
    except ValueError:
        return _ENCODER.encode(_finite_only(value))


def _finite_only(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite_only(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_only(v) for v in value]
    return value


def _loads(text: str, start: int | None = None) -> Any:
    """``json.loads`` (or ``raw_decode`` from ``start``) that turns integers too long for Python into
    :class:`_LongInteger` and deep nesting into ``too_deep``; raises ``json.JSONDecodeError``."""
    try:
        try:
            return _DECODER.decode(text) if start is None else _DECODER.raw_decode(text, start)
        except json.JSONDecodeError:
            raise
        except ValueError:  # "Exceeds the limit (4300 digits) for integer string conversion"
            return (
                _LONG_INT_DECODER.decode(text) if start is None else _LONG_INT_DECODER.raw_decode(text, start)
            )
    except RecursionError:
        raise Rejected(
            "too_deep", f"JSON nesting deeper than the parser allows (limit {MAX_DEPTH})"
        ) from None


def _depth(text: str) -> int:
    """Deepest bracket nesting outside strings; stops counting once beyond MAX_DEPTH."""
    depth = deepest = 0
    for match in _DEPTH_TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    break
        elif token in "]}":
            depth -= 1
    return deepest


def _check_unicode(text: str, obj: Any) -> None:
    """Reject lone surrogates (``"\\ud800"``): valid JSON escapes, but not text UTF-8 or Parquet can
    hold. Pairs (``"\\ud83d\\ude00"``) are decoded into one character and are fine."""
    if not _SURROGATE_ESCAPE.search(text):
        return
    try:
        json.dumps(obj, ensure_ascii=False, default=_json_default).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Rejected(
            "invalid_unicode",
            f"a key or value holds a lone UTF-16 surrogate escape ({exc.object[exc.start : exc.end]!a}), "
            "which is not a character and cannot be stored as UTF-8",
        ) from None


@dataclass
class _Decoded:
    obj: dict
    fragment: str | None = None  # text before a recovered record
    fragment_detail: str = ""


def _decode(raw: bytes, terminated: bool) -> _Decoded:
    """One non-blank line → its JSON object, or :class:`Rejected`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if not terminated and exc.reason == "unexpected end of data":
            raise Rejected(
                "incomplete_last_line",
                f"last line has no newline and ends inside a multi-byte UTF-8 character (byte {exc.start}); "
                "it is probably still being written and will be read again next run",
            ) from None
        raise Rejected("invalid_utf8", f"invalid UTF-8 at byte {exc.start}") from None
    if text.count("[") + text.count("{") > MAX_DEPTH and (depth := _depth(text)) > MAX_DEPTH:
        raise Rejected("too_deep", f"JSON nested more than {MAX_DEPTH} levels deep (at least {depth})")
    try:
        obj = _loads(text)
    except json.JSONDecodeError as exc:
        return _undecodable(text, terminated, exc)
    _check_unicode(text, obj)
    if not isinstance(obj, dict):
        raise Rejected("not_an_object", f"expected a JSON object, got {_json_type(obj)}")
    return _Decoded(obj)


def _undecodable(text: str, terminated: bool, exc: json.JSONDecodeError) -> _Decoded:
    stripped = text.rstrip("\r")
    if "\r" in stripped:
        crs = stripped.count("\r")
        raise Rejected(
            "cr_line_endings",
            f"the line holds {crs} carriage return(s) (\\r) without a line feed and is not valid JSON: "
            f"the writer uses CR-only line endings, which JSON Lines does not allow, so about {crs + 1} "
            "records in it were not read; convert the file's line endings to LF",
        )
    recovered = _recover(text)
    if recovered is not None:
        return recovered
    if not terminated:
        raise Rejected(
            "incomplete_last_line",
            f"last line has no newline and is not valid JSON ({exc.msg}); "
            "it is probably still being written and will be read again next run",
        )
    raise Rejected("invalid_json", f"{exc.msg} at column {exc.colno}")


def _recover(text: str) -> _Decoded | None:
    """A complete record (JSON object with ``ts`` or ``run_id``) that ends the line after some text
    that does not parse: a crashed writer's fragment glued to the next record."""
    for tries, match in enumerate(_OBJECT_START.finditer(text, 1)):
        if tries >= _MAX_RECOVERY_TRIES:
            break
        start = match.start()
        try:
            obj, end = _loads(text, start)
        except (ValueError, Rejected):  # JSONDecodeError is a ValueError
            continue
        if not isinstance(obj, dict) or text[end:].strip(" \t\r\n") or not ("ts" in obj or "run_id" in obj):
            continue
        _check_unicode(text[start:end], obj)
        fragment = text[:start]
        try:
            whole = isinstance(_loads(fragment.strip(" \t\r\n")), dict)
        except (ValueError, Rejected):
            whole = False
        what = (
            "are themselves a complete JSON object (two records written without a newline between "
            "them); that first record was not read"
            if whole
            else "are an unfinished record (a writer stopped mid-line)"
        )
        return _Decoded(
            obj,
            fragment,
            f"{_short(fragment)} (the line's first {start} characters) {what}; the complete record "
            f"from column {start + 1} was read as this line's record",
        )
    return None


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    if isinstance(value, int | float | _LongInteger):
        return "a number"
    return {str: "a string", list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------- field validators


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def iter_lines(data: bytes, first_line_no: int = 1) -> Iterator[tuple[int, bytes, bool]]:
    """(1-based line number, bytes without the newline, whether a newline terminated it).

    ``data`` starts at line ``first_line_no`` of its file (a chunk read from a stored offset).
    Lines are split on LF only; a CR right before the LF (CRLF) is dropped. A UTF-8 byte-order mark
    at the start of the file is not data.
    """
    if first_line_no == 1:
        data = data.removeprefix(b"\xef\xbb\xbf")
    lines = data.split(b"\n")
    last = len(lines) - 1
    for index, line in enumerate(lines):
        if index == last and not line:
            return  # the file ended with a newline
        yield first_line_no + index, line.rstrip(b"\r"), index != last
