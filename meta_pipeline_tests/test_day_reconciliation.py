"""One day of reconciled_trades from a warehouse, without Dagster."""

from datetime import date

import pandas as pd

from meta_pipeline import names, price_store
from meta_pipeline.day_reconciliation import BarCache, empty_rows, reconcile_day
from meta_pipeline.reconcile import RECONCILED_COLUMNS
from meta_pipeline.storage import Warehouse
from meta_pipeline_tests import market_data as md

DAY = date(2024, 3, 5)
AS_OF = pd.Timestamp("2024-03-10", tz="UTC")


def _signals(*rows):
    return pd.DataFrame(
        {
            "date": [DAY.isoformat()] * len(rows),
            "ts": pd.to_datetime([ts for ts, _ in rows], utc=True),
            "agent": "a",
            "run_id": [f"r{i}" for i in range(len(rows))],
            "symbol": "BTC",
            "instrument": "BTCUSDT",
            "direction": [side for _, side in rows],
            "regime": None,
            "confidence": 0.5,
            "score_final": 1.0,
        }
    )


def _store_bars(warehouse, day, *, error=None):
    klines = md.load_klines("BTCUSDT", day, day)
    bars = md.bars_frame("BTCUSDT", klines).assign(source="binance")
    entry = {
        "cache_version": price_store.CACHE_VERSION,
        "source": None if error else "binance",
        "present_bars": 0 if error else len(bars),
        "complete": not error,
        "error": error,
        "unpriceable": None,
        "fetched_at": "2024-03-09T00:00:00+00:00",
    }
    warehouse.write_partition(
        names.PRICE_BARS, day.isoformat(), bars.iloc[0:0] if error else bars, facts={"BTCUSDT": entry}
    )


def _reconcile(warehouse):
    return reconcile_day(
        warehouse,
        DAY,
        horizons_hours=(1, 4, 24),
        reach_days=2,
        as_of=AS_OF,
        round_trip_cost_bps=0.0,
        max_gap=pd.Timedelta(minutes=5),
        bar_cache=BarCache(warehouse),
    )


def test_a_day_without_stored_signals_is_blocked_not_an_error(tmp_path):
    result = _reconcile(Warehouse(tmp_path))
    assert result.blocked == "signals for 2024-03-05 are not materialized yet"
    assert result.rows.empty and list(result.rows.columns) == RECONCILED_COLUMNS


def test_rows_waiting_on_a_failed_day_say_so_and_heal_later(tmp_path):
    warehouse = Warehouse(tmp_path)
    warehouse.write_partition(names.SIGNALS, DAY.isoformat(), _signals(("2024-03-05T10:00:00Z", "LONG")))
    _store_bars(warehouse, DAY)
    _store_bars(warehouse, date(2024, 3, 6), error="binance: HTTP 500")
    rows = _reconcile(warehouse).rows.set_index("horizon_hours")
    assert rows.loc[1, "status"] == "matured" and rows.loc[4, "status"] == "matured"
    assert rows.loc[24, "status"] == "unpriced"
    assert rows.loc[24, "reason"].startswith("price source failure on 2024-03-06")

    _store_bars(warehouse, date(2024, 3, 6))
    _store_bars(warehouse, date(2024, 3, 7))
    healed = _reconcile(warehouse).rows
    assert set(healed["status"].astype(str)) == {"matured"}


def test_empty_rows_have_the_types_of_real_rows():
    rows = empty_rows((1, 4, 24))
    assert str(rows["ts"].dtype) == "datetime64[ns, UTC]" and str(rows["horizon_hours"].dtype) == "int64"
