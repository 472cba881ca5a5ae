"""Daily partitions on the signal's UTC date, and how far a day's horizons reach into later days."""

import math

import dagster as dg

from meta_pipeline.settings import Settings

SETTINGS = Settings.from_env()  # raises SettingsError naming the variable: the load fails loudly

# end_offset=1: today is a partition too, so same-day signals get their 1h/4h PnL during the day.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=SETTINGS.start_date.isoformat(), end_offset=1, timezone="UTC"
)


def days_reached(horizons_hours, max_gap_minutes: float = 5.0) -> int:
    """How many days after a signal's day its exit price can fall in.

    The last signal of day D is just before D+1 00:00; its exit price is the first bar opening at or
    after ts + h, at most ``max_gap_minutes`` later, so it lies before D+1 + h + gap.
    """
    reach_hours = max(horizons_hours) + max_gap_minutes / 60.0
    return 1 + math.floor(reach_hours / 24.0)


REACH_DAYS = days_reached(SETTINGS.horizons_hours)
