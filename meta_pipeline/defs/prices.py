"""``price_bars``: 1-minute bars per day for every instrument whose signals need that day.

Partition D holds day D's bars for each instrument with signals on D or on the days whose horizons
reach into D. A settled symbol-day (see :mod:`meta_pipeline.price_store`) is read back from storage
and never fetched again; today, gappy and failed days are fetched again by later runs.
"""

from datetime import date, timedelta

import dagster as dg
import pandas as pd

from meta_pipeline import price_store
from meta_pipeline.defs.metadata import counts_table, frame_preview
from meta_pipeline.defs.partitions import REACH_DAYS, daily_partitions
from meta_pipeline.defs.resources import DataRoot, PriceSources
from meta_pipeline.prices.model import empty_bars
from meta_pipeline.storage import Warehouse

ASSET = price_store.ASSET


def needed_instruments(warehouse: Warehouse, day: date) -> list[str]:
    """Instruments with signals on ``day`` or on the ``REACH_DAYS`` days before it."""
    keys = [d.isoformat() for d in price_store.window(day - timedelta(days=REACH_DAYS), REACH_DAYS)]
    signals = warehouse.read_partitions("signals", keys)
    return sorted(signals["instrument"].astype(str).unique()) if signals is not None and len(signals) else []


@dg.asset(
    group_name="prices",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[
        dg.AssetDep(
            "signals",
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-REACH_DAYS, end_offset=0, allow_nonexistent_upstream_partitions=True
            ),
        )
    ],
    kinds={"parquet"},
    pool="exchange_api",
    description=__doc__,
)
def price_bars(
    context: dg.AssetExecutionContext, data_root: DataRoot, price_sources: PriceSources
) -> dg.MaterializeResult:
    warehouse = data_root.warehouse
    fetcher = price_sources.fetcher()
    report = []
    for key in context.partition_keys:
        day = date.fromisoformat(key)
        instruments = needed_instruments(warehouse, day)
        sidecar = warehouse.read_sidecar(ASSET, key) or {}
        stored = warehouse.read_partition(ASSET, key)
        frames = []
        for instrument in instruments:
            entry = sidecar.get(instrument)
            if price_store.is_final(entry, day) and stored is not None:
                frames.append(stored[stored["instrument"] == instrument])
                report.append(
                    {"day": key, "instrument": instrument, "action": "cached", **_brief(entry), "requests": 0}
                )
                continue
            fetch = fetcher.fetch_day(instrument, day)
            if fetch.error or fetch.unpriceable:
                context.log.error(
                    f"{instrument} {key}: {fetch.unpriceable or fetch.error} ({'; '.join(fetch.attempts)})"
                )
            if fetch.error and entry and entry.get("source") and stored is not None:
                # a failed refetch must not throw away the bars an earlier run already has
                frames.append(stored[stored["instrument"] == instrument])
                report.append(
                    {
                        "day": key,
                        "instrument": instrument,
                        "action": "kept (refetch failed)",
                        **_brief(entry),
                        "requests": fetch.requests,
                        "problem": fetch.error,
                    }
                )
                continue
            sidecar[instrument] = entry = price_store.sidecar_entry(fetch)
            frames.append(fetch.bars)
            report.append({"day": key, "instrument": instrument, "action": "fetched", **_brief(entry)})
        bars = pd.concat(frames, ignore_index=True) if frames else empty_bars()
        warehouse.write_partition(ASSET, key, bars)
        warehouse.write_sidecar(ASSET, key, sidecar)
        context.log.info(f"price_bars {key}: {len(bars):,} bars for {len(instruments)} instrument(s)")

    table = pd.DataFrame(
        report,
        columns=[
            "day",
            "instrument",
            "action",
            "source",
            "expected",
            "present",
            "gaps",
            "requests",
            "problem",
        ],
    )
    fetched = table[table["action"] != "cached"]
    return dg.MaterializeResult(
        metadata={
            "symbol_days": int(len(table)),
            "fetched": int(len(fetched)),
            "cached": int((table["action"] == "cached").sum()),
            "requests_made": int(fetched["requests"].sum()),
            "bars_expected": int(table["expected"].sum()),
            "bars_present": int(table["present"].sum()),
            "gaps": int(table["gaps"].sum()),
            "problems": int(table["problem"].astype(bool).sum()),
            "by_source": counts_table(table["source"].fillna("none").value_counts(), "source", "symbol-days"),
            "per_day": dg.MetadataValue.md(
                table.groupby("day")
                .agg(
                    symbols=("instrument", "count"),
                    expected=("expected", "sum"),
                    present=("present", "sum"),
                    gaps=("gaps", "sum"),
                    requests=("requests", "sum"),
                )
                .reset_index()
                .to_markdown(index=False)
                if len(table)
                else "_no symbol-days_"
            ),
            "symbol_days_table": frame_preview(table, 60),
        }
    )


def _brief(entry: dict) -> dict:
    return {
        "source": entry.get("source"),
        "expected": entry.get("expected_bars", 0),
        "present": entry.get("present_bars", 0),
        "gaps": len(entry.get("gaps") or []),
        "requests": entry.get("requests", 0),
        "problem": entry.get("unpriceable") or entry.get("error") or "",
    }


assets = [price_bars]
