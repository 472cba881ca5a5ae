"""A loopback fake exchange that serves real 1-minute bars through the Binance AND Coinbase APIs.

It is a real HTTP server (pytest-httpserver's ``HTTPServer``, threaded, on 127.0.0.1), so clients go
through sockets, connection pools, timeouts and retries exactly as in production. No internet.

Endpoints (one server, two path prefixes; pass the prefixed URLs as base URLs):

- ``{fx.binance_url}/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime=&endTime=&limit=``:
  Binance semantics: ``startTime <= open_time <= endTime`` (both inclusive), oldest first, at most
  ``limit`` (default 500, > 1000 → 400 code -1130); only ``startTime`` → the first ``limit`` from it;
  only ``endTime`` or neither → the most recent ``limit``. Rows are full 12-field klines with string
  prices; field 8 is the trade count: the bars frame's ``trades`` column where it has one (the real
  counts of the 12-column dumps), else a stand-in of 1 for a bar with volume and 0 for one without
  (real Binance always reports the count; the 7-column dumps do not). Unknown symbol → 400
  ``{"code": -1121, "msg": "Invalid symbol."}``.
- ``{fx.coinbase_url}/products/BTC-USD/candles?granularity=60&start=ISO&end=ISO``: both ends
  inclusive, newest first, ``[time_s, low, high, open, close, volume]``, more than 300 candles → 400,
  unknown product → 404 ``{"message": "NotFound"}``; minutes passed to :meth:`drop_coinbase_minutes`
  (or a fraction with ``coinbase_drop_fraction``) are absent, like Coinbase minutes without trades.

Faults: :meth:`FakeExchange.inject` queues a fault for the next matching request(s): ``"429"`` (with
``retry_after``), ``"500"``/``"502"``/``"503"``/``"504"``, ``"418"``, ``"timeout"`` (sleeps ``delay``
seconds, longer than the client's read timeout, then answers normally to nobody), ``"truncated"``
(valid HTTP, JSON cut in half), ``"short_read"`` (Content-Length larger than the body, then the
connection closes), ``"wrong_shape"`` (200 with a JSON object), ``"empty"`` (200 ``[]``),
``"invalid_symbol"`` (Binance -1121 / Coinbase 404). ``skip=n`` lets n matching requests through first.

Altered data: :meth:`FakeExchange.add_bars` serves any bars frame as given, including impossible
prices (0, negative, 1e300, inf, NaN), off-minute open times, idle-minute bars (volume 0 or
``trades`` 0) and, with ``keep_duplicates=True``, two rows for one minute in one response.

Every API request is logged (:attr:`FakeExchange.log`, :meth:`count`); ``latency`` adds a sleep to
every request (for benchmarks).

Pytest use — the fixtures live in this module. In a test module (or a future conftest.py)::

    # conftest.py registers this module: pytest_plugins = ["meta_pipeline_tests.fake_exchange"]

    def test_x(fake_exchange):            # function-scoped: state reset before each test
        src = BinanceSource(fake_exchange.binance_url, backoff_factor=0.001)
        ...

``fake_exchange`` is backed by the session-scoped ``fake_exchange_server`` (one server for the whole
run) loaded with every daily file of ``market_bars`` (the real klines committed under
``meta_pipeline_tests/klines/``). Outside pytest::

    with FakeExchange(bars, latency=0.05) as fx:
        ...

(PYTEST_DONT_REWRITE: test modules import names from here before pytest registers it as a plugin.)
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from meta_pipeline.prices.files import read_kline_rows
from meta_pipeline.prices.model import times_ns
from meta_pipeline_tests.market_data import MARKET_DATA

MINUTE_MS = 60_000
FAULT_KINDS = frozenset(
    {
        "429",
        "500",
        "502",
        "503",
        "504",
        "418",
        "timeout",
        "truncated",
        "short_read",
        "wrong_shape",
        "empty",
        "invalid_symbol",
    }
)
MARKET_DATA_DIR = MARKET_DATA  # the real klines committed under meta_pipeline_tests/klines/
_PRODUCT = re.compile(r"^/coinbase/products/([^/]+)/candles$")


def load_market_data(
    directory: str | Path = MARKET_DATA_DIR, symbols: Iterable[str] | None = None
) -> pd.DataFrame:
    """Every daily file ``<dir>/<SYMBOL>/<SYMBOL>-1m-*.csv`` as one bars frame (source ``"files"``) plus a
    ``trades`` column (the file's trade count, NaN for the 7-column files); later row wins per minute."""
    directory = Path(directory)
    wanted = set(symbols) if symbols is not None else None
    frames = []
    for sym_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
        if wanted is not None and sym_dir.name not in wanted:
            continue
        for path in sorted(sym_dir.glob(f"{sym_dir.name}-1m-*.csv")):
            rows = read_kline_rows(path, instrument=sym_dir.name)
            frames.append(rows.drop_duplicates(["instrument", "open_time"], keep="last"))
    if not frames:
        raise FileNotFoundError(f"no daily kline files under {directory}")
    return pd.concat(frames, ignore_index=True).sort_values(["instrument", "open_time"], ignore_index=True)


def _fmt(x: float) -> str:
    s = f"{x:.8f}"
    return s if float(s) == x else repr(float(x))


@dataclass
class _Series:
    """One instrument's bars, pre-rendered for both APIs."""

    open_ms: np.ndarray
    binance_rows: list[list[Any]]
    coinbase_rows: list[list[Any]]

    @classmethod
    def from_bars(cls, bars: pd.DataFrame, keep_duplicates: bool = False) -> _Series:
        bars = bars.sort_values("open_time", kind="stable")
        if not keep_duplicates:
            bars = bars.drop_duplicates("open_time", keep="last")
        ns = times_ns(bars["open_time"])
        open_ms = ns // 1_000_000
        o, h, lo, c, v = (
            bars[k].to_numpy(dtype=np.float64) for k in ("open", "high", "low", "close", "volume")
        )
        with np.errstate(invalid="ignore"):
            stand_in = np.where(v > 0, 1.0, 0.0)
        if "trades" in bars.columns:
            known = bars["trades"].to_numpy(dtype=np.float64)
            trades = np.where(np.isnan(known), stand_in, known)
        else:
            trades = stand_in
        binance_rows = []
        coinbase_rows = []
        for i in range(len(open_ms)):
            t = int(open_ms[i])
            quote = v[i] * c[i]
            binance_rows.append(
                [
                    t,
                    _fmt(o[i]),
                    _fmt(h[i]),
                    _fmt(lo[i]),
                    _fmt(c[i]),
                    _fmt(v[i]),
                    t + MINUTE_MS - 1,
                    f"{quote:.8f}",
                    int(trades[i]),
                    "0.00000000",
                    "0.00000000",
                    "0",
                ]
            )
            coinbase_rows.append(
                [t // 1000, float(lo[i]), float(h[i]), float(o[i]), float(c[i]), float(v[i])]
            )
        return cls(open_ms.astype(np.int64), binance_rows, coinbase_rows)


@dataclass
class Fault:
    kind: str
    api: str | None = None  # "binance", "coinbase" or None for both
    symbol: str | None = None  # instrument key (BTCUSDT); matches the Coinbase product too
    times: int = 1
    skip: int = 0
    retry_after: float | None = None
    delay: float = 1.0
    match: Callable[[LoggedRequest], bool] | None = None


@dataclass
class LoggedRequest:
    api: str
    path: str
    symbol: str | None  # instrument key (BTCUSDT) for both APIs
    params: dict[str, str]
    at: float
    fault: str | None = None
    status: int | None = None
    rows: int | None = None


@dataclass(eq=False)
class FakeExchange:
    """See the module docstring. ``bars``: a bars frame (with ``instrument``) served by both APIs."""

    bars: pd.DataFrame | None = field(default=None, repr=False)
    latency: float = 0.0
    host: str = "127.0.0.1"
    port: int = 0
    coinbase_drop_fraction: float = 0.0
    coinbase_drop_seed: int = 0
    log: list[LoggedRequest] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._base: dict[str, _Series] = {}
        if self.bars is not None:
            self._base = self._index(self.bars)
        self._base_latency = self.latency
        self._base_drop_fraction = self.coinbase_drop_fraction
        self._data: dict[str, _Series] = dict(self._base)
        self._faults: list[Fault] = []
        self._delisted: dict[str, set[str]] = {"binance": set(), "coinbase": set()}
        self._cb_dropped: dict[str, set[int]] = {}
        self.server = HTTPServer(host=self.host, port=self.port, threaded=True)

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> FakeExchange:
        self.server.expect_request(
            re.compile(r"^/binance/api/v3/klines$"), method="GET"
        ).respond_with_handler(self._binance)
        self.server.expect_request(_PRODUCT, method="GET").respond_with_handler(self._coinbase)
        self.server.start()
        return self

    def stop(self) -> None:
        if self.server.is_running():
            self.server.clear()
            self.server.stop()

    def __enter__(self) -> FakeExchange:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.server.port}"

    @property
    def binance_url(self) -> str:
        return f"{self.url}/binance"

    @property
    def coinbase_url(self) -> str:
        return f"{self.url}/coinbase"

    def reset(self) -> None:
        """Back to the constructor's state: bars, latency; no faults, delistings, drops or log.
        A request still being served from before the reset (a client that gave up while the server
        slept) can no longer take a fault injected after it."""
        with self._lock:
            self._generation = getattr(self, "_generation", 0) + 1
            self._data = dict(self._base)
            self._faults.clear()
            self._delisted = {"binance": set(), "coinbase": set()}
            self._cb_dropped = {}
            self.log.clear()
            self.latency = self._base_latency
            self.coinbase_drop_fraction = self._base_drop_fraction
        self.server.clear_log()

    # ---------------------------------------------------------------------------------- data control
    @staticmethod
    def _index(bars: pd.DataFrame, keep_duplicates: bool = False) -> dict[str, _Series]:
        return {
            str(sym): _Series.from_bars(g, keep_duplicates)
            for sym, g in bars.groupby("instrument", sort=True)
        }

    def add_bars(self, bars: pd.DataFrame, *, keep_duplicates: bool = False) -> None:
        """Serve these bars (replacing any bars of the same instruments) until :meth:`reset`.

        Values are served as given (no check), so tests can send impossible or off-minute bars; an
        optional ``trades`` column sets Binance's trade count. ``keep_duplicates=True`` serves every row
        of a minute given twice (both in one response); otherwise the later row wins."""
        with self._lock:
            self._data.update(self._index(bars, keep_duplicates))

    def remove_instrument(self, instrument: str) -> None:
        with self._lock:
            self._data.pop(instrument, None)

    def delist(self, instrument: str, api: str | None = None) -> None:
        """Answer "not listed" for ``instrument`` on one API (or both)."""
        with self._lock:
            for a in [api] if api else ["binance", "coinbase"]:
                self._delisted[a].add(instrument)

    def drop_coinbase_minutes(self, instrument: str, open_times: Iterable[pd.Timestamp | int]) -> None:
        """Coinbase will not return these minutes (no trades), as if absent."""
        ms = set()
        for t in open_times:
            ms.add(int(t) if isinstance(t, int | np.integer) else pd.Timestamp(t).value // 1_000_000)
        with self._lock:
            self._cb_dropped.setdefault(instrument, set()).update(ms)

    # ----------------------------------------------------------------------------------------- faults
    def inject(
        self,
        kind: str,
        *,
        api: str | None = None,
        symbol: str | None = None,
        times: int = 1,
        skip: int = 0,
        retry_after: float | None = None,
        delay: float = 1.0,
        match: Callable[[LoggedRequest], bool] | None = None,
    ) -> Fault:
        """Queue a fault for the next ``times`` matching requests (after letting ``skip`` through)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; choose from {sorted(FAULT_KINDS)}")
        if api not in (None, "binance", "coinbase"):
            raise ValueError(f"api must be binance, coinbase or None, got {api!r}")
        fault = Fault(kind, api, symbol, times, skip, retry_after, delay, match)
        with self._lock:
            self._faults.append(fault)
        return fault

    def pending_faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def _take_fault(self, req: LoggedRequest, generation: int = 0) -> Fault | None:
        with self._lock:
            if generation != getattr(self, "_generation", 0):
                return None  # arrived before a reset: the faults now queued are another test's
            for fault in self._faults:
                if fault.api not in (None, req.api):
                    continue
                if fault.symbol is not None and fault.symbol != req.symbol:
                    continue
                if fault.match is not None and not fault.match(req):
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                    return None
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    # ------------------------------------------------------------------------------------ request log
    def requests(self, api: str | None = None, symbol: str | None = None) -> list[LoggedRequest]:
        with self._lock:
            return [
                r
                for r in self.log
                if (api is None or r.api == api) and (symbol is None or r.symbol == symbol)
            ]

    def count(self, api: str | None = None, symbol: str | None = None) -> int:
        """Requests received (every attempt, faulted or not)."""
        return len(self.requests(api, symbol))

    def counts(self) -> Counter[tuple[str, str | None]]:
        """Requests per (api, symbol)."""
        with self._lock:
            return Counter((r.api, r.symbol) for r in self.log)

    # -------------------------------------------------------------------------------------- handlers
    def _record(self, api: str, request: Request, symbol: str | None) -> LoggedRequest:
        rec = LoggedRequest(api, request.path, symbol, dict(request.args.items()), time.time())
        with self._lock:
            self.log.append(rec)
        return rec

    def _serve(self, api: str, request: Request, symbol: str | None, payload_of) -> Response:
        """What both APIs share: log, latency, injected faults, then the real payload."""
        generation = getattr(self, "_generation", 0)
        rec = self._record(api, request, symbol)
        if self.latency:
            time.sleep(self.latency)
        fault = self._take_fault(rec, generation)
        rec.fault = fault.kind if fault else None
        if fault is not None and fault.kind not in ("timeout", "truncated", "short_read"):
            return self._fault_response(rec, fault)
        status, payload = payload_of(request, symbol)
        rec.status = status
        rec.rows = len(payload) if isinstance(payload, list) else None
        return self._deliver(payload, status, fault)

    def _binance(self, request: Request) -> Response:
        return self._serve("binance", request, request.args.get("symbol"), self._binance_payload)

    def _binance_payload(self, request: Request, symbol: str | None) -> tuple[int, Any]:
        args = request.args
        if not symbol:
            return 400, {
                "code": -1102,
                "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
            }
        if args.get("interval") != "1m":
            return 400, {"code": -1120, "msg": "Invalid interval."}
        series = self._data.get(symbol)
        if series is None or symbol in self._delisted["binance"]:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        try:
            limit = int(args.get("limit", 500))
            start = int(args["startTime"]) if "startTime" in args else None
            end = int(args["endTime"]) if "endTime" in args else None
        except ValueError:
            return 400, {"code": -1100, "msg": "Illegal characters found in a parameter."}
        if not 1 <= limit <= 1000:
            return 400, {"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."}
        t = series.open_ms
        lo = int(np.searchsorted(t, start, "left")) if start is not None else 0
        hi = int(np.searchsorted(t, end, "right")) if end is not None else len(t)
        if start is not None:
            hi = min(hi, lo + limit)
        else:
            lo = max(lo, hi - limit)
        return 200, series.binance_rows[lo:hi] if hi > lo else []

    def _coinbase(self, request: Request) -> Response:
        m = _PRODUCT.match(request.path)
        product = m.group(1) if m else ""
        base, _, quote = product.partition("-")
        symbol = f"{base}USDT" if quote == "USD" and base else None
        return self._serve("coinbase", request, symbol, self._coinbase_payload)

    def _coinbase_payload(self, request: Request, symbol: str | None) -> tuple[int, Any]:
        series = self._data.get(symbol) if symbol else None
        if series is None or symbol in self._delisted["coinbase"]:
            return 404, {"message": "NotFound"}
        args = request.args
        if args.get("granularity", "60") != "60":
            return 400, {"message": "Unsupported granularity"}
        try:
            start = pd.Timestamp(args["start"]) if "start" in args else None
            end = pd.Timestamp(args["end"]) if "end" in args else None
        except (ValueError, KeyError):
            return 400, {"message": "Invalid start or end"}
        t = series.open_ms
        latest_ms = int(t[-1]) if len(t) else 0
        end_ms = latest_ms if end is None else _utc(end).value // 1_000_000
        start_ms = _utc(start).value // 1_000_000 if start is not None else end_ms - 299 * MINUTE_MS
        start_ms = -(-start_ms // MINUTE_MS) * MINUTE_MS  # Coinbase aligns to the granularity
        if end_ms < start_ms:
            return 400, {"message": "start must be before end"}
        if (end_ms - start_ms) // MINUTE_MS + 1 > 300:
            return 400, {
                "message": "granularity too small for the requested time range. Count of aggregations requested "
                "exceeds 300"
            }
        lo = int(np.searchsorted(t, start_ms, "left"))
        hi = int(np.searchsorted(t, end_ms, "right"))
        dropped = self._cb_dropped.get(symbol or "", set())
        rows = [r for i, r in enumerate(series.coinbase_rows[lo:hi], lo) if int(t[i]) not in dropped]
        if self.coinbase_drop_fraction > 0:
            rng = np.random.default_rng(self.coinbase_drop_seed)
            keep = rng.random(len(t)) >= self.coinbase_drop_fraction
            rows = [r for r in rows if keep[int(np.searchsorted(t, r[0] * 1000))]]
        return 200, rows[::-1]  # newest first

    def _fault_response(self, rec: LoggedRequest, fault: Fault) -> Response:
        binance = rec.api == "binance"
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = (
                str(int(fault.retry_after))
                if float(fault.retry_after).is_integer()
                else str(fault.retry_after)
            )
        if fault.kind == "429":
            body = (
                {"code": -1003, "msg": "Too many requests."}
                if binance
                else {"message": "Slow rate limit exceeded"}
            )
            status = 429
        elif fault.kind == "418":
            body = (
                {"code": -1003, "msg": "Way too many requests; IP banned until 1700000000000."}
                if binance
                else {"message": "I'm a teapot"}
            )
            status = 418
        elif fault.kind in ("500", "502", "503", "504"):
            status = int(fault.kind)
            body = (
                {"code": -1001, "msg": "Internal error."} if binance else {"message": "Internal server error"}
            )
        elif fault.kind == "empty":
            status, body = 200, []
        elif fault.kind == "wrong_shape":
            status, body = 200, {"unexpected": "object", "data": [[1, 2]]}
        elif fault.kind == "invalid_symbol":
            status, body = (
                (400, {"code": -1121, "msg": "Invalid symbol."})
                if binance
                else (404, {"message": "NotFound"})
            )
        else:  # pragma: no cover - guarded by inject()
            raise AssertionError(fault.kind)
        rec.status = status
        rec.rows = len(body) if isinstance(body, list) else None
        return Response(json.dumps(body), status=status, headers=headers, content_type="application/json")

    def _deliver(self, payload: Any, status: int, fault: Fault | None) -> Response:
        data = json.dumps(payload, separators=(",", ":")).encode()
        if fault is None:
            return Response(data, status=status, content_type="application/json")
        if fault.kind == "timeout":
            time.sleep(fault.delay)  # the client has given up by now; it gets the answer of nobody
            return Response(data, status=status, content_type="application/json")
        if fault.kind == "truncated":
            cut = data[: max(1, len(data) // 2)]
            return Response(cut, status=status, content_type="application/json")
        # short_read: promise the full body, send half, close the connection.
        resp = Response(data[: max(1, len(data) // 2)], status=status, content_type="application/json")
        resp.headers["Content-Length"] = str(len(data))
        resp.headers["Connection"] = "close"
        return resp


def _utc(t: pd.Timestamp) -> pd.Timestamp:
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def market_bars() -> pd.DataFrame:
    """All real daily klines under meta_pipeline_tests/klines (BTCUSDT 2024 + 2025, ETHUSDT 2025)."""
    return load_market_data(MARKET_DATA_DIR)


@pytest.fixture(scope="session")
def fake_exchange_server(market_bars: pd.DataFrame) -> Iterable[FakeExchange]:
    """One threaded loopback fake exchange for the whole test session."""
    fx = FakeExchange(market_bars)
    fx.start()
    try:
        yield fx
    finally:
        fx.stop()


@pytest.fixture
def fake_exchange(fake_exchange_server: FakeExchange) -> Iterable[FakeExchange]:
    """The session's fake exchange, reset (no faults, empty log, original bars) for this test."""
    fake_exchange_server.reset()
    yield fake_exchange_server
    fake_exchange_server.reset()
