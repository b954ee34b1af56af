"""A strategy's extra inputs: declarations checked, arrays built and aligned as-of."""

import numpy as np
import pytest

from mmats.data import load
from mmats.data.align import FIELDS
from mmats.data.extras import (
    ExtraInput,
    extra_arrays,
    load_others,
    parse_inputs,
    series_needed,
)
from mmats.errors import ConfigError, DataError

M5 = 5 * 60 * 10**9


def _arrays(spec):
    candles = load(spec)
    return {"ts": candles["ts"].to_numpy("M8[ns]").view(np.int64),
            **{f: candles[f].to_numpy() for f in FIELDS}}


def test_declarations_become_inputs_in_order_with_defaults():
    inputs = parse_inputs({"trend": {"timeframe": "1h"},
                           "btc": {"symbol": "BTC/USDT", "field": "volume"},
                           "far": {"venue": "binance", "symbol": "BTC/USDT",
                                   "timeframe": "4h"}}, "s")
    assert inputs == (ExtraInput("trend", "close", "1h"),
                      ExtraInput("btc", "volume", None, "BTC/USDT"),
                      ExtraInput("far", "close", "4h", "BTC/USDT", "binance"))
    assert series_needed(inputs, venue="bittrex", symbol="ETH/BTC", timeframe="5m") == [
        ("bittrex", "BTC/USDT", "5m"), ("binance", "BTC/USDT", "4h")]
    assert parse_inputs(None, "s") == ()


@pytest.mark.parametrize(("declared", "message"), [
    ([1], "INPUTS must be a dict"),
    ({"2x": {"timeframe": "1h"}}, r"INPUTS\['2x'\]: the name must be a Python identifier"),
    ({"a": "1h"}, r"INPUTS\['a'\] must be a dict"),
    ({"a": {"tf": "1h"}}, "unknown key 'tf'"),
    ({"a": {"timeframe": 60}}, r"INPUTS\['a'\].timeframe must be a non-empty string"),
    ({"a": {"timeframe": "1hour"}}, r"INPUTS\['a'\].timeframe: timeframe '1hour'"),
    ({"a": {"timeframe": "1h", "field": "vwap"}}, "field must be one of open"),
    ({"a": {"field": "high"}}, "the strategy's own high"),
])
def test_bad_declarations_are_named(declared, message):
    with pytest.raises(ConfigError, match=message):
        parse_inputs(declared, "strategy 'mine'")


def test_own_higher_timeframe_and_another_symbol_line_up_as_of():
    own = _arrays("bittrex:ETH/BTC:5m")
    inputs = parse_inputs({"h1": {"timeframe": "1h"}, "h1_high": {"timeframe": "1h",
                                                                  "field": "high"},
                           "ltc": {"symbol": "LTC/BTC"}}, "s")
    keys = series_needed(inputs, venue="bittrex", symbol="ETH/BTC", timeframe="5m")
    others = load_others(keys)
    arrays = extra_arrays(inputs, own, "5m", venue="bittrex", symbol="ETH/BTC",
                          others=others)
    assert list(arrays) == ["h1", "h1_high", "ltc"]
    ltc = others[("bittrex", "LTC/BTC", "5m")]
    # same timeframe, same grid: LTC's bar is seen at the ETH bar closing with it
    np.testing.assert_array_equal(arrays["ltc"], ltc["close"])
    # the hour that closes at an ETH bar's close: its last 5m close is that bar's close
    hour_end = (own["ts"] + M5) % (12 * M5) == 0
    np.testing.assert_array_equal(arrays["h1"][hour_end][1:], own["close"][hour_end][1:])
    assert np.nanmax(arrays["h1_high"] - arrays["h1"]) >= 0


def test_gaps_in_the_other_series_carry_its_last_bar():
    own = _arrays("bittrex:ETH/BTC:5m")
    inputs = parse_inputs({"ada": {"symbol": "ADA/BTC"}}, "s")
    others = load_others([("bittrex", "ADA/BTC", "5m")])
    ada = extra_arrays(inputs, own, "5m", venue="bittrex", symbol="ETH/BTC",
                       others=others)["ada"]
    missing = ~np.isin(own["ts"], others[("bittrex", "ADA/BTC", "5m")]["ts"])
    assert missing.sum() == 40
    first = int(np.flatnonzero(missing)[0])
    assert ada[first] == ada[first - 1] and not np.isnan(ada).any()


def test_given_data_wins_over_the_store_and_missing_series_are_named():
    own = _arrays("bittrex:ETH/BTC:5m")
    inputs = parse_inputs({"x": {"symbol": "XBT/USD", "venue": "nowhere"}}, "s")
    with pytest.raises(DataError, match="'x' reads nowhere:XBT/USD:5m, which was not given"):
        extra_arrays(inputs, own, "5m", venue="bittrex", symbol="ETH/BTC", others={})
    frame = load("bittrex:LTC/BTC:5m")
    others = load_others([("nowhere", "XBT/USD", "5m")],
                         given={"nowhere:XBT/USD:5m": frame})
    x = extra_arrays(inputs, own, "5m", venue="bittrex", symbol="ETH/BTC", others=others)["x"]
    np.testing.assert_array_equal(x, frame["close"].to_numpy())
    with pytest.raises(ConfigError, match="name it VENUE:SYMBOL:TIMEFRAME"):
        load_others([], given={"LTC/BTC": frame})


def test_a_shorter_other_timeframe_is_refused():
    own = _arrays("bittrex:ETH/BTC:5m")
    inputs = parse_inputs({"fast": {"symbol": "LTC/BTC", "timeframe": "1m"}}, "s")
    others = {("bittrex", "LTC/BTC", "1m"): _arrays("bittrex:LTC/BTC:5m")}
    with pytest.raises(ConfigError, match="1m bars are shorter"):
        extra_arrays(inputs, own, "5m", venue="bittrex", symbol="ETH/BTC", others=others)
