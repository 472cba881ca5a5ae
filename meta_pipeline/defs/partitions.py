"""Daily partitions on the signal's UTC date, and how far a day's horizons reach into later days."""

import dagster as dg

from meta_pipeline.defs.environment import SETTINGS
from meta_pipeline.price_store import days_reached

# end_offset=1: today is a partition too, so same-day signals get their 1h/4h PnL during the day.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=SETTINGS.start_date.isoformat(), end_offset=1, timezone="UTC"
)

# how many days after a signal's day its exit price can fall in (2 for 24 h horizons)
REACH_DAYS = days_reached(SETTINGS.horizons_hours, SETTINGS.max_bar_gap)
