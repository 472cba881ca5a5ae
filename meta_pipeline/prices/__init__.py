"""1-minute price bars from Binance, Coinbase Exchange or local Binance dumps (pure Python, no Dagster).

Start with :func:`build_sources` and :class:`PriceFetcher` (``fetch_day``; ``fetch_many`` for many
symbol-days on a bounded thread pool); :class:`DayFetch` is what one (instrument, UTC day) fetch
yields; :func:`validate_bars` decides which bars are usable prices. The rules are in docs/rules.md,
*Prices*. :data:`SOURCE_NAMES`, :data:`DEFAULT_BINANCE_BASE_URL` and :data:`DEFAULT_COINBASE_BASE_URL`
are the single definitions the settings import.
"""

from meta_pipeline.prices.binance import DEFAULT_BINANCE_BASE_URL, BinanceSource
from meta_pipeline.prices.coinbase import DEFAULT_COINBASE_BASE_URL, CoinbaseSource
from meta_pipeline.prices.fetcher import (
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    DEFAULT_MAX_WORKERS,
    DEFAULT_TIME_BUDGET_SECONDS,
    SOURCE_NAMES,
    PriceFetcher,
    build_sources,
    fetch_validated,
    parse_source_names,
)
from meta_pipeline.prices.files import FileSource, read_kline_csv, read_kline_csv_checked, read_kline_rows
from meta_pipeline.prices.http import CountingRetry, JsonHttpClient, RequestMeter, request_meter
from meta_pipeline.prices.model import (
    BAR_COLUMNS,
    INVALID_REASONS,
    MAX_PRICE,
    NO_TRADE,
    REJECT_REASONS,
    DayFetch,
    PriceSource,
    PriceSourceError,
    SourceBanned,
    SymbolNotListed,
    TimeBudgetExhausted,
    empty_bars,
    normalize_bars,
    validate_bars,
)

__all__ = [
    "BAR_COLUMNS",
    "DEFAULT_BINANCE_BASE_URL",
    "DEFAULT_COINBASE_BASE_URL",
    "DEFAULT_MAX_CONSECUTIVE_FAILURES",
    "DEFAULT_MAX_WORKERS",
    "DEFAULT_TIME_BUDGET_SECONDS",
    "INVALID_REASONS",
    "MAX_PRICE",
    "NO_TRADE",
    "REJECT_REASONS",
    "SOURCE_NAMES",
    "BinanceSource",
    "CoinbaseSource",
    "CountingRetry",
    "DayFetch",
    "FileSource",
    "JsonHttpClient",
    "PriceFetcher",
    "PriceSource",
    "PriceSourceError",
    "RequestMeter",
    "SourceBanned",
    "SymbolNotListed",
    "TimeBudgetExhausted",
    "build_sources",
    "empty_bars",
    "fetch_validated",
    "normalize_bars",
    "parse_source_names",
    "read_kline_csv",
    "read_kline_csv_checked",
    "read_kline_rows",
    "request_meter",
    "validate_bars",
]
