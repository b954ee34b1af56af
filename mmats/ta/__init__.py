"""Technical indicators as numba functions, callable inside ``@njit`` strategies.

Each takes float64 arrays (and integer periods, float multipliers) and returns float64
arrays of the input's length, NaN during its warm-up; tuples where there are several
lines. Every docstring gives the formula, the warm-up and any convention that differs
from TA-Lib; tests/nb/test_ta*.py check each against TA-Lib (or, for the ones TA-Lib
lacks, a pandas reference) on the bundled sample data.

NaN inputs:

- Leading NaNs are skipped: an indicator starts at the first bar where its inputs are
  numbers and counts its warm-up from there, as TA-Lib's Python wrapper does (so
  ``sma(rsi(close, 14), 5)`` works).
- A NaN later on: window indicators (SMA, WMA, stddev, highest, CCI, ROC, ...) give NaN
  while it lies inside their window and recover after; recursive ones (EMA and what is
  built on it, Wilder's averages: RSI, ATR, ADX; KAMA, SAR, SuperTrend, OBV, A/D) stay NaN
  from there on, since their value would depend on how the hole were filled. The candle
  store refuses NaN, so this concerns derived series only.

Example::

    from numba import njit
    from mmats import ta

    @njit(cache=True)
    def signal(open, high, low, close, volume, period):
        trend = ta.ema(close, period)
        strength = ta.adx(high, low, close, 14)
        ...
"""

from mmats.ta._core import ema, sma
from mmats.ta.averages import dema, hma, kama, tema, trima, wma
from mmats.ta.oscillators import (
    apo,
    bop,
    cci,
    cmo,
    macd,
    mom,
    ppo,
    roc,
    rsi,
    stoch,
    stochf,
    stochrsi,
    trix,
    ultosc,
    willr,
)
from mmats.ta.trend import (
    adx,
    adxr,
    aroon,
    aroonosc,
    dx,
    ichimoku,
    linearreg_slope,
    minus_di,
    plus_di,
    sar,
    supertrend,
)
from mmats.ta.volatility import (
    atr,
    bbands,
    donchian,
    highest,
    keltner,
    lowest,
    midprice,
    natr,
    stddev,
    trange,
    zscore,
)
from mmats.ta.volume import ad, adosc, mfi, obv, vwap_rolling, vwap_session

__all__ = [
    # averages
    "sma", "ema", "wma", "dema", "tema", "trima", "kama", "hma",
    # oscillators and momentum
    "rsi", "cmo", "stoch", "stochf", "stochrsi", "cci", "willr", "roc", "mom", "macd",
    "apo", "ppo", "trix", "ultosc", "bop",
    # trend
    "plus_di", "minus_di", "dx", "adx", "adxr", "aroon", "aroonosc", "sar",
    "linearreg_slope", "ichimoku", "supertrend",
    # volatility
    "trange", "atr", "natr", "stddev", "bbands", "keltner", "donchian", "highest",
    "lowest", "midprice", "zscore",
    # volume
    "obv", "ad", "adosc", "mfi", "vwap_session", "vwap_rolling",
]
