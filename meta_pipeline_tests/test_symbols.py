"""Symbol normalisation: every spelling the agents write maps to one instrument per base asset."""

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meta_pipeline import symbols
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
    ("raw", "instrument"),
    [("ETHBTC", "ETHBTCUSDT"), ("WBTC", "WBTCUSDT"), ("STETH", "STETHUSDT"), ("WBNB", "WBNBUSDT")],
)
def test_single_token_ending_in_btc_eth_bnb_is_a_base_asset(raw, instrument):
    """Documented: BTC, ETH and BNB are not split off a single token (``WBTC`` is a base, not W
    quoted in BTC); ``ETHBTC`` becomes an instrument no exchange lists, so its rows are ``unpriced``
    with the exchange's reason rather than mispriced."""
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


# --------------------------------------------------------------------------- other quotes


@pytest.mark.parametrize(
    ("raw", "quote"),
    [
        ("BTCBUSD", "BUSD"),  # used to become asset BTCB
        ("ETHFDUSD", "FDUSD"),  # ... ETHFD
        ("BTCTUSD", "TUSD"),  # ... BTCT
        ("BTCEUR", "EUR"),
        ("soltry", "TRY"),
        ("ETHDAI", "DAI"),
        ("BTCUSDP", "USDP"),
        ("XRPBRL", "BRL"),
        ("BTC/BUSD", "BUSD"),
        ("eth-fdusd", "FDUSD"),
        ("BTC_TUSD", "TUSD"),
        ("BTC/EUR", "EUR"),
    ],
)
def test_pair_quoted_in_another_currency_is_rejected_with_or_without_separator(raw, quote):
    with pytest.raises(SymbolError, match="not priced") as excinfo:
        normalize_symbol(raw)
    assert quote in str(excinfo.value)


@pytest.mark.parametrize(
    ("raw", "base"),
    [
        ("DOTUSD", "DOT"),  # not DO quoted in TUSD
        ("ARBUSD", "ARB"),  # not AR quoted in BUSD
        ("BNBUSD", "BNB"),
        ("BATUSD", "BAT"),
        ("TUSDT", "T"),  # a one-letter base in USDT, not TUSD + "T"
        ("EURUSDT", "EUR"),
        ("TUSDUSDT", "TUSD"),
        ("FDUSDUSDT", "FDUSD"),
        ("AEURUSDT", "AEUR"),
    ],
)
def test_bases_that_end_in_a_quotes_letters(raw, base):
    assert normalize_symbol(raw) == Instrument(base)


@pytest.mark.parametrize("token", ["EUR", "DAI", "TUSD", "FDUSD", "BUSD", "USDP", "TRY", "AEUR", "SDAI"])
def test_a_token_that_is_a_non_dollar_quote_or_a_listed_base_is_a_base_asset(token):
    assert normalize_symbol(token) == Instrument(token)


def test_a_longer_base_ending_in_t_with_usd_is_rejected_not_misread():
    """Documented trade-off: IOSTUSD reads as IOS in TUSD (rejected, with a hint), never as another asset."""
    with pytest.raises(SymbolError, match="IOSTUSDT"):
        normalize_symbol("IOSTUSD")
    assert normalize_symbol("IOST/USD") == Instrument("IOST")


# --------------------------------------------------------------------------- exchange prefixes, perpetuals


@pytest.mark.parametrize(
    ("raw", "base"),
    [
        ("BINANCE:BTCUSDT", "BTC"),
        ("COINBASE:BTC-USD", "BTC"),
        ("kraken:eth/usd", "ETH"),
        ("BYBIT:SOLUSDT", "SOL"),
        ("OKX:DOGE-USDT", "DOGE"),
        (" binance : btcusdc ", "BTC"),
        ("BTC:USDT", "BTC"),  # ":" is still a separator
    ],
)
def test_exchange_prefixed_symbols(raw, base):
    assert normalize_symbol(raw) == Instrument(base)


def test_exchange_prefixed_pair_in_another_quote_is_rejected():
    with pytest.raises(SymbolError, match="BUSD"):
        normalize_symbol("BINANCE:BTCBUSD")


@pytest.mark.parametrize("raw", ["FTX:BTCUSDT", "MYEXCHANGE:BTC-USD", "FOO:ETHUSDT.P"])
def test_unknown_exchange_prefix_is_named_as_such(raw):
    with pytest.raises(SymbolError, match="exchange prefix") as excinfo:
        normalize_symbol(raw)
    assert "quote" not in str(excinfo.value).split("exchange prefix")[0], "not called a quote"


@pytest.mark.parametrize(
    "raw",
    [
        "BTCUSDT.P",
        "BTC-PERP",
        "BTCUSDT_PERP",
        "btc-perp",
        "ETH-PERPETUAL",
        "BTC-USDT-SWAP",
        "BINANCE:BTCUSDT.P",
    ],
)
def test_perpetuals_are_rejected_as_not_priced(raw):
    with pytest.raises(SymbolError, match="perpetuals are not priced"):
        normalize_symbol(raw)


@pytest.mark.parametrize(("raw", "base"), [("PERP", "PERP"), ("PERPUSDT", "PERP"), ("PERP/USDT", "PERP")])
def test_the_perp_token_is_not_a_perpetual(raw, base):
    assert normalize_symbol(raw) == Instrument(base)


# --------------------------------------------------------------------------- properties

_BASES = st.from_regex(r"[A-Z0-9]{1,10}", fullmatch=True)
_SEPARATORS = st.sampled_from(["/", "-", "_", ":", " "])
_CASE = st.sampled_from([str.upper, str.lower, str.title])


@settings(max_examples=1500, deadline=None)
@given(
    base=_BASES,
    quote=st.sampled_from(symbols.DOLLAR_QUOTES),
    sep=st.one_of(st.just(""), _SEPARATORS),
    case=_CASE,
)
def test_dollar_pair_is_its_base_or_rejected_never_another_asset(base, quote, sep, case):
    raw = case(f"{base}{sep}{quote}")
    token = f"{base}{quote}"
    if not sep and (token in symbols.OTHER_QUOTES or token in symbols.BASES_ENDING_IN_A_QUOTE):
        # "B"+"USD" is the token BUSD: a whole token that is a known asset is read as written
        assert normalize_symbol(raw) == Instrument(token)
        return
    try:
        instrument = normalize_symbol(raw)
    except SymbolError:
        # only when the base is itself a dollar quote, or the split is ambiguous (IOSTUSD)
        assert base in symbols.DOLLAR_QUOTES or (not sep and quote == "USD")
        return
    assert instrument == Instrument(base)


@settings(max_examples=1500, deadline=None)
@given(
    base=_BASES,
    quote=st.sampled_from(symbols.OTHER_QUOTES),
    sep=st.one_of(st.just(""), _SEPARATORS),
    case=_CASE,
)
def test_pair_in_another_quote_is_rejected(base, quote, sep, case):
    raw = case(f"{base}{sep}{quote}")
    token = f"{base}{quote}"
    extends_dollar = any(quote.endswith(d) for d in symbols.DOLLAR_QUOTES)
    if sep or not (
        token in symbols.BASES_ENDING_IN_A_QUOTE
        or (extends_dollar and len(base) < symbols.MIN_BASE_FOR_EXTENDED_QUOTE)
    ):
        with pytest.raises(SymbolError):
            normalize_symbol(raw)
    elif token in symbols.BASES_ENDING_IN_A_QUOTE:
        assert normalize_symbol(raw) == Instrument(token)
    else:  # DOTUSD: the dollar reading of a short base, by rule
        with contextlib.suppress(SymbolError):  # e.g. the remaining base is itself a dollar quote
            assert normalize_symbol(raw) == Instrument(token[:-3])


@settings(max_examples=1000, deadline=None)
@given(
    exchange=st.sampled_from(sorted(symbols.EXCHANGE_PREFIXES)),
    base=_BASES,
    quote=st.sampled_from(symbols.QUOTES),
    sep=st.one_of(st.just(""), _SEPARATORS),
)
def test_known_exchange_prefix_changes_nothing(exchange, base, quote, sep):
    plain = f"{base}{sep}{quote}"

    def outcome(text):
        try:
            return normalize_symbol(text)
        except SymbolError:
            return "rejected"

    assert outcome(f"{exchange}:{plain}") == outcome(plain)


@settings(max_examples=2000, deadline=None)
@given(
    raw=st.one_of(
        st.text(), st.text(alphabet="ABCDEFTUSDPERP:/-_. 0123"), st.binary(), st.integers(), st.none()
    )
)
def test_normalize_symbol_raises_only_symbol_error(raw):
    try:
        instrument = normalize_symbol(raw)
    except SymbolError:
        return
    assert symbols._BASE.match(instrument.base)
    assert instrument.base not in symbols.DOLLAR_QUOTES
