"""Each mmats.ta indicator TA-Lib has equals TA-Lib's own result on the bundled sample
candles (crypto, forex, stocks) after its documented warm-up, to 1e-9 relative.

A case names, per output, the warm-up its docstring documents; the test checks the
output is NaN exactly that long and numbers after, then compares it with TA-Lib where
TA-Lib has values. Where TA-Lib's own warm-up is longer (it hides MACD's line and
%K until the slower line exists) the case says so in ``hidden``. The deliberate
conventions (a flat window reads 50, not TA-Lib's 0) are applied to TA-Lib's answer by
functions named after them (``flat_window_reads_50``: on the samples it bites on the
Stochastic RSI of ADA/BTC, whose RSI repeats itself while the price stands still).
"""

import numpy as np
import pandas as pd
import pytest
import talib
from ta_data import SAMPLES, assert_close, first_finite, load_bars

from mmats import ta


@pytest.fixture(scope="module", params=sorted(SAMPLES))
def bars(request):
    return load_bars(request.param)


def price(d):
    return float(np.nanmedian(np.abs(d.close)))


def percent(d):
    return 100.0


def unit(d):
    return 1.0


def volume_total(d):
    return float(np.nansum(d.volume))


FLAT = 1e-12  # mmats.ta.oscillators.RELATIVE_FLAT


def _rolling(values, period):
    return pd.Series(values).rolling(period)


def _flat_windows(high, low, period):
    top = _rolling(high, period).max().to_numpy()
    bottom = _rolling(low, period).min().to_numpy()
    return top - bottom <= FLAT * np.maximum(np.abs(top), np.abs(bottom))


def flat_window_reads_50(talib_lines, high, low, close, period, smoothings):
    """A flat %K window reads 50 in mmats.ta, 0 in TA-Lib: TA-Lib's lines, except at bars
    that a flat window reached (through the smoothing), which take a pandas reference of
    %K with that convention, smoothed alike."""
    top = _rolling(high, period).max().to_numpy()
    bottom = _rolling(low, period).min().to_numpy()
    flat = _flat_windows(high, low, period)
    with np.errstate(divide="ignore", invalid="ignore"):
        line = 100.0 * (close - bottom) / (top - bottom)
    line[flat] = 50.0
    touched = flat.astype(float)
    expected = []
    for talib_line, smoothing in zip(talib_lines, smoothings, strict=True):
        line = _rolling(line, smoothing).mean().to_numpy()
        touched = _rolling(touched, smoothing).max().to_numpy() > 0
        replace = touched & np.isfinite(talib_line)
        adjusted = talib_line.copy()
        adjusted[replace] = line[replace]
        expected.append(adjusted)
        touched = touched.astype(float)
    return tuple(expected)


def _stochf_expected(d):
    lines = talib.STOCHF(d.high, d.low, d.close, 5, 3, 0)
    return flat_window_reads_50(lines, d.high, d.low, d.close, 5, (1, 3))


def _stoch_expected(d):
    lines = talib.STOCH(d.high, d.low, d.close, 5, 3, 0, 3, 0)
    return flat_window_reads_50(lines, d.high, d.low, d.close, 5, (3, 3))


def _stochrsi_expected(d):
    lines = talib.STOCHRSI(d.close, 14, 5, 3, 0)
    strength = talib.RSI(d.close, 14)
    return flat_window_reads_50(lines, strength, strength, strength, 5, (1, 3))


def _willr_expected(d):
    expected = talib.WILLR(d.high, d.low, d.close, 14)
    expected[_flat_windows(d.high, d.low, 14)] = -50.0  # TA-Lib 0, mmats.ta the midpoint
    return (expected,)


# name: (mmats.ta call, TA-Lib call, documented warm-ups, scale, hidden)
CASES = {
    "sma": (lambda d: ta.sma(d.close, 20), lambda d: talib.SMA(d.close, 20), (19,), price),
    "sma_2": (lambda d: ta.sma(d.close, 2), lambda d: talib.SMA(d.close, 2), (1,), price),
    "ema": (lambda d: ta.ema(d.close, 20), lambda d: talib.EMA(d.close, 20), (19,), price),
    "ema_200": (lambda d: ta.ema(d.close, 200), lambda d: talib.EMA(d.close, 200), (199,),
                price),
    "wma": (lambda d: ta.wma(d.close, 20), lambda d: talib.WMA(d.close, 20), (19,), price),
    "wma_3": (lambda d: ta.wma(d.close, 3), lambda d: talib.WMA(d.close, 3), (2,), price),
    "dema": (lambda d: ta.dema(d.close, 20), lambda d: talib.DEMA(d.close, 20), (38,), price),
    "tema": (lambda d: ta.tema(d.close, 20), lambda d: talib.TEMA(d.close, 20), (57,), price),
    "trima_even": (lambda d: ta.trima(d.close, 20), lambda d: talib.TRIMA(d.close, 20), (19,),
                   price),
    "trima_odd": (lambda d: ta.trima(d.close, 15), lambda d: talib.TRIMA(d.close, 15), (14,),
                  price),
    "kama": (lambda d: ta.kama(d.close, 30), lambda d: talib.KAMA(d.close, 30), (30,), price),
    "kama_10": (lambda d: ta.kama(d.close, 10), lambda d: talib.KAMA(d.close, 10), (10,),
                price),
    "rsi": (lambda d: ta.rsi(d.close, 14), lambda d: talib.RSI(d.close, 14), (14,), percent),
    "rsi_2": (lambda d: ta.rsi(d.close, 2), lambda d: talib.RSI(d.close, 2), (2,), percent),
    "cmo": (lambda d: ta.cmo(d.close, 14), lambda d: talib.CMO(d.close, 14), (14,), percent),
    "stoch": (lambda d: ta.stoch(d.high, d.low, d.close, 5, 3, 3), _stoch_expected, (6, 8),
              percent, {0: 8}),
    "stochf": (lambda d: ta.stochf(d.high, d.low, d.close, 5, 3), _stochf_expected, (4, 6),
               percent, {0: 6}),
    "stochrsi": (lambda d: ta.stochrsi(d.close, 14, 5, 3),
                 _stochrsi_expected, (18, 20), percent, {0: 20}),
    "cci": (lambda d: ta.cci(d.high, d.low, d.close, 14),
            lambda d: talib.CCI(d.high, d.low, d.close, 14), (13,), percent),
    "willr": (lambda d: ta.willr(d.high, d.low, d.close, 14), _willr_expected, (13,), percent),
    "roc": (lambda d: ta.roc(d.close, 10), lambda d: talib.ROC(d.close, 10), (10,), percent),
    "mom": (lambda d: ta.mom(d.close, 10), lambda d: talib.MOM(d.close, 10), (10,), price),
    "macd": (lambda d: ta.macd(d.close, 12, 26, 9), lambda d: talib.MACD(d.close, 12, 26, 9),
             (25, 33, 33), price, {0: 33}),
    "macd_5_35_5": (lambda d: ta.macd(d.close, 5, 35, 5),
                    lambda d: talib.MACD(d.close, 5, 35, 5), (34, 38, 38), price, {0: 38}),
    "apo": (lambda d: ta.apo(d.close, 12, 26), lambda d: talib.APO(d.close, 12, 26, 1), (25,),
            price),
    "ppo": (lambda d: ta.ppo(d.close, 12, 26), lambda d: talib.PPO(d.close, 12, 26, 1), (25,),
            percent),
    "trix": (lambda d: ta.trix(d.close, 30), lambda d: talib.TRIX(d.close, 30), (88,),
             percent),
    "ultosc": (lambda d: ta.ultosc(d.high, d.low, d.close, 7, 14, 28),
               lambda d: talib.ULTOSC(d.high, d.low, d.close, 7, 14, 28), (28,), percent),
    "ultosc_unsorted": (lambda d: ta.ultosc(d.high, d.low, d.close, 28, 7, 14),
                        lambda d: talib.ULTOSC(d.high, d.low, d.close, 28, 7, 14), (28,),
                        percent),
    "bop": (lambda d: ta.bop(d.open, d.high, d.low, d.close),
            lambda d: talib.BOP(d.open, d.high, d.low, d.close), (0,), unit),
    "plus_di": (lambda d: ta.plus_di(d.high, d.low, d.close, 14),
                lambda d: talib.PLUS_DI(d.high, d.low, d.close, 14), (14,), percent),
    "minus_di": (lambda d: ta.minus_di(d.high, d.low, d.close, 14),
                 lambda d: talib.MINUS_DI(d.high, d.low, d.close, 14), (14,), percent),
    "dx": (lambda d: ta.dx(d.high, d.low, d.close, 14),
           lambda d: talib.DX(d.high, d.low, d.close, 14), (14,), percent),
    "adx": (lambda d: ta.adx(d.high, d.low, d.close, 14),
            lambda d: talib.ADX(d.high, d.low, d.close, 14), (27,), percent),
    "adx_5": (lambda d: ta.adx(d.high, d.low, d.close, 5),
              lambda d: talib.ADX(d.high, d.low, d.close, 5), (9,), percent),
    "adxr": (lambda d: ta.adxr(d.high, d.low, d.close, 14),
             lambda d: talib.ADXR(d.high, d.low, d.close, 14), (40,), percent),
    "aroon": (lambda d: ta.aroon(d.high, d.low, 14), lambda d: talib.AROON(d.high, d.low, 14),
              (14, 14), percent),
    "aroonosc": (lambda d: ta.aroonosc(d.high, d.low, 14),
                 lambda d: talib.AROONOSC(d.high, d.low, 14), (14,), percent),
    "sar": (lambda d: ta.sar(d.high, d.low, 0.02, 0.2),
            lambda d: talib.SAR(d.high, d.low, 0.02, 0.2), (1,), price),
    "sar_fast": (lambda d: ta.sar(d.high, d.low, 0.05, 0.5),
                 lambda d: talib.SAR(d.high, d.low, 0.05, 0.5), (1,), price),
    "linearreg_slope": (lambda d: ta.linearreg_slope(d.close, 14),
                        lambda d: talib.LINEARREG_SLOPE(d.close, 14), (13,), price),
    "trange": (lambda d: ta.trange(d.high, d.low, d.close),
               lambda d: talib.TRANGE(d.high, d.low, d.close), (1,), price),
    "atr": (lambda d: ta.atr(d.high, d.low, d.close, 14),
            lambda d: talib.ATR(d.high, d.low, d.close, 14), (14,), price),
    "natr": (lambda d: ta.natr(d.high, d.low, d.close, 14),
             lambda d: talib.NATR(d.high, d.low, d.close, 14), (14,), percent),
    "stddev": (lambda d: ta.stddev(d.close, 20, 1.0), lambda d: talib.STDDEV(d.close, 20, 1.0),
               (19,), price),
    "bbands": (lambda d: ta.bbands(d.close, 20, 2.0, 2.0),
               lambda d: talib.BBANDS(d.close, 20, 2.0, 2.0, 0), (19, 19, 19), price),
    "highest": (lambda d: ta.highest(d.high, 20), lambda d: talib.MAX(d.high, 20), (19,),
                price),
    "lowest": (lambda d: ta.lowest(d.low, 20), lambda d: talib.MIN(d.low, 20), (19,), price),
    "midprice": (lambda d: ta.midprice(d.high, d.low, 14),
                 lambda d: talib.MIDPRICE(d.high, d.low, 14), (13,), price),
    "donchian": (lambda d: ta.donchian(d.high, d.low, 20),
                 lambda d: (talib.MAX(d.high, 20), talib.MIDPRICE(d.high, d.low, 20),
                            talib.MIN(d.low, 20)), (19, 19, 19), price),
    "obv": (lambda d: ta.obv(d.close, d.volume), lambda d: talib.OBV(d.close, d.volume), (0,),
            volume_total),
    "ad": (lambda d: ta.ad(d.high, d.low, d.close, d.volume),
           lambda d: talib.AD(d.high, d.low, d.close, d.volume), (0,), volume_total),
    "adosc": (lambda d: ta.adosc(d.high, d.low, d.close, d.volume, 3, 10),
              lambda d: talib.ADOSC(d.high, d.low, d.close, d.volume, 3, 10), (9,),
              volume_total),
    "mfi": (lambda d: ta.mfi(d.high, d.low, d.close, d.volume, 14),
            lambda d: talib.MFI(d.high, d.low, d.close, d.volume, 14), (14,), percent),
}


def _as_tuple(value):
    return value if isinstance(value, tuple) else (value,)


@pytest.mark.parametrize("name", sorted(CASES))
def test_equals_talib_after_the_documented_warmup(bars, name):
    mine_call, talib_call, warmups, scale = CASES[name][:4]
    hidden = CASES[name][4] if len(CASES[name]) > 4 else {}
    mine = _as_tuple(mine_call(bars))
    expected = _as_tuple(talib_call(bars))
    assert len(mine) == len(expected) == len(warmups)
    for k, (line, reference, warmup) in enumerate(zip(mine, expected, warmups, strict=True)):
        label = f"{name}[{k}] on {bars.name}"
        assert line.dtype == np.float64 and line.shape == bars.close.shape, label
        assert np.isnan(line[:warmup]).all(), f"{label}: a value inside the warm-up"
        assert np.isfinite(line[warmup:]).all(), f"{label}: NaN after the warm-up"
        assert first_finite(reference) == hidden.get(k, warmup), (
            f"{label}: TA-Lib's warm-up is {first_finite(reference)}")
        assert_close(line, reference, scale(bars), label)
