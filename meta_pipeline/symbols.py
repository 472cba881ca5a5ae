"""Symbol normalisation: whatever the agents write (``BTC``, ``BTCUSDT``, ``BTC/USDT``, ``btc-usdt``,
``ETH-USD`` …) becomes one instrument per base asset.

The instrument key used everywhere in storage is the Binance spot symbol ``BASEUSDT``; Coinbase is
asked for ``BASE-USD``. USD, USDT and USDC quotes are treated as the same dollar price, as the app
does today. A pair with an explicit other quote (``BTC/EUR``, ``eth-btc``), empty text or
punctuation is rejected at ingestion. A single token without a dollar quote is read as a base
asset: ``ETHBTC`` becomes ``ETHBTCUSDT``, which no exchange lists, so its rows end up ``unpriced``
with the exchange's "unknown symbol" reason — visible, not guessed at with a list of quote assets
(``WBTC`` is a base, not W quoted in BTC).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOLLAR_QUOTES = ("USDT", "USDC", "USD")  # longest first: "BTCUSDT" must not parse as base "BTCUS"
_SEPARATORS = re.compile(r"[/\-_: ]")
_BASE = re.compile(r"^[A-Z0-9]{1,15}$")


class SymbolError(ValueError):
    """The text cannot be read as a dollar-quoted crypto pair."""


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
    """Parse an agent's symbol text into an :class:`Instrument` or raise :class:`SymbolError`."""
    if not isinstance(raw, str):
        raise SymbolError(f"symbol must be a string, got {type(raw).__name__}")
    text = raw.strip().upper()
    if not text:
        raise SymbolError("symbol is empty")
    parts = [p for p in _SEPARATORS.split(text) if p]
    if len(parts) == 2:
        base, quote = parts
        if quote not in DOLLAR_QUOTES:
            raise SymbolError(f"symbol {raw!r}: quote {quote!r} is not USD, USDT or USDC")
    elif len(parts) == 1:
        base = parts[0]
        for quote in DOLLAR_QUOTES:
            if base.endswith(quote) and len(base) > len(quote):
                base = base[: -len(quote)]
                break
    else:
        raise SymbolError(f"symbol {raw!r} is not BASE, BASEQUOTE or BASE/QUOTE")
    if base in DOLLAR_QUOTES or not _BASE.match(base):
        raise SymbolError(f"symbol {raw!r} has no valid base asset")
    return Instrument(base)


def instrument_key(raw: object) -> str:
    """The storage key (Binance symbol) for an agent's symbol text."""
    return normalize_symbol(raw).binance


def base_of(instrument: str) -> str:
    """``BTCUSDT`` → ``BTC`` (instrument keys always end in USDT)."""
    if not instrument.endswith("USDT") or len(instrument) <= 4:
        raise SymbolError(f"{instrument!r} is not an instrument key (BASEUSDT)")
    return instrument[:-4]
