"""Validation of the app's JSON Lines inputs (signals ``alpha/events.jsonl`` and telemetry
``telemetry/events.jsonl``), as the file contract in docs/rules.md (*File contract*) describes them.

Pure functions, no Dagster. Each input line either becomes a typed row or a quarantine row that
keeps its line number, its raw text and a reason code: nothing is silently dropped and **no line can
stop ingestion** — a line that breaks a validator in a way nobody foresaw becomes a quarantine row
with reason ``unexpected_error`` and the exception text. Input files are only ever read, in binary,
so one invalid byte sequence spoils one line, not the file.

Counting. Every line read is exactly one of: a valid row, a duplicate, a rejected line (one
quarantine row) or a blank line, so ``len(valid) + duplicates + rejected + blank_lines ==
lines_read``. A line that held a crashed writer's fragment glued to a complete record adds one more
quarantine row (reason ``fragment_recovered``), counted in ``recovered_fragments``, not in
``rejected``.

Decisions where the file contract is silent, and why:

* Blank lines carry no data; they are counted, not quarantined.
* A last line without a trailing newline that does not parse (including one cut inside a multi-byte
  UTF-8 character) is most likely being appended right now; it is quarantined as
  ``incomplete_last_line`` and, because every run re-reads the whole file, picked up by the next run
  once complete.
* Lines end with LF; CRLF is accepted. A line that does not parse and contains a bare CR comes from
  a writer using CR-only line endings: it is quarantined as ``cr_line_endings`` (the records in it
  are *not* split on CR and guessed at), so the writer gets fixed instead of the data being silently
  re-cut with line numbers no other tool agrees with.
* A line that does not parse but ends with a complete JSON object carrying ``ts`` or ``run_id``
  (a crashed writer's fragment followed by the next record: ``{"ts": "2024-03-0{"ts": …}``) yields
  that object as the line's record (same line number); the text before it is reported as a
  ``fragment_recovered`` quarantine row.
* ``run_id``/``agent`` must be non-empty strings; numbers are not silently converted.
* ``ts`` must be ISO-8601 text with an offset, between 2000-01-01T00:00Z (inclusive) and
  2100-01-01T00:00Z (exclusive), else ``ts_out_of_range``: no crypto price exists before 2009, a
  year like 1970 or 9999 is a writer bug, and the window is well inside what pandas
  ``datetime64[ns]`` can hold (1677-09-22 … 2262-04-11). ``ts`` is kept to the nanosecond; digits
  beyond the ninth round *up*, so a signal is never priced from a bar that opened before it.
* A signal's identity is (``run_id``, instrument, direction, exact instant of ``ts``): ``BTC`` and
  ``BTC/USDT`` at ``12:00Z`` and ``14:00+02:00`` are the same signal. The first occurrence wins.
* Telemetry is one record per run: a repeated ``run_id`` counts once (first wins) and is reported
  as a duplicate. Only a telemetry line without a readable ``ts``, ``agent`` or ``run_id`` is
  quarantined; an unreadable metric leaves that metric NaN and names it in ``unreadable_metrics``
  (see :func:`validate_telemetry`).
* Hostile text: a line nested deeper than :data:`MAX_DEPTH` is ``too_deep``; a lone UTF-16
  surrogate escape (``"\\ud800"``) anywhere is ``invalid_unicode`` (it cannot be written as UTF-8 or
  Parquet); a number too large for a float (``1e400``, a 400-digit integer) where a number is
  needed is ``number_out_of_range`` (the literals ``NaN``/``Infinity`` are ``not_finite``).

Layout: :mod:`~meta_pipeline.ingest.lines` reads one line (decoding, hostile text, glued fragments),
:mod:`~meta_pipeline.ingest.fields` validates a record's fields, :mod:`~meta_pipeline.ingest.reading`
runs the loop over a file, and :mod:`~meta_pipeline.ingest.fast` is its fast lane for ordinary
signal and telemetry lines (same result, several times sooner; ``ingest_bytes(..., fast=False)``
reads every line the careful way).
"""

from meta_pipeline.ingest.fields import (
    QUARANTINE_COLUMNS,
    SIGNAL_COLUMNS,
    TELEMETRY_COLUMNS,
    TS_MAX,
    TS_MIN,
    line_day,
    parse_ts,
    signal_key,
    telemetry_key,
    validate_signal,
    validate_telemetry,
)
from meta_pipeline.ingest.lines import MAX_DEPTH, Rejected, iter_lines
from meta_pipeline.ingest.reading import (
    IngestResult,
    InputFileMissing,
    ingest_bytes,
    read_signals,
    read_telemetry,
)

__all__ = [
    "MAX_DEPTH",
    "QUARANTINE_COLUMNS",
    "SIGNAL_COLUMNS",
    "TELEMETRY_COLUMNS",
    "TS_MAX",
    "TS_MIN",
    "IngestResult",
    "InputFileMissing",
    "Rejected",
    "ingest_bytes",
    "iter_lines",
    "line_day",
    "parse_ts",
    "read_signals",
    "read_telemetry",
    "signal_key",
    "telemetry_key",
    "validate_signal",
    "validate_telemetry",
]
