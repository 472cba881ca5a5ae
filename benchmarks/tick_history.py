"""Synthetic inputs for ``bench_tick.py``: the app's JSON Lines and Binance-dump 1-minute bars.

No Dagster and no ``meta_pipeline.definitions`` here (the environment must be set before those are
imported). Everything is deterministic per (day, symbol) or per tick stamp, so a history can be
extended day by day and its bars rewritten identically.

* Signals (``alpha/events.jsonl``): ``n`` a day at uniform times, 4 symbols in a few spellings, 64
  agents, LONG/SHORT, regime, confidence, score_final and two extra fields, like the demo's lines.
  A share of them (``malformed_share``) have direction ``FLAT`` and go to the quarantine.
* Telemetry (``telemetry/events.jsonl``): about 2 runs per signal — the signal's own run (started
  ``latency_ms`` before the signal) and one run that emitted no signal.
* Bars: a geometric Brownian motion per symbol-day (the day's open level is a smooth function of
  the date, so consecutive days join up to a fraction of a percent), 12 Binance columns, every bar
  valid (high ≥ open/close ≥ low, volume > 0, trades ≥ 1).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np

MINUTE_MS = 60_000
DAY_MS = 86_400_000
EPOCH = date(1970, 1, 1)

# symbol: start level, annualised vol, price decimals, volume decimals, base volume/min, trades/min
SYMBOLS: dict[str, tuple[float, float, int, int, float, float]] = {
    "BTCUSDT": (60_000.0, 0.55, 2, 5, 12.0, 1_100.0),
    "ETHUSDT": (2_500.0, 0.70, 2, 4, 250.0, 900.0),
    "SOLUSDT": (150.0, 0.85, 2, 3, 4_000.0, 700.0),
    "DOGEUSDT": (0.15, 0.90, 5, 0, 1_500_000.0, 400.0),
}
SPELLINGS = {
    "BTCUSDT": ("BTC", "BTCUSDT", "BTC/USDT", "btc-usdt"),
    "ETHUSDT": ("ETH", "ETHUSDT", "ETH/USDT", "ETH-USD"),
    "SOLUSDT": ("SOL", "SOLUSDT", "SOL/USDT", "sol/usdc"),
    "DOGEUSDT": ("DOGE", "DOGEUSDT", "DOGE/USDT", "doge-usdt"),
}
_SPELL = [s for sym in SYMBOLS for s in SPELLINGS[sym]]  # index = symbol * 4 + spelling
REGIMES = ("trend", "range", "high_vol")
N_AGENTS = 64


def day_ms(day: date) -> int:
    return (day - EPOCH).days * DAY_MS


# ---------------------------------------------------------------------------------------------- bars
def bar_rows(symbol: str, day: date, until_ms: int | None = None) -> bytes:
    """One symbol-day of 1-minute bars in the Binance dump layout (no header, 12 columns); with
    ``until_ms`` only the bars that closed by then (today's file, as a collector leaves it)."""
    k = list(SYMBOLS).index(symbol)
    s0, vol, pdec, vdec, base_vol, base_trades = SYMBOLS[symbol]
    ordinal = day.toordinal()
    rng = np.random.default_rng([k, ordinal])
    level = s0 * np.exp(0.25 * np.sin(ordinal / 45.0 + k))
    n = 1440
    t0 = day_ms(day)
    minute = np.arange(n)
    sigma = vol / np.sqrt(525_600) * (1.0 + 0.35 * np.sin(2 * np.pi * (minute - 540) / 1440))
    z = rng.standard_normal(n)
    close = np.round(level * np.exp(np.cumsum(sigma * z - 0.5 * sigma**2)), pdec)
    open_ = np.concatenate(([round(level, pdec)], close[:-1]))
    body_hi, body_lo = np.maximum(open_, close), np.minimum(open_, close)
    wick = sigma * close
    high = np.maximum(np.round(body_hi + np.abs(rng.normal(0, 0.6, n)) * wick, pdec), body_hi)
    low = np.minimum(np.round(body_lo - np.abs(rng.normal(0, 0.6, n)) * wick, pdec), body_lo)
    low = np.maximum(low, 10.0**-pdec)
    activity = (0.4 + np.abs(z)) * np.exp(0.4 * rng.standard_normal(n))
    volume = np.maximum(np.round(base_vol * activity, vdec), 10.0**-vdec)
    typical = (open_ + high + low + close) / 4
    trades = np.maximum(1, np.round(base_trades * activity)).astype(np.int64)
    taker = np.round(volume * rng.uniform(0.35, 0.65, n), vdec)
    open_time = t0 + minute.astype(np.int64) * MINUTE_MS
    keep = n if until_ms is None else int(np.searchsorted(open_time + MINUTE_MS, until_ms, side="right"))
    cols = [
        open_time,
        open_,
        high,
        low,
        close,
        volume,
        open_time + MINUTE_MS - 1,
        np.round(volume * typical, 8),
        trades,
        taker,
        np.round(taker * typical, 8),
    ]
    fmt = f"%d,%.{pdec}f,%.{pdec}f,%.{pdec}f,%.{pdec}f,%.{vdec}f,%d,%.8f,%d,%.{vdec}f,%.8f,0\n"
    rows = zip(*(c[:keep].tolist() for c in cols), strict=True)
    return "".join([fmt % row for row in rows]).encode("ascii")


def write_bars(bars_dir: Path, day: date, until_ms: int | None = None) -> None:
    """Write (atomically) the four symbols' dump files for ``day``."""
    for symbol in SYMBOLS:
        folder = bars_dir / symbol
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{symbol}-1m-{day.isoformat()}.csv"
        tmp = path.with_suffix(".csv.tmp")
        tmp.write_bytes(bar_rows(symbol, day, until_ms))
        tmp.replace(path)


# ----------------------------------------------------------------------------------------- JSON lines
def _iso(ms: np.ndarray) -> list[str]:
    return [s + "Z" for s in np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms").tolist()]


def signal_lines(
    start_ms: int, end_ms: int, n: int, seed: list[int], run_prefix: str, malformed_share: float
) -> tuple[bytes, bytes]:
    """``n`` signals uniformly in [start_ms, end_ms) and their telemetry (2 runs per signal), each
    file's lines sorted by time. Returns (signal lines, telemetry lines)."""
    rng = np.random.default_rng(seed)
    sig_ms = np.sort(rng.integers(start_ms, end_ms, size=n))
    sym = rng.integers(0, len(SYMBOLS), size=n)
    spelling = sym * 4 + rng.integers(0, 4, size=n)
    agent = rng.integers(0, N_AGENTS, size=n)
    direction = np.where(rng.random(n) < 0.5, "LONG", "SHORT").astype(object)
    direction[rng.random(n) < malformed_share] = "FLAT"  # quarantined: bad_direction
    regime = rng.integers(0, 3, size=n)
    conf = np.round(rng.uniform(0.3, 0.95, n), 3)
    score = np.round(conf * rng.uniform(0.7, 1.1, n), 4)
    latency = rng.integers(300, 9_000, size=n)
    tokens_in = rng.integers(500, 6_000, size=n)
    tokens_out = rng.integers(50, 900, size=n)
    errors = (rng.random(n) < 0.03).astype(int)
    cost = np.round(tokens_in * 2.5e-6 + tokens_out * 1e-5, 6)
    # the silent runs: no signal, spread over the same interval
    silent_ms = rng.integers(start_ms, end_ms, size=n)
    silent_agent = rng.integers(0, N_AGENTS, size=n)
    ts = _iso(sig_ms)
    run_start = _iso(sig_ms - latency)
    silent_ts = _iso(silent_ms)

    signals = []
    for i in range(n):
        signals.append(
            f'{{"ts":"{ts[i]}","agent":"agent-{agent[i]:02d}","run_id":"{run_prefix}{i:06d}",'
            f'"symbol":"{_SPELL[spelling[i]]}","direction":"{direction[i]}",'
            f'"regime":"{REGIMES[regime[i]]}","confidence":{conf[i]},"score_final":{score[i]},'
            f'"model":"gpt-4o-mini","prompt_version":"v7"}}\n'
        )
    runs = []
    for i in range(n):
        runs.append(
            (
                int(sig_ms[i] - latency[i]),
                f'{{"run_id":"{run_prefix}{i:06d}","agent":"agent-{agent[i]:02d}","ts":"{run_start[i]}",'
                f'"latency_ms":{latency[i]},"tokens_in":{tokens_in[i]},"tokens_out":{tokens_out[i]},'
                f'"errors":{errors[i]},"cost_usd":{cost[i]}}}\n',
            )
        )
        runs.append(
            (
                int(silent_ms[i]),
                f'{{"run_id":"{run_prefix}s{i:06d}","agent":"agent-{silent_agent[i]:02d}",'
                f'"ts":"{silent_ts[i]}","latency_ms":{latency[i]},"tokens_in":{tokens_in[i]},'
                f'"tokens_out":0,"errors":0,"cost_usd":{cost[i]}}}\n',
            )
        )
    runs.sort(key=lambda r: r[0])
    return "".join(signals).encode(), "".join(r[1] for r in runs).encode()


def day_lines(day: date, n: int, malformed_share: float) -> tuple[bytes, bytes]:
    """One history day's signals and telemetry."""
    t0 = day_ms(day)
    return signal_lines(t0, t0 + DAY_MS, n, [7, day.toordinal()], f"h{day:%Y%m%d}-", malformed_share)


def tick_lines(
    now: datetime, n: int, malformed_share: float, window_minutes: int = 30
) -> tuple[bytes, bytes]:
    """``n`` signals timestamped in the ``window_minutes`` before ``now``, and their telemetry."""
    end = int(now.timestamp() * 1000)
    stamp = f"t{now:%Y%m%d%H%M%S%f}-"
    return signal_lines(end - window_minutes * MINUTE_MS, end, n, [11, end], stamp, malformed_share)


def append(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as handle:
        handle.write(data)


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
