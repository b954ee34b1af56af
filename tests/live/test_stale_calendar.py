"""The stale-data halt counts only the market's trading time: a forex sleeve is not
halted over the weekend, a 24/7 crypto sleeve is."""

import pandas as pd
import pytest

from mmats.data import CandleStore, load
from mmats.data.calendar import trading_ns_between
from mmats.live import control
from mmats.live.config import parse_config

HOUR = 3_600_000_000_000


def _config(tmp_path, market_type):
    return parse_config({
        "mode": "paper", "stale_after_bars": 3,
        "markets": {"m": {"type": market_type, "feed": "fx", "execution": "paper",
                          "symbols": ["EUR/USD"], "timeframe": "1h"}},
        "models": [{"id": "rsi", "strategy": "rsi_reversion", "market": "m"}],
        "notifications": [f"file://{tmp_path / 'notes.log'}"],
        "journal": str(tmp_path / "journal.sqlite"), "data_root": str(tmp_path / "data"),
    })


@pytest.fixture
def friday(tmp_path):
    """The store holds EUR/USD up to a Friday's last bar (closing 21:00 or 22:00 UTC)."""
    candles = load("fx:EUR/USD:1h")
    day = candles["ts"].dt.day_of_week
    last = int(((day == 4) & (day.shift(-1) == 6)).to_numpy().nonzero()[0][-1])
    CandleStore(tmp_path / "data").write("fx", "EUR/USD", "1h", candles.iloc[:last + 1])
    return candles, last


def _at(stamp, hours=0.0):
    return stamp.value + int(hours * HOUR)


@pytest.mark.parametrize("market_type", ["forex", "crypto"])
@pytest.mark.slow
def test_a_weekend_is_not_silence_for_forex_but_is_for_crypto(tmp_path, friday,
                                                              market_type):
    candles, last = friday
    config = _config(tmp_path, market_type)
    friday_close = candles["ts"].iloc[last] + pd.Timedelta(hours=1)
    assert friday_close.day_name() == "Friday" and friday_close.hour in (21, 22)
    control.tick_once(config, now_ns=_at(friday_close))
    assert control.status(config)["rsi:EUR/USD"]["trading_state"] == "ACTIVE"
    sunday_evening = _at(friday_close.floor("D"), 69.5)  # Sunday 21:30 UTC: still shut
    control.tick_once(config, now_ns=sunday_evening)
    state = control.status(config)["rsi:EUR/USD"]["trading_state"]
    assert state == ("ACTIVE" if market_type == "forex" else "HALTED")
    if market_type == "forex":  # Monday 01:30: 3.5 trading hours without a bar
        control.tick_once(config, now_ns=_at(friday_close.floor("D"), 73.5))
        assert control.status(config)["rsi:EUR/USD"]["trading_state"] == "HALTED"


@pytest.mark.slow
def test_a_new_week_bar_keeps_the_forex_sleeve_going(tmp_path, friday):
    candles, last = friday
    config = _config(tmp_path, "forex")
    CandleStore(tmp_path / "data").write("fx", "EUR/USD", "1h", candles.iloc[:last + 10])
    first_of_week = candles["ts"].iloc[last + 1]
    assert first_of_week.day_name() == "Sunday"
    for bar in range(last, last + 10):
        control.tick_once(config, now_ns=_at(candles["ts"].iloc[bar], 1))
        assert control.status(config)["rsi:EUR/USD"]["trading_state"] == "ACTIVE"


def test_trading_time_by_calendar():
    friday_21h = pd.Timestamp("2023-11-24 21:00", tz="UTC").value
    monday_21h = friday_21h + 72 * HOUR
    assert trading_ns_between("24/7", friday_21h, monday_21h, HOUR) == 72 * HOUR
    assert trading_ns_between("forex", friday_21h, monday_21h, HOUR) == 23 * HOUR
    # US stocks: Monday's session only (14:30-20:00 UTC), intraday bars
    assert trading_ns_between("stocks", friday_21h, monday_21h, HOUR) == int(5.5 * HOUR)
    # daily bars: whole weekdays
    assert trading_ns_between("stocks", friday_21h, monday_21h, 24 * HOUR) == 24 * HOUR  # Friday 21-24h and Monday 0-21h
