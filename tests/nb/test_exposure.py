"""The exposure the bar step acts on: a strategy's signal, its confidence and sentiment."""

import math

import numpy as np
import pytest

from mmats.data.sentiment import SentimentRule
from mmats.nb.exposure import effective_signal, effective_signals, stepped

INF = math.inf


@pytest.mark.parametrize(("confidence", "step", "expected"), [
    (0.6, 0.0, 0.6), (0.6, 0.25, 0.5), (0.75, 0.25, 0.75), (1.0, 0.25, 1.0),
    (0.3, 0.1, 0.3),  # 0.3 / 0.1 is 2.9999999999999996: not rounded down to 0.2
    (1.7, 0.0, 1.0), (-0.2, 0.0, 0.0), (math.nan, 0.25, 1.0), (0.24, 0.25, 0.0)])
def test_confidence_is_clipped_and_stepped_down(confidence, step, expected):
    assert stepped(confidence, step) == pytest.approx(expected, abs=1e-12)


def test_confidence_scales_only_models_that_size_by_it():
    assert effective_signal(1.0, 0.6, True, 0.0, 1.0, INF) == pytest.approx(0.6)
    assert effective_signal(1.0, 0.6, False, 0.0, 1.0, INF) == 1.0
    assert effective_signal(-0.5, 0.5, True, 0.0, 1.0, INF) == pytest.approx(-0.25)
    assert effective_signal(2.0, 1.0, True, 0.0, 1.0, INF) == 2.0  # leverage is the sizing's


def test_nan_keeps_the_position_whatever_the_confidence_and_sentiment():
    assert math.isnan(effective_signal(math.nan, 0.1, True, 0.0, 0.2, 0.1))


def test_a_confidence_of_zero_asks_for_flat_and_never_minus_zero():
    value = effective_signal(-1.0, 0.0, True, 0.0, 1.0, INF)
    assert value == 0.0 and math.copysign(1.0, value) == 1.0


def test_sentiment_lowers_then_caps_keeping_the_side():
    assert effective_signal(1.0, math.nan, True, 0.0, 0.6, INF) == pytest.approx(0.6)
    assert effective_signal(-1.0, math.nan, False, 0.0, 0.6, 0.25) == -0.25
    assert effective_signal(0.2, 0.5, True, 0.0, 1.0, 0.25) == pytest.approx(0.1)


def test_arrays_equal_the_scalar_at_every_bar_with_and_without_extras():
    rng = np.random.default_rng(7)
    n = 500
    signal = np.where(rng.random(n) < 0.2, np.nan, rng.choice([-1.0, 0.0, 0.5, 1.0], n))
    confidence = np.where(rng.random(n) < 0.1, np.nan, rng.random(n))
    rule = SentimentRule(weight=0.5, cap_above=0.6, cap=0.25)
    multiplier, cap = rule.apply(rng.uniform(-1, 1, n), signal)
    out = effective_signals(signal, confidence, True, 0.25, multiplier, cap)
    for i in range(n):
        expected = effective_signal(signal[i], confidence[i], True, 0.25, multiplier[i],
                                    cap[i])
        assert (math.isnan(out[i]) and math.isnan(expected)) or out[i] == expected
    bare = effective_signals(signal, np.empty(0), True, 0.25, np.empty(0), np.empty(0))
    np.testing.assert_array_equal(bare, signal + 0.0)
    assert (np.abs(out[~np.isnan(out)]) <= 1.0).all()
    assert (np.abs(out) < np.abs(signal))[~np.isnan(signal) & (signal != 0)].any()
