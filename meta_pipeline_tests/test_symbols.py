"""Symbol normalisation: every spelling the agents write maps to one instrument per base asset."""

import pytest

from meta_pipeline.symbols import Instrument, SymbolError, base_of, instrument_key, normalize_symbol


@pytest.mark.parametrize(
    ("raw", "binance", "coinbase"),
    [
        ("BTC", "BTCUSDT", "BTC-USD"),
        ("BTCUSDT", "BTCUSDT", "BTC-USD"),
        ("BTC/USDT", "BTCUSDT", "BTC-USD"),
        ("btc-usdt", "BTCUSDT", "BTC-USD"),
        ("ETH-USD", "ETHUSDT", "ETH-USD"),
        ("sol/usdc", "SOLUSDT", "SOL-USD"),
        (" eth ", "ETHUSDT", "ETH-USD"),
        ("BTCUSD", "BTCUSDT", "BTC-USD"),  # longest quote first must not matter for USD
        ("SOLUSDC", "SOLUSDT", "SOL-USD"),  # ... nor leave a base "SOLUS"/"SOLUSD"
        ("doge_usdt", "DOGEUSDT", "DOGE-USD"),
        ("BTC:USDT", "BTCUSDT", "BTC-USD"),
        ("BTC USD", "BTCUSDT", "BTC-USD"),
        ("1INCH/USDT", "1INCHUSDT", "1INCH-USD"),  # digits belong to real bases
    ],
)
def test_dollar_quoted_spellings_map_to_one_instrument(raw, binance, coinbase):
    instrument = normalize_symbol(raw)
    assert instrument.binance == binance
    assert instrument.coinbase == coinbase
    assert instrument_key(raw) == binance


def test_all_spellings_of_one_asset_are_the_same_instrument():
    spellings = ["BTC", "BTCUSDT", "BTC/USDT", "btc-usdt", "BTC-USD", "btc/usdc", " BTC "]
    assert {normalize_symbol(s) for s in spellings} == {Instrument("BTC")}


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("BTC/EUR", id="non-dollar-quote-separated"),
        pytest.param("eth-btc", id="crypto-quote-separated"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("USDT", id="quote-only-usdt"),
        pytest.param("USD", id="quote-only-usd"),
        pytest.param("usdc", id="quote-only-usdc"),
        pytest.param("USDCUSDT", id="stablecoin-against-stablecoin"),
        pytest.param("/USDT", id="no-base"),
        pytest.param("BTC/USDT/X", id="three-parts"),
        pytest.param("$$$", id="punctuation"),
        pytest.param("BTC$/USDT", id="punctuation-in-base"),
        pytest.param("ABCDEFGHIJKLMNOP", id="base-too-long"),
        pytest.param(123, id="int"),
        pytest.param(1.5, id="float"),
        pytest.param(None, id="none"),
        pytest.param(True, id="bool"),
        pytest.param(["BTC"], id="list"),
    ],
)
def test_rejections(raw):
    with pytest.raises(SymbolError):
        normalize_symbol(raw)


@pytest.mark.parametrize(
    ("raw", "instrument"), [("ETHBTC", "ETHBTCUSDT"), ("BTCEUR", "BTCEURUSDT"), ("WBTC", "WBTCUSDT")]
)
def test_single_token_without_dollar_quote_is_a_base_asset(raw, instrument):
    """Documented: no list of quote assets is guessed at; ``ETHBTC`` becomes an instrument no
    exchange lists, so its rows are ``unpriced`` with the exchange's reason rather than mispriced."""
    assert normalize_symbol(raw).binance == instrument


def test_symbol_error_is_a_value_error_and_names_the_input():
    with pytest.raises(ValueError, match="BTC/EUR"):
        normalize_symbol("BTC/EUR")


@pytest.mark.parametrize(("instrument", "base"), [("BTCUSDT", "BTC"), ("1INCHUSDT", "1INCH")])
def test_base_of_instrument_key(instrument, base):
    assert base_of(instrument) == base
    assert normalize_symbol(base).binance == instrument


@pytest.mark.parametrize("bad", ["USDT", "BTC-USD", "BTCUSDC", ""])
def test_base_of_rejects_non_keys(bad):
    with pytest.raises(SymbolError):
        base_of(bad)
