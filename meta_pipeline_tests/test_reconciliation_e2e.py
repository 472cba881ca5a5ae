"""End to end: signals file → signals → price_bars (loopback Binance/Coinbase serving real klines)
→ reconciled_trades → alpha/reconciled.jsonl, over a 3-day range in ONE run.

Expected prices are computed here, independently, from the real Binance CSV files with plain
Python (csv + float arithmetic), not with the kernel.
"""

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from meta_pipeline.defs.ingestion import signals, telemetry
from meta_pipeline.defs.prices import price_bars
from meta_pipeline.defs.reconciliation import reconciled_export, reconciled_trades
from meta_pipeline_tests.fake_exchange import MARKET_DATA_DIR
from meta_pipeline_tests.pipeline import run_range, test_resources

ASSETS = [signals, telemetry, price_bars, reconciled_trades, reconciled_export]

SIGNALS = [
    # (ts as written, run_id, symbol as written, direction)
    ("2024-03-01T10:00:00Z", "r-boundary", "BTC", "LONG"),
    ("2024-03-01T10:00:30.250Z", "r-fraction", "btc-usdt", "short"),
    ("2024-03-02T01:30:00+02:00", "r-offset", "BTC/USDT", "LONG"),  # = 2024-03-01T23:30Z
    ("2024-03-02T12:34:56Z", "r-mid", "BTCUSDT", "SHORT"),
    ("2024-03-03T23:59:30Z", "r-late", "BTC-USD", "LONG"),  # priced from 2024-03-04/05 bars
    ("2024-03-02T08:00:00Z", "r-unknown", "FOO", "LONG"),
]


def _bar_opens() -> dict[int, float]:
    """open time (ms) → open, from the real daily files (plain csv)."""
    opens = {}
    for path in sorted((MARKET_DATA_DIR / "BTCUSDT").glob("BTCUSDT-1m-2024-03-0*.csv")):
        with path.open() as handle:
            for row in csv.reader(handle):
                opens[int(row[0])] = float(row[1])
    return opens


def _price_at(opens: dict[int, float], t: datetime) -> tuple[int, float] | None:
    ms = t.timestamp() * 1000
    first = int(-(-ms // 60_000) * 60_000)  # the first minute boundary >= t
    for candidate in range(first, first + 5 * 60_000 + 1, 60_000):
        if candidate in opens:
            return candidate, opens[candidate]
    return None


def _write_root(root: Path) -> None:
    (root / "alpha").mkdir(parents=True)
    (root / "telemetry").mkdir()
    with (root / "alpha" / "events.jsonl").open("w") as handle:
        for ts, run_id, symbol, direction in SIGNALS:
            handle.write(
                json.dumps(
                    {
                        "ts": ts,
                        "agent": "alpha",
                        "run_id": run_id,
                        "symbol": symbol,
                        "direction": direction,
                        "regime": "trend",
                        "confidence": 0.6,
                        "score_final": 1.5,
                        "model": "m1",
                    }
                )
                + "\n"
            )
    (root / "telemetry" / "events.jsonl").write_text("")


def _run_range(root: Path, fx, instance, start: str, end: str) -> dg.ExecuteInProcessResult:
    resources = test_resources(root, fx, round_trip_cost_bps=7.5)
    return run_range(root, fx, start, end, ASSETS, resources=resources, instance=instance)


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _read_jsonl_bytes(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines()]


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral


def test_three_day_range_in_one_run_matches_independent_prices(tmp_path, fake_exchange, instance):
    _write_root(tmp_path)
    result = _run_range(tmp_path, fake_exchange, instance, "2024-03-01", "2024-03-03")
    assert result.success
    # one run, three partitions of each asset
    materialized = [
        (e.asset_key.to_user_string(), e.partition) for e in result.get_asset_materialization_events()
    ]
    assert sorted(p for a, p in materialized if a == "reconciled_trades") == [
        "2024-03-01",
        "2024-03-02",
        "2024-03-03",
    ]
    metadata = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "reconciled_trades"
    )
    # a range run's totals are not passed off as each day's row count
    assert metadata["rows_in_run"].value == 18 and "dagster/row_count" not in metadata
    assert (metadata["matured"].value, metadata["pending"].value, metadata["unpriced"].value) == (12, 3, 3)

    exported = _read_jsonl(tmp_path / "alpha" / "reconciled.jsonl")
    opens = _bar_opens()
    expected = {}
    for ts_text, run_id, _symbol, direction in SIGNALS:
        if run_id in ("r-unknown", "r-late"):
            continue  # unpriceable; and r-late's entry is the 2024-03-04 00:00 bar, outside this run
        ts = datetime.fromisoformat(ts_text).astimezone(UTC)
        for hours in (1, 4, 24):
            entry = _price_at(opens, ts)
            exit_ = _price_at(opens, ts + timedelta(hours=hours))
            ratio = exit_[1] / entry[1]
            gross = (ratio - 1) * 1e4 if direction.upper() == "LONG" else (1 - ratio) * 1e4
            expected[(run_id, hours)] = (entry, exit_, gross)

    got = {(row["run_id"], row["horizon_hours"]): row for row in exported}
    assert set(got) == set(expected)
    for key, (entry, exit_, gross) in expected.items():
        row = got[key]
        assert row["entry_price"] == entry[1] and row["exit_price"] == exit_[1], key
        assert row["entry_time"] == datetime.fromtimestamp(entry[0] / 1000, UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        assert row["realized_pnl_bps"] == pytest.approx(gross, rel=1e-12, abs=1e-9)
        assert row["net_pnl_bps"] == pytest.approx(gross - 7.5, rel=1e-12, abs=1e-9)
        assert row["status"] == "matured" and row["instrument"] == "BTCUSDT"
        assert (row["agent"], row["regime"], row["confidence"], row["score_final"]) == (
            "alpha",
            "trend",
            0.6,
            1.5,
        )

    # the app's fields, sorted by (ts, run_id, horizon), each (signal, horizon) once
    order = [(row["ts"], row["run_id"], row["horizon_hours"]) for row in exported]
    assert order == sorted(order) and len(order) == len(set(order))
    assert got[("r-offset", 1)]["ts"] == "2024-03-01T23:30:00Z"
    assert got[("r-fraction", 4)]["ts"] == "2024-03-01T10:00:30.25Z"
    assert got[("r-fraction", 4)]["entry_time"] == "2024-03-01T10:01:00Z"
    assert got[("r-fraction", 4)]["direction"] == "SHORT" and got[("r-fraction", 4)]["symbol"] == "btc-usdt"

    # what is not exported is visible in the warehouse with a reason
    import pandas as pd

    day3 = pd.read_parquet(tmp_path / "warehouse" / "reconciled_trades" / "2024-03-03.parquet")
    late = day3[day3["run_id"] == "r-late"]
    assert list(late["status"]) == ["pending"] * 3
    assert all(r == "price_bars for 2024-03-04 not materialized yet" for r in late["reason"])
    day2 = pd.read_parquet(tmp_path / "warehouse" / "reconciled_trades" / "2024-03-02.parquet")
    unknown = day2[day2["run_id"] == "r-unknown"]
    assert list(unknown["status"]) == ["unpriced"] * 3
    assert all("unknown symbol" in r and "-1121" in r for r in unknown["reason"])


def test_rerun_is_idempotent_makes_no_request_and_later_runs_fill_pending(tmp_path, fake_exchange, instance):
    _write_root(tmp_path)
    assert _run_range(tmp_path, fake_exchange, instance, "2024-03-01", "2024-03-03").success
    first_export = (tmp_path / "alpha" / "reconciled.jsonl").read_bytes()
    first_requests = fake_exchange.count()
    assert first_requests > 0

    assert _run_range(tmp_path, fake_exchange, instance, "2024-03-01", "2024-03-03").success
    assert (tmp_path / "alpha" / "reconciled.jsonl").read_bytes() == first_export
    # complete past days, and the symbol no source lists, are read from storage: no HTTP at all
    assert fake_exchange.count() == first_requests

    # a later run covering the days the late signal reaches fills its rows in, once each
    assert _run_range(tmp_path, fake_exchange, instance, "2024-03-03", "2024-03-05").success
    exported = _read_jsonl(tmp_path / "alpha" / "reconciled.jsonl")
    keys = [(row["run_id"], row["horizon_hours"]) for row in exported]
    assert [h for r, h in keys if r == "r-late"] == [1, 4, 24] and len(keys) == len(set(keys))
    assert len(exported) == len(_read_jsonl_bytes(first_export)) + 3
    late = next(row for row in exported if (row["run_id"], row["horizon_hours"]) == ("r-late", 24))
    opens = _bar_opens()
    target = datetime(2024, 3, 4, 23, 59, 30, tzinfo=UTC)
    assert late["exit_price"] == _price_at(opens, target)[1]
    assert late["exit_time"] == "2024-03-05T00:00:00Z"
