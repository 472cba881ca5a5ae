"""Symbol normalisation: whatever the agents write (``BTC``, ``BTCUSDT``, ``BTC/USDT``, ``btc-usdt``,
``ETH-USD``, ``BINANCE:BTCUSDT`` …) becomes one instrument per base asset, or a :class:`SymbolError`
that says why not.

The instrument key used everywhere in storage is the Binance spot symbol ``BASEUSDT``; Coinbase is
asked for ``BASE-USD``. Only US-dollar quotes are priced: USD, USDT and USDC are treated as the same
dollar price, as the app does today (docs/rules.md, *Prices*).

How a text is read, in order (case and surrounding blanks do not matter):

1. **Exchange prefix.** ``EXCHANGE:SYMBOL`` as alerting tools send it (``BINANCE:BTCUSDT``,
   ``COINBASE:BTC-USD``) is read as ``SYMBOL`` when ``EXCHANGE`` is in :data:`EXCHANGE_PREFIXES`.
   ``BTC:USDT`` is still BTC quoted in USDT (``:`` is also a separator). An unknown prefix in front
   of something that looks like a pair (``FTX:BTCUSDT``) is rejected with a reason naming the
   prefix, not mistaken for a quote.
2. **Perpetual futures** (``BTCUSDT.P``, ``BTC-PERP``, ``BTCUSDT_PERP``, ``BTC-PERPETUAL``,
   ``BTC-USDT-SWAP``) are rejected: a perpetual's price is not the spot price this pipeline
   measures against, and perpetuals are not priced. A token that merely ends in ``PERP`` (the
   Perpetual Protocol token ``PERP``, ``PERPUSDT``) is a base asset.
3. **With a separator** (``/``, ``-``, ``_``, ``:`` or a space): exactly ``BASE`` and ``QUOTE``;
   the quote must be a dollar quote. ``ETH/BTC``, ``BTC/EUR``, ``BTC-BUSD`` are rejected.
4. **A single token**: the longest quote from :data:`QUOTES` that ends it is split off.
   A dollar quote leaves the base (``BTCUSDT`` → ``BTC``); any other quote rejects the token
   (``BTCBUSD``, ``ETHFDUSD``, ``BTCTUSD``, ``BTCEUR`` are not dollar prices and must not become
   assets ``BTCB``, ``ETHFD``, ``BTCT``, ``BTCEUR``). Two guards keep real assets readable:

   * A token that *is* a non-dollar quote (``EUR``, ``DAI``, ``TUSD``) or is listed in
     :data:`BASES_ENDING_IN_A_QUOTE` (``AEUR``, ``SDAI``) is a base asset.
   * ``TUSD``, ``BUSD`` and ``FDUSD`` end in ``USD``, so ``DOTUSD`` could be DOT in US dollars or
     DO in TUSD. Such a quote is taken only when the base it leaves has at least
     :data:`MIN_BASE_FOR_EXTENDED_QUOTE` (3) characters; otherwise the dollar reading wins:
     ``DOTUSD``, ``ARBUSD``, ``BNBUSD`` → DOT, ARB, BNB; ``BTCTUSD``, ``ETHBUSD`` are rejected.
     A longer base ending in T or B with a plain USD quote (``IOSTUSD``) is therefore rejected:
     write ``IOST/USD`` or ``IOSTUSDT``. A rejection never prices the wrong asset; a wrong split
     would.

   BTC, ETH and BNB are deliberately *not* in the single-token quote list: ``WBTC``, ``STETH``
   and ``ETHBTC`` are read as base assets (``ETHBTC`` becomes ``ETHBTCUSDT``, which no exchange
   lists, so its rows end up ``unpriced`` with the exchange's "unknown symbol" reason).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

DOLLAR_QUOTES = ("USDT", "USDC", "USD")  # the quotes that are priced, as one dollar price
"""Quotes priced as the US dollar (Binance ``USDT`` pairs, Coinbase ``USD`` products)."""

OTHER_QUOTES = (
    # dollar-like stablecoins that are not treated as the dollar price
    "FDUSD",
    "BUSD",
    "TUSD",
    "USDP",
    "DAI",
    "IDRT",
    "BIDR",
    # fiat
    "EUR",
    "GBP",
    "TRY",
    "BRL",
    "JPY",
    "AUD",
    "CAD",
    "CHF",
    "KRW",
    "INR",
    "RUB",
    "UAH",
    "NGN",
    "PLN",
    "ZAR",
    "MXN",
    "CZK",
)
"""Quote currencies that are recognised (so a pair quoted in them is rejected rather than read as
a different asset) but not priced. BTC, ETH and BNB are left out on purpose (module docstring)."""

QUOTES = tuple(sorted((*DOLLAR_QUOTES, *OTHER_QUOTES), key=len, reverse=True))  # longest first

MIN_BASE_FOR_EXTENDED_QUOTE = 3
"""A quote that extends a dollar quote (TUSD, BUSD, FDUSD end in USD) is split off a single token
only if the base it leaves has at least this many characters (``DOTUSD`` is DOT in USD)."""

BASES_ENDING_IN_A_QUOTE = frozenset({"AEUR", "SDAI", "XDAI"})
"""Listed assets whose ticker ends in a quote code: read as base assets, never split."""

EXCHANGE_PREFIXES = frozenset(
    {
        "BINANCE",
        "BINANCEUS",
        "COINBASE",
        "KRAKEN",
        "BYBIT",
        "OKX",
        "OKEX",
        "BITSTAMP",
        "BITFINEX",
        "KUCOIN",
        "GEMINI",
        "HUOBI",
        "HTX",
        "GATEIO",
        "MEXC",
        "BITGET",
        "BITMEX",
        "DERIBIT",
        "CRYPTO",
        "CRYPTOCOM",
        "POLONIEX",
        "BINGX",
        "PHEMEX",
        "UPBIT",
        "BITHUMB",
    }
)
"""Exchange names accepted as an ``EXCHANGE:`` prefix (TradingView-style alerts)."""

_SEPARATORS = re.compile(r"[/\-_: ]")
_BASE = re.compile(r"^[A-Z0-9]{1,15}$")
_PERPETUAL = re.compile(r"(\.P|[./\-_ ]PERP(ETUAL)?|[\-_ ]SWAP)$")
_EXTENDED_QUOTES = frozenset(q for q in OTHER_QUOTES if any(q.endswith(d) for d in DOLLAR_QUOTES))
_PRICED = "USD, USDT or USDC"


class SymbolError(ValueError):
    """The text cannot be read as a dollar-quoted spot crypto pair; the message names the text and
    says why (wrong quote, perpetual, unknown exchange prefix, no base …)."""


@dataclass(frozen=True)
class Instrument:
    base: str

    @property
    def binance(self) -> str:
        return f"{self.base}USDT"

    @property
    def coinbase(self) -> str:
        return f"{self.base}-USD"


def normalize_symbol(raw: object) -> Instrument:
    """Parse an agent's symbol text into an :class:`Instrument` or raise :class:`SymbolError`.

    The rules, and why each is there, are in the module docstring. Never raises anything but
    :class:`SymbolError` for any input object.
    """
    if not isinstance(raw, str):
        raise SymbolError(f"symbol must be a string, got {type(raw).__name__}")
    outcome = _normalize_text(raw)
    if isinstance(outcome, SymbolError):
        raise SymbolError(str(outcome))
    return outcome


@lru_cache(maxsize=4096)  # agents repeat a handful of spellings; hostile input only fills the cache
def _normalize_text(raw: str) -> Instrument | SymbolError:
    try:
        return _parse(raw)
    except SymbolError as exc:
        return exc


def _parse(raw: str) -> Instrument:
    text = raw.strip().upper()
    if not text:
        raise SymbolError("symbol is empty")
    text = _strip_exchange_prefix(raw, text)
    if _PERPETUAL.search(text):
        raise SymbolError(
            f"symbol {raw!r} is a perpetual futures contract; perpetuals are not priced "
            "(only spot pairs quoted in USD, USDT or USDC)"
        )
    parts = [p for p in _SEPARATORS.split(text) if p]
    if len(parts) == 2:
        base, quote = parts
        if quote not in DOLLAR_QUOTES:
            known = "a quote that is not priced" if quote in QUOTES else "not a known quote"
            raise SymbolError(f"symbol {raw!r}: quote {quote!r} is {known}; only {_PRICED} are priced")
    elif len(parts) == 1:
        base = _split_single_token(raw, parts[0])
    else:
        raise SymbolError(f"symbol {raw!r} is not BASE, BASEQUOTE or BASE/QUOTE")
    if base in DOLLAR_QUOTES or not _BASE.match(base):
        raise SymbolError(f"symbol {raw!r} has no valid base asset")
    return Instrument(base)


def _strip_exchange_prefix(raw: str, text: str) -> str:
    """``BINANCE:BTCUSDT`` → ``BTCUSDT``; ``BTC:USDT`` unchanged; ``FTX:BTCUSDT`` rejected."""
    prefix, colon, rest = text.partition(":")
    if not colon:
        return text
    prefix, rest = prefix.strip(), rest.strip()
    if prefix in EXCHANGE_PREFIXES:
        return rest
    if prefix.isalpha() and rest not in QUOTES and _looks_like_a_pair(rest):
        raise SymbolError(
            f"symbol {raw!r}: {prefix!r} looks like an exchange prefix but is not a known exchange "
            f"({', '.join(sorted(EXCHANGE_PREFIXES))}); write the pair alone, e.g. {rest!r}"
        )
    return text


def _looks_like_a_pair(text: str) -> bool:
    if _SEPARATORS.search(text) or _PERPETUAL.search(text):
        return True
    return any(text.endswith(q) and len(text) > len(q) for q in QUOTES)


def _split_single_token(raw: str, token: str) -> str:
    """The base of a single token (module docstring, rule 4)."""
    if token in QUOTES or token in BASES_ENDING_IN_A_QUOTE:
        return token  # a dollar quote alone is rejected by the caller ("no valid base")
    for quote in QUOTES:  # longest first
        if not token.endswith(quote) or len(token) == len(quote):
            continue
        base = token[: -len(quote)]
        if quote in _EXTENDED_QUOTES and len(base) < MIN_BASE_FOR_EXTENDED_QUOTE:
            continue  # DOTUSD: DOT in USD, not DO in TUSD
        if quote not in DOLLAR_QUOTES:
            if quote in _EXTENDED_QUOTES:
                dollar_base = token[: -len(next(d for d in DOLLAR_QUOTES if quote.endswith(d)))]
                hint = (
                    f"if you meant {dollar_base} in US dollars, write {dollar_base}/USD or {dollar_base}USDT"
                )
            else:
                hint = f"if {token} is an asset, write {token}/USDT"
            raise SymbolError(
                f"symbol {raw!r} is {base} quoted in {quote}, which is not priced; only {_PRICED} are ({hint})"
            )
        return base
    return token


def instrument_key(raw: object) -> str:
    """The storage key (Binance symbol) for an agent's symbol text."""
    return normalize_symbol(raw).binance


def base_of(instrument: str) -> str:
    """``BTCUSDT`` → ``BTC`` (instrument keys always end in USDT)."""
    if not instrument.endswith("USDT") or len(instrument) <= 4:
        raise SymbolError(f"{instrument!r} is not an instrument key (BASEUSDT)")
    return instrument[:-4]
