"""1-minute price bars from Binance, Coinbase Exchange or local Binance dumps (pure Python, no Dagster).

Start with :func:`build_sources` and :class:`PriceFetcher`; :class:`DayFetch` is what one
(instrument, UTC day) fetch yields. See DESIGN.md "Pricing and PnL rules".
"""

from meta_pipeline.prices.binance import BinanceSource
from meta_pipeline.prices.coinbase import CoinbaseSource
from meta_pipeline.prices.fetcher import SOURCE_NAMES, PriceFetcher, build_sources
from meta_pipeline.prices.files import FileSource, read_kline_csv
from meta_pipeline.prices.http import CountingRetry, JsonHttpClient
from meta_pipeline.prices.model import (
    BAR_COLUMNS,
    DayFetch,
    PriceSource,
    PriceSourceError,
    SourceBanned,
    SymbolNotListed,
    empty_bars,
    normalize_bars,
)

__all__ = [
    "BAR_COLUMNS",
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
    "SourceBanned",
    "SymbolNotListed",
    "build_sources",
    "empty_bars",
    "normalize_bars",
    "read_kline_csv",
]
