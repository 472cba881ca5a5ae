"""``price_bars``: the wiring of the bar cache (the policy itself is in ``meta_pipeline/price_store.py``)."""

from datetime import date, timedelta

import dagster as dg
import pandas as pd

from meta_pipeline import names, price_store
from meta_pipeline.defs.metadata import counts_table, frame_preview, markdown_table
from meta_pipeline.defs.partitions import REACH_DAYS, daily_partitions
from meta_pipeline.defs.resources import DataRoot, PriceSources
from meta_pipeline.defs.run_liveness import record_this_process
from meta_pipeline.storage import Warehouse

DAYS_PER_BATCH = 31  # a month of days: their symbol-days share one pool of fetches
REPORT_COLUMNS = [
    "day", "instrument", "action", "source", "expected", "present", "gaps", "dropped", "requests", "problem",
]  # fmt: skip


def needed_instruments(warehouse: Warehouse, day: date) -> list[str]:
    """Instruments with signals on ``day`` or on the ``REACH_DAYS`` days before it."""
    keys = [d.isoformat() for d in price_store.window(day - timedelta(days=REACH_DAYS), REACH_DAYS)]
    signals = warehouse.read_partitions(names.SIGNALS, keys)
    return sorted(signals["instrument"].astype(str).unique()) if signals is not None and len(signals) else []


@dg.asset(
    name=names.PRICE_BARS,
    group_name=names.PRICES_GROUP,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[
        dg.AssetDep(
            names.SIGNALS,
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-REACH_DAYS, end_offset=0, allow_nonexistent_upstream_partitions=True
            ),
        )
    ],
    kinds={"parquet"},
    owners=["team:meta-pipeline"],
    pool=names.EXCHANGE_POOL,
    description=(
        "One day of 1-minute bars (open, high, low, close, volume, source) for every instrument whose "
        "signals reach that day, fetched from Binance, then Coinbase, then local kline files. Each "
        "instrument's fetch record (source, bars expected and present, gaps, dropped bars, requests) is "
        "stored in the same file. A settled day is read back and never fetched again; today, days "
        "with gaps and failed fetches are fetched again by later runs, and a failed refetch keeps the "
        "bars already stored."
    ),
)
def price_bars(
    context: dg.AssetExecutionContext, data_root: DataRoot, price_sources: PriceSources
) -> dg.MaterializeResult:
    record_this_process(context)  # so a run killed while holding the exchange_api slot can be reaped
    warehouse = data_root.warehouse
    fetcher = price_sources.fetcher()
    report: list[dict] = []
    keys = context.partition_keys
    # a month of days at a time: their symbol-days are fetched concurrently, and memory stays bounded
    for start in range(0, len(keys), DAYS_PER_BATCH):
        batch = []
        for key in keys[start : start + DAYS_PER_BATCH]:
            day = date.fromisoformat(key)
            stored = warehouse.read_partition(names.PRICE_BARS, key)
            facts = warehouse.read_partition_facts(names.PRICE_BARS, key)
            instruments = needed_instruments(warehouse, day)
            batch.append(
                (
                    key,
                    day,
                    instruments,
                    stored,
                    facts,
                    price_store.needs_fetch(day, instruments, stored, facts),
                )
            )
        wanted = [(instrument, day) for _, day, _, _, _, todo in batch for instrument in todo]
        fetched = (
            fetcher.fetch_many(wanted, max_workers=price_sources.max_concurrent_fetches) if wanted else {}
        )
        for key, day, instruments, stored, facts, todo in batch:
            refreshed = price_store.refresh_day(
                day, instruments, stored, facts, {i: fetched[(i, day)] for i in todo}
            )
            warehouse.write_partition(names.PRICE_BARS, key, refreshed.bars, facts=refreshed.sidecar)
            report.extend(refreshed.report)
    # one log line per run, not per day: every log line is an event-log write
    problems = [r for r in report if r["action"] != price_store.CACHED and r["problem"]]
    if problems:
        shown = "; ".join(f"{r['instrument']} {r['day']}: {r['problem']}" for r in problems[:10])
        context.log.error(
            f"{len(problems)} symbol-day(s) with problems: {shown}" + (" …" if len(problems) > 10 else "")
        )
    fetched_count = sum(r["action"] != price_store.CACHED for r in report)
    context.log.info(f"price_bars: {len(keys)} day(s), {len(report)} symbol-day(s), {fetched_count} fetched")
    return dg.MaterializeResult(metadata=report_metadata(pd.DataFrame(report, columns=REPORT_COLUMNS)))


def report_metadata(table: pd.DataFrame) -> dict:
    fetched = table[table["action"] != price_store.CACHED]
    per_day = (
        table.groupby("day")
        .agg(
            symbols=("instrument", "count"),
            expected=("expected", "sum"),
            present=("present", "sum"),
            gaps=("gaps", "sum"),
            dropped=("dropped", "sum"),
            requests=("requests", "sum"),
        )
        .reset_index()
    )
    return {
        "symbol_days": int(len(table)),
        "fetched": int(len(fetched)),
        "cached": int((table["action"] == price_store.CACHED).sum()),
        "requests_made": int(fetched["requests"].sum()),
        "bars_expected": int(table["expected"].sum()),
        "bars_present": int(table["present"].sum()),
        "gaps": int(table["gaps"].sum()),
        "bars_dropped": int(table["dropped"].sum()),
        "problems": int(table["problem"].astype(bool).sum()),
        "by_source": counts_table(table["source"].fillna("none").value_counts(), "source", "symbol-days"),
        # a range run's metadata is stored with every one of its days: keep it a bounded size
        "per_day": frame_preview(per_day, 31)
        if len(per_day)
        else markdown_table(per_day, empty="_no symbol-days_"),
        "symbol_days_table": frame_preview(table, 60),
    }
