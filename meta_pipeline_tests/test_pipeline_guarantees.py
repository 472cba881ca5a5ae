"""What the pipeline guarantees when things go wrong around it: a missing input file, an empty
history, a day whose upstream was never materialized, a writer killed mid-write, another user
reading the outputs. Each runs the real assets through Dagster against the loopback exchange."""

import json
import os
import stat
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from meta_pipeline import names
from meta_pipeline.defs.ingestion import signal_quarantine, signals, telemetry, telemetry_quarantine
from meta_pipeline.defs.prices import price_bars
from meta_pipeline.defs.reconciliation import reconciled_export, reconciled_trades
from meta_pipeline.storage import Warehouse, atomic_write_text, remove_stale_temp_files
from meta_pipeline_tests.pipeline import run_range

ASSETS = [
    signals,
    telemetry,
    signal_quarantine,
    telemetry_quarantine,
    price_bars,
    reconciled_trades,
    reconciled_export,
]
LINES = [
    ("2024-03-01T10:00:00Z", "r1", "BTC", "LONG"),
    ("2024-03-02T12:00:00Z", "r2", "BTCUSDT", "SHORT"),
    ("2024-03-03T08:30:00Z", "r3", "btc-usdt", "LONG"),
]


def _write_inputs(root: Path, lines=LINES) -> None:
    (root / "alpha").mkdir(parents=True, exist_ok=True)
    (root / "telemetry").mkdir(parents=True, exist_ok=True)
    (root / "alpha" / "events.jsonl").write_text(
        "".join(
            json.dumps({"ts": ts, "agent": "a", "run_id": run, "symbol": sym, "direction": side}) + "\n"
            for ts, run, sym, side in lines
        )
    )
    (root / "telemetry" / "events.jsonl").write_text(
        "".join(
            json.dumps({"ts": ts, "agent": "a", "run_id": run, "errors": 0}) + "\n" for ts, run, _, _ in lines
        )
    )


def _run(root: Path, fx, start: str, end: str, assets=ASSETS, **kwargs) -> dg.ExecuteInProcessResult:
    return run_range(root, fx, start, end, assets, **kwargs)


def _snapshot(root: Path) -> dict[str, bytes]:
    files = [*(root / "warehouse").rglob("*.parquet"), root / "alpha" / "reconciled.jsonl"]
    return {str(p.relative_to(root)): p.read_bytes() for p in files if p.exists()}


def _metadata(result, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)][:1]
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.mark.parametrize("missing", ["alpha/events.jsonl", "telemetry/events.jsonl"])
def test_a_missing_input_file_is_an_error_that_changes_nothing_stored(tmp_path, fake_exchange, missing):
    _write_inputs(tmp_path)
    assert _run(tmp_path, fake_exchange, "2024-03-01", "2024-03-05").success
    before = _snapshot(tmp_path)
    assert len(before["alpha/reconciled.jsonl"].splitlines()) == 9  # 3 signals × 3 horizons

    moved = tmp_path / (missing + ".moved")
    os.rename(tmp_path / missing, moved)
    result = _run(tmp_path, fake_exchange, "2024-03-01", "2024-03-05", raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failures and str(tmp_path / missing) in failures[0].event_specific_data.error.message
    assert _snapshot(tmp_path) == before  # nothing stored was touched

    os.rename(moved, tmp_path / missing)  # once the file is back, everything is as it was
    before_requests = fake_exchange.count()
    assert _run(tmp_path, fake_exchange, "2024-03-01", "2024-03-05").success
    assert fake_exchange.count() == before_requests  # the cache was not poisoned: nothing refetched
    assert _snapshot(tmp_path)["alpha/reconciled.jsonl"] == before["alpha/reconciled.jsonl"]


def test_a_fresh_root_with_no_inputs_succeeds_and_says_no_signals_yet(tmp_path, fake_exchange):
    result = _run(tmp_path, fake_exchange, "2024-03-01", "2024-03-03")
    assert result.success
    assert "no signals yet" in _metadata(result, names.SIGNALS)["note"]
    assert (tmp_path / "alpha" / "reconciled.jsonl").read_text() == ""
    assert fake_exchange.count() == 0


def test_an_empty_input_file_means_no_signals(tmp_path, fake_exchange):
    _write_inputs(tmp_path, lines=[])
    result = _run(tmp_path, fake_exchange, "2024-03-01", "2024-03-03")
    assert result.success and _metadata(result, names.RECONCILED_TRADES)["matured"] == 0


def test_a_range_whose_first_day_has_no_signals_materialized_completes_the_other_days(
    tmp_path, fake_exchange
):
    """What a UI backfill does after Dagster widens the range: reconciled_trades over 03-01..03-05
    when `signals` was materialized only for 03-02..03-05. Day 03-01 is written as blocked, with its
    reason; the other days and the export are written; Dagster and the disk agree."""
    _write_inputs(tmp_path)
    assert _run(tmp_path, fake_exchange, "2024-03-02", "2024-03-05", assets=[signals, price_bars]).success
    assert _run(tmp_path, fake_exchange, "2024-03-01", "2024-03-01", assets=[price_bars]).success
    result = _run(
        tmp_path, fake_exchange, "2024-03-01", "2024-03-05", assets=[reconciled_trades, reconciled_export]
    )
    assert result.success
    metadata = _metadata(result, names.RECONCILED_TRADES)
    assert (
        metadata["blocked_days_in_run"] == 1
        and "signals for 2024-03-01 are not materialized" in metadata["blocked_in_run"]
    )
    warehouse = Warehouse(tmp_path / "warehouse")
    assert warehouse.read_partition_facts(names.RECONCILED_TRADES, "2024-03-01")["blocked"]
    assert len(warehouse.read_partition(names.RECONCILED_TRADES, "2024-03-01")) == 0
    assert warehouse.read_partition_facts(names.RECONCILED_TRADES, "2024-03-02")["blocked"] is None
    exported = [
        json.loads(line) for line in (tmp_path / "alpha" / "reconciled.jsonl").read_text().splitlines()
    ]
    assert {row["run_id"] for row in exported} == {"r2", "r3"}
    materialized = {
        e.materialization.partition
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(names.RECONCILED_TRADES)
    }
    assert materialized == set(warehouse.stored_keys(names.RECONCILED_TRADES))

    # once signals exist for the blocked day, a re-run fills it in: same as one run over the range
    assert _run(tmp_path, fake_exchange, "2024-03-01", "2024-03-01", assets=[signals, price_bars]).success
    assert _run(
        tmp_path, fake_exchange, "2024-03-01", "2024-03-05", assets=[reconciled_trades, reconciled_export]
    ).success
    exported = [
        json.loads(line) for line in (tmp_path / "alpha" / "reconciled.jsonl").read_text().splitlines()
    ]
    assert {row["run_id"] for row in exported} == {"r1", "r2", "r3"} and len(exported) == 9


def test_outputs_get_the_permissions_of_a_normal_write(tmp_path, fake_exchange):
    _write_inputs(tmp_path)
    old = os.umask(0o022)
    try:
        assert _run(tmp_path, fake_exchange, "2024-03-01", "2024-03-03").success
    finally:
        os.umask(old)
    outputs = [tmp_path / "alpha" / "reconciled.jsonl", *(tmp_path / "warehouse").rglob("*.parquet")]
    modes = {stat.S_IMODE(p.stat().st_mode) for p in outputs}
    assert modes == {0o644}, {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in outputs}


def test_temp_files_of_dead_writers_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "reconciled.jsonl"
    dead = tmp_path / ".reconciled.jsonl.999999999.abc123.tmp"  # no such process
    dead.write_bytes(b"x" * 1000)
    alive = tmp_path / f".reconciled.jsonl.{os.getppid()}.def456.tmp"  # a live writer's file stays
    alive.write_bytes(b"y")
    atomic_write_text(target, "done\n")
    assert not dead.exists() and alive.exists() and target.read_text() == "done\n"
    assert remove_stale_temp_files(tmp_path) == []


def test_no_output_ever_holds_a_non_finite_number(tmp_path):
    from meta_pipeline.export import EXPORT_FIELDS
    from meta_pipeline.jsonl import encode_rows

    row = {
        "ts": pd.Timestamp("2024-03-01T10:00Z"),
        "entry_time": pd.Timestamp("2024-03-01T10:00Z"),
        "exit_time": pd.Timestamp("2024-03-01T11:00Z"),
        "horizon_hours": 1,
        "realized_pnl_bps": float("inf"),
        "status": "matured",
    }
    frame = pd.DataFrame([row]).reindex(columns=list(row) + ["agent"])
    for column in ("agent", "run_id", "symbol", "direction", "entry_price", "exit_price", "regime"):
        frame[column] = None
    for column in ("confidence", "score_final", "instrument", "net_pnl_bps"):
        frame[column] = None
    with pytest.raises(ValueError):
        encode_rows(frame, EXPORT_FIELDS)


def _exported(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "alpha" / "reconciled.jsonl").read_text().splitlines()]


def _rows(root: Path, day: str) -> pd.DataFrame:
    return Warehouse(root / "warehouse").read_partition(names.RECONCILED_TRADES, day)


def test_bars_that_hold_no_trade_are_not_prices(tmp_path, fake_exchange, market_bars):
    """A market that stops trading at 02:59: its later bars are flat at the last trade with volume 0.
    A LONG at 02:00 and a SHORT at 12:00 are unpriced on every horizon, never matured at a stale price."""
    day = market_bars[(market_bars["instrument"] == "BTCUSDT") & (market_bars["open_time"] >= "2024-03-05")]
    idle = day[day["open_time"] < "2024-03-08"].copy()
    after = idle["open_time"] >= pd.Timestamp("2024-03-05T02:59:00Z")
    last_price = idle.loc[~after, "close"].iloc[-1]
    idle.loc[after, ["open", "high", "low", "close"]] = last_price
    idle.loc[after, "volume"] = 0.0
    idle["trades"] = (~after).astype(int) * 10
    fake_exchange.add_bars(idle)
    fake_exchange.delist("BTCUSDT", api="coinbase")
    _write_inputs(
        tmp_path,
        [("2024-03-05T02:00:00Z", "long", "BTC", "LONG"), ("2024-03-05T12:00:00Z", "short", "BTC", "SHORT")],
    )
    assert _run(tmp_path, fake_exchange, "2024-03-05", "2024-03-07").success
    rows = _rows(tmp_path, "2024-03-05")
    assert set(rows["status"].astype(str)) == {"unpriced"}, rows[
        ["run_id", "horizon_hours", "status", "reason"]
    ]
    assert _exported(tmp_path) == []
    facts = Warehouse(tmp_path / "warehouse").read_partition_facts(names.PRICE_BARS, "2024-03-05")["BTCUSDT"]
    assert facts["complete"] is False and facts["dropped_bars"]["no_trade"] == 1440 - 179


def test_impossible_exchange_prices_never_reach_pnl(tmp_path, fake_exchange, market_bars):
    day = market_bars[(market_bars["instrument"] == "BTCUSDT") & (market_bars["open_time"] >= "2024-03-05")]
    bad = day[day["open_time"] < "2024-03-08"].copy()
    at = bad["open_time"].isin(
        pd.to_datetime(["2024-03-05T10:00Z", "2024-03-05T11:00Z", "2024-03-06T10:00Z"])
    )
    bad.loc[at, ["open", "high", "low", "close"]] = [
        [0.0, 0.0, 0.0, 0.0],
        [-5.0, 1.0, -5.0, 1.0],
        [1e300] * 4,
    ]
    fake_exchange.add_bars(bad)
    _write_inputs(
        tmp_path,
        [("2024-03-05T10:00:00Z", "zero", "BTC", "LONG"), ("2024-03-05T11:00:00Z", "neg", "BTC", "SHORT")],
    )
    assert _run(tmp_path, fake_exchange, "2024-03-05", "2024-03-07").success
    rows = _rows(tmp_path, "2024-03-05")
    matured = rows[rows["status"].astype(str) == "matured"]
    # the bad minute is a gap: the price comes from the next good bar, 10:01 / 11:01
    assert set(matured["entry_time"].dt.strftime("%H:%M")) == {"10:01", "11:01"}
    assert matured["realized_pnl_bps"].abs().max() < 1000
    text = (tmp_path / "alpha" / "reconciled.jsonl").read_text()
    assert "Infinity" not in text and "NaN" not in text
    facts = Warehouse(tmp_path / "warehouse").read_partition_facts(names.PRICE_BARS, "2024-03-05")["BTCUSDT"]
    assert sum(facts["dropped_bars"].values()) == 2 and facts["present_bars"] == 1438


def test_a_signal_one_nanosecond_after_the_minute_is_priced_from_the_next_bar(
    tmp_path, fake_exchange, market_bars
):
    _write_inputs(tmp_path, [("2024-03-05T10:00:00.000000001Z", "ns", "BTC", "LONG")])
    assert _run(tmp_path, fake_exchange, "2024-03-05", "2024-03-07").success
    rows = _rows(tmp_path, "2024-03-05")
    assert rows["ts"].iloc[0] == pd.Timestamp("2024-03-05T10:00:00.000000001Z")
    assert set(rows["entry_time"].dt.strftime("%H:%M")) == {"10:01"}  # 10:00 opened before the signal
    btc = market_bars[market_bars["instrument"] == "BTCUSDT"].set_index("open_time")["open"]
    assert rows["entry_price"].iloc[0] == btc[pd.Timestamp("2024-03-05T10:01Z")]


def test_a_range_runs_metadata_per_partition_does_not_grow_with_the_range(tmp_path, fake_exchange):
    """Each partition of a range run stores the run's metadata: it must stay a bounded size, so the
    event log grows with the number of partitions, not with its square."""
    lines = [(f"2024-03-{d:02d}T10:00:00Z", f"r{d}", "BTC", "LONG") for d in range(1, 21)]

    def largest_event(root, last_day):
        _write_inputs(root, lines)
        result = _run(root, fake_exchange, "2024-03-01", last_day)
        sizes = [
            len(json.dumps({k: str(v.value) for k, v in e.materialization.metadata.items()}))
            for e in result.get_asset_materialization_events()
        ]
        return max(sizes)

    short = largest_event(tmp_path / "short", "2024-03-05")
    long = largest_event(tmp_path / "long", "2024-05-01")  # 62 days
    assert long < 1.6 * short and long < 20_000, (short, long)


def test_a_day_that_cannot_be_reconciled_is_written_blocked_and_the_others_finish(
    tmp_path, fake_exchange, monkeypatch
):
    from meta_pipeline.defs import reconciliation

    _write_inputs(tmp_path)
    assert _run(tmp_path, fake_exchange, "2024-03-01", "2024-03-05", assets=ASSETS[:5]).success
    real = reconciliation.reconcile_day

    def broken_on_the_second(warehouse, day, **kwargs):
        if day.isoformat() == "2024-03-02":
            raise RuntimeError("disk hiccup")
        return real(warehouse, day, **kwargs)

    monkeypatch.setattr(reconciliation, "reconcile_day", broken_on_the_second)
    result = _run(
        tmp_path, fake_exchange, "2024-03-01", "2024-03-05", assets=[reconciled_trades, reconciled_export]
    )
    assert result.success
    warehouse = Warehouse(tmp_path / "warehouse")
    assert (
        warehouse.read_partition_facts(names.RECONCILED_TRADES, "2024-03-02")["blocked"]
        == "error: RuntimeError: disk hiccup"
    )
    assert {row["run_id"] for row in _exported(tmp_path)} == {"r1", "r3"}
