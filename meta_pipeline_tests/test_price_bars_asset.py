"""The price_bars asset: which instruments a day needs, refetching unsettled days, keeping what it
has when a refetch fails."""

import json

import pandas as pd

from meta_pipeline.defs.ingestion import signals
from meta_pipeline.defs.prices import price_bars
from meta_pipeline.storage import Warehouse
from meta_pipeline_tests.pipeline import run_range, test_resources

DAY = "2024-03-05"


def _root(tmp_path, lines):
    (tmp_path / "alpha").mkdir()
    (tmp_path / "alpha" / "events.jsonl").write_text(
        "".join(
            json.dumps({"ts": ts, "agent": "a", "run_id": f"r{i}", "symbol": sym, "direction": "LONG"}) + "\n"
            for i, (ts, sym) in enumerate(lines)
        )
    )
    return tmp_path


def _materialize(root, fx, start=DAY, end=DAY):
    resources = test_resources(root, fx, max_retries=1, read_timeout_seconds=2)
    return run_range(root, fx, start, end, [signals, price_bars], resources=resources)


def _metadata(result, key):
    [event] = [
        e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "price_bars"
    ][:1]
    return event.materialization.metadata[key].value


def test_a_day_holds_bars_for_signals_whose_horizons_reach_it(tmp_path, fake_exchange):
    # a signal on 03-04 late at night reaches 03-05 (24h) and 03-06 (24h + 5 min after midnight)
    root = _root(tmp_path, [("2024-03-04T23:59:30Z", "BTC"), ("2024-03-01T10:00:00Z", "BTC")])
    assert _materialize(root, fake_exchange, "2024-03-01", "2024-03-07").success
    warehouse = Warehouse(root / "warehouse")
    counts = {k: len(warehouse.read_partition("price_bars", k)) for k in warehouse.stored_keys("price_bars")}
    # 03-01 (own signal), 03-02/03 (reached from 03-01), 03-04 (own), 03-05/06 (reached from 03-04)
    assert counts == {
        "2024-03-01": 1440,
        "2024-03-02": 1440,
        "2024-03-03": 1440,
        "2024-03-04": 1440,
        "2024-03-05": 1440,
        "2024-03-06": 1440,
        "2024-03-07": 0,
    }
    assert fake_exchange.count() == 6 * 2  # two klines pages per needed symbol-day, none for 03-07
    sidecar = warehouse.read_partition_facts("price_bars", DAY)
    assert sidecar["BTCUSDT"]["source"] == "binance" and sidecar["BTCUSDT"]["complete"] is True
    assert sidecar["BTCUSDT"]["requests"] == 2


def test_an_unsettled_day_is_fetched_again_and_kept_when_the_refetch_fails(tmp_path, fake_exchange):
    root = _root(tmp_path, [("2024-03-05T10:00:00Z", "BTC")])
    warehouse = Warehouse(root / "warehouse")
    assert _materialize(root, fake_exchange).success
    full = warehouse.read_partition("price_bars", DAY)
    # pretend an earlier run fetched it during the day, at 12:00, holding only the morning
    morning = full[full["open_time"] < pd.Timestamp(f"{DAY} 12:00", tz="UTC")]
    sidecar = warehouse.read_partition_facts("price_bars", DAY)
    sidecar["BTCUSDT"].update(fetched_at=f"{DAY}T12:00:00+00:00", complete=False, present_bars=len(morning))
    warehouse.write_partition("price_bars", DAY, morning, facts=sidecar)

    fake_exchange.inject("500", times=50)  # both exchanges down
    before = fake_exchange.count()
    result = _materialize(root, fake_exchange)
    assert result.success and fake_exchange.count() > before  # it did try
    assert len(warehouse.read_partition("price_bars", DAY)) == len(morning)  # nothing lost
    assert (
        warehouse.read_partition_facts("price_bars", DAY)["BTCUSDT"]["fetched_at"] == f"{DAY}T12:00:00+00:00"
    )
    assert "kept (refetch failed)" in _metadata(result, "symbol_days_table")

    fake_exchange.reset()
    assert _materialize(root, fake_exchange).success
    assert len(warehouse.read_partition("price_bars", DAY)) == 1440
    assert warehouse.read_partition_facts("price_bars", DAY)["BTCUSDT"]["complete"] is True
    assert fake_exchange.count() == 2  # and now it is settled:
    assert _materialize(root, fake_exchange).success
    assert fake_exchange.count() == 2


def test_bars_and_their_fetch_record_never_disagree(tmp_path, fake_exchange):
    """A day whose record says "complete, 1,440 bars" but whose stored bars are missing is not final:
    it is fetched again instead of turning every price into an exchange gap."""
    root = _root(tmp_path, [("2024-03-05T10:00:00Z", "BTC")])
    warehouse = Warehouse(root / "warehouse")
    assert _materialize(root, fake_exchange).success
    facts = warehouse.read_partition_facts("price_bars", DAY)
    assert facts["BTCUSDT"]["complete"] is True and facts["BTCUSDT"]["present_bars"] == 1440
    warehouse.write_partition(
        "price_bars", DAY, warehouse.read_partition("price_bars", DAY).iloc[0:0], facts=facts
    )
    before = fake_exchange.count()
    assert _materialize(root, fake_exchange).success
    assert fake_exchange.count() == before + 2  # fetched again, not trusted
    assert len(warehouse.read_partition("price_bars", DAY)) == 1440


def test_a_day_stored_by_an_older_cache_version_is_fetched_again(tmp_path, fake_exchange):
    root = _root(tmp_path, [("2024-03-05T10:00:00Z", "BTC")])
    warehouse = Warehouse(root / "warehouse")
    assert _materialize(root, fake_exchange).success
    facts = warehouse.read_partition_facts("price_bars", DAY)
    del facts["BTCUSDT"]["cache_version"]  # written before bars without a trade stopped being prices
    warehouse.write_partition("price_bars", DAY, warehouse.read_partition("price_bars", DAY), facts=facts)
    before = fake_exchange.count()
    assert _materialize(root, fake_exchange).success
    assert fake_exchange.count() == before + 2


def test_a_run_that_needs_fewer_instruments_keeps_the_stored_ones(tmp_path, fake_exchange):
    root = _root(tmp_path, [("2024-03-05T10:00:00Z", "BTC")])
    warehouse = Warehouse(root / "warehouse")
    assert _materialize(root, fake_exchange).success
    (root / "alpha" / "events.jsonl").write_text("")  # an empty (existing) file: no signals now
    assert _materialize(root, fake_exchange).success
    assert len(warehouse.read_partition("price_bars", DAY)) == 1440
    assert warehouse.read_partition_facts("price_bars", DAY)["BTCUSDT"]["complete"] is True
