"""Running the real assets over a day range against the loopback exchange, as every end-to-end
test does: one place for the test resources and the range tags."""

from pathlib import Path

import dagster as dg

from meta_pipeline import names
from meta_pipeline.defs.ingestion import signal_quarantine, signals, telemetry, telemetry_quarantine
from meta_pipeline.defs.prices import price_bars
from meta_pipeline.defs.reconciliation import reconciled_export, reconciled_trades
from meta_pipeline.defs.resources import DataRoot, IngestionPolicy, PriceSources, ReconciliationPolicy

ALL_ASSETS = [
    signals,
    telemetry,
    signal_quarantine,
    telemetry_quarantine,
    price_bars,
    reconciled_trades,
    reconciled_export,
]


def test_resources(root: Path, fx, *, round_trip_cost_bps: float = 0.0, **price_options) -> dict:
    """Resources on data root ``root`` with bars from the fake exchange ``fx`` (Binance, then
    Coinbase; fast retries). ``price_options`` override PriceSources fields."""
    prices = {
        "sources": ["binance", "coinbase"],
        "binance_base_url": fx.binance_url,
        "coinbase_base_url": fx.coinbase_url,
        "bars_dir": str(root / "bars"),
        "backoff_seconds": 0.001,
        "read_timeout_seconds": 5,
        **price_options,
    }
    return {
        "data_root": DataRoot(root=str(root)),
        "ingestion_policy": IngestionPolicy(),
        "price_sources": PriceSources(**prices),
        "reconciliation_policy": ReconciliationPolicy(round_trip_cost_bps=round_trip_cost_bps),
    }


test_resources.__test__ = False  # a helper, not a test


def run_range(
    root: Path, fx, first: str, last: str, assets=ALL_ASSETS, *, resources: dict | None = None, **kwargs
) -> dg.ExecuteInProcessResult:
    """One run of ``assets`` over ``first`` … ``last`` (what ``meta-pipeline run`` does); ``kwargs``
    go to ``dg.materialize`` (``instance``, ``run_config``, ``raise_on_error`` …)."""
    kwargs.setdefault("instance", dg.DagsterInstance.ephemeral())
    return dg.materialize(
        assets,
        resources=resources or test_resources(root, fx),
        tags={names.RANGE_START_TAG: first, names.RANGE_END_TAG: last},
        **kwargs,
    )
