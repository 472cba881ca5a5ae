"""The demo's JSON lines: signals in the app's formats, one telemetry line per run.

Signal lines (``alpha/events.jsonl``) look like the app's: ``ts`` with a ``Z``, ``+00:00`` or
``+02:00`` offset (the same instant) and 0, 3 or 6 fraction digits; symbols spelled ``BTC``,
``BTCUSDT``, ``BTC/USDT``, ``btc-usdt``, ``ETH-USD``, ``sol/usdc`` …; directions ``LONG``/``SHORT``
and sometimes lower case; extra fields (``model``, ``prompt_version``) to keep. The file is sorted by
time. On purpose it also holds one malformed line of each kind in :data:`MALFORMED_KINDS` (about
0.5 % of the lines) and three valid lines written twice in a row, as when the app retries an append.

Telemetry lines (``telemetry/events.jsonl``) cover every run, including the runs that emitted no
signal and those whose signal line is malformed. Their ``ts`` is the run's start; a signal's ``ts``
is the run's end (start + ``latency_ms``), so a naive ``{**signal, **telemetry}`` merge visibly
overwrites the signal time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import numpy as np

from meta_pipeline.demo.fleet import Runs
from meta_pipeline.demo.market import DAY_MS, REGIMES, SPELLINGS

MALFORMED_KINDS = (
    "invalid_json",
    "invalid_utf8",
    "ts_without_offset",
    "ts_numeric",
    "bad_direction",
    "bad_confidence",
    "missing_run_id",
    "bad_symbol",
)
N_DUPLICATES = 3  # valid signal lines written twice in a row

# (time in ms, agent, run_id, line): sorted in this order into the signals file
_SignalLine = tuple[int, str, str, bytes]


@dataclass(frozen=True)
class SignalsFile:
    body: bytes  # the whole file, one line per signal, "\n"-terminated
    n_valid: int  # distinct valid lines
    n_malformed: int
    n_duplicates: int  # extra copies of valid lines


def signals_file(fleet: list[Runs], rng: np.random.Generator, start_ms: int, days: int) -> SignalsFile:
    """The signals file of the whole fleet: valid lines, malformed lines and duplicates, by time."""
    signals: list[_SignalLine] = []
    for runs in fleet:
        signals.extend(_signal_lines(runs, rng))
    n_valid = len(signals)
    dup_lines = {signals[k][3] for k in rng.choice(n_valid, size=N_DUPLICATES, replace=False).tolist()}
    malformed = _malformed_lines(fleet, rng, start_ms, days)
    body = bytearray()
    for _ms, _agent, _run_id, line in sorted(signals + malformed):
        body += line + b"\n"
        if line in dup_lines:  # the app retried an append: the same line twice in a row
            body += line + b"\n"
    return SignalsFile(bytes(body), n_valid, len(malformed), len(dup_lines))


def telemetry_file(fleet: list[Runs]) -> tuple[bytes, int]:
    """The telemetry file of the whole fleet, sorted by run start, and its number of lines."""
    telemetry = sorted((t for runs in fleet for t in _telemetry_lines(runs)), key=lambda t: (t[0], t[1]))
    return b"".join(t[2] + b"\n" for t in telemetry), len(telemetry)


def _ms_to_dt(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(ms))


def _iso(ms: int, style: int) -> str:
    """0: ``Z``; 1: ``+00:00``; 2: ``+02:00`` (same instant); 3: ``Z`` with 6 fraction digits."""
    dt = _ms_to_dt(ms)
    frac = int(ms) % 1000
    if style == 2:
        dt = dt.astimezone(timezone(timedelta(hours=2)))
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if style == 3:
        text += f".{frac * 1000:06d}"
    elif frac:
        text += f".{frac:03d}"
    return text + {0: "Z", 1: "+00:00", 2: "+02:00", 3: "Z"}[style]


def _telemetry_iso(ms: int) -> str:
    return _ms_to_dt(ms).strftime("%Y-%m-%dT%H:%M:%S") + f".{int(ms) % 1000:03d}Z"


def _signal_lines(runs: Runs, rng: np.random.Generator) -> list[_SignalLine]:
    spec = runs.spec
    out = []
    n = len(runs.sig_ms)
    style = rng.choice(4, size=n, p=[0.7, 0.1, 0.1, 0.1])
    lower = rng.random(n) < 0.04
    conf_noise = rng.normal(0.0, 0.08, n)
    score_mult = rng.uniform(0.7, 1.1, n)
    # skilled agents are a bit more confident when they are right
    skilled = not isinstance(spec.skill, tuple) and spec.skill > 0.6
    for i in np.flatnonzero(runs.emits).tolist():
        direction = "LONG" if runs.sign[i] > 0 else "SHORT"
        if lower[i]:
            direction = direction.lower()
        conf = float(
            np.clip(0.6 + (0.08 if (skilled and runs.right[i]) else 0.0) + conf_noise[i], 0.05, 0.99)
        )
        conf = round(conf, 3)
        obj = {
            "ts": _iso(int(runs.sig_ms[i]), int(style[i])),
            "agent": spec.name,
            "run_id": runs.run_id[i],
            "symbol": runs.spelling[i],
            "direction": direction,
            "regime": REGIMES[int(runs.regime[i])],
            "confidence": conf,
            "score_final": round(conf * float(score_mult[i]), 4),
            "model": spec.model,
            "prompt_version": spec.prompt_version,
        }
        line = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        out.append((int(runs.sig_ms[i]), spec.name, runs.run_id[i], line))
    return out


def _malformed_lines(
    fleet: list[Runs], rng: np.random.Generator, start_ms: int, days: int
) -> list[_SignalLine]:
    """One bad line per kind, each on a silent run (so it has telemetry) of an agent that hosts them.

    Only runs after the first and before the last signal day are used.
    """
    hosts = [r for r in fleet if r.spec.hosts_malformed_lines]
    pool = [
        (int(r.sig_ms[i]), k, i)
        for k, r in enumerate(hosts)
        for i in np.flatnonzero(~r.emits).tolist()
        if DAY_MS <= r.sig_ms[i] - start_ms < (days - 1) * DAY_MS
    ]
    pool.sort()
    picks = sorted(rng.choice(len(pool), size=len(MALFORMED_KINDS), replace=False).tolist())
    out = []
    for kind, p in zip(MALFORMED_KINDS, picks, strict=True):
        ms, k, i = pool[p]
        r = hosts[k]
        obj: dict = {
            "ts": _iso(ms, 0),
            "agent": r.spec.name,
            "run_id": r.run_id[i],
            "symbol": SPELLINGS["BTC"][1],
            "direction": "LONG",
            "regime": "range",
            "confidence": 0.61,
            "score_final": 0.55,
            "model": r.spec.model,
            "prompt_version": r.spec.prompt_version,
        }
        if kind == "ts_without_offset":
            obj["ts"] = _iso(ms - ms % 1000, 0)[:-1]
        elif kind == "ts_numeric":
            obj["ts"] = ms // 1000
        elif kind == "bad_direction":
            obj["direction"] = "FLAT"
        elif kind == "bad_confidence":
            obj["confidence"] = 1.7
        elif kind == "missing_run_id":
            del obj["run_id"]
        elif kind == "bad_symbol":
            obj["symbol"] = "BTC/EUR"
        elif kind == "invalid_utf8":
            obj["model"] = "@@MODEL@@"
        line = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        if kind == "invalid_json":
            line = line[: line.rindex(b",")]  # cut off mid-object: no closing brace
        elif kind == "invalid_utf8":
            line = line.replace(b"@@MODEL@@", b"gpt-4o-\xc3\x28mini")
        out.append((ms, r.spec.name, r.run_id[i], line))
    return out


def _telemetry_lines(runs: Runs) -> list[tuple[int, str, bytes]]:
    out = []
    for i in range(len(runs.sig_ms)):
        start_ms = int(runs.sig_ms[i] - runs.latency[i])
        obj = {
            "run_id": runs.run_id[i],
            "agent": runs.spec.name,
            "ts": _telemetry_iso(start_ms),
            "latency_ms": int(runs.latency[i]),
            "tokens_in": int(runs.tokens_in[i]),
            "tokens_out": int(runs.tokens_out[i]),
            "errors": int(runs.errors[i]),
            "cost_usd": float(runs.cost[i]),
        }
        out.append((start_ms, runs.run_id[i], json.dumps(obj, ensure_ascii=False).encode("utf-8")))
    return out
