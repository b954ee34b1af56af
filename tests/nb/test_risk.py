"""Risk gates on bars built by hand, stepped bar by bar as the live runner does: daily
loss limit, max drawdown, leverage cap, equity at zero."""

import math

import numpy as np
import pytest
from kernel_runs import HOUR_NS, bars, run, step

from mmats.types import FillReason, OrderStatus, TradingState

NAN = math.nan
CASH = 10_000.0
FLAT = (100, 101, 99, 100)
ACTIVE, REDUCING, HALTED = TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED


def _states(result):
    return [TradingState(s) for s in result.states["trading_state"]]


def test_daily_loss_limit_trips_at_the_right_bar_and_blocks_increases_until_next_day():
    rows = [
        FLAT,  # 0  00:00  signal 0.5
        FLAT,  # 1  03:00  buy 50 at 100
        (100, 100, 90.5, 91),  # 2  06:00  equity 9550: -4.5 %, still active
        (91, 92, 88.5, 89),  # 3  09:00  equity 9450: -5.5 % -> REDUCING; signal 1 blocked
        (89, 90, 88, 89.5),  # 4  12:00  signal 1 still blocked
        (89.5, 90, 89, 89.5),  # 5  15:00  signal 0.25: a reduction is allowed
        (89.5, 90, 89, 89.5),  # 6  18:00  sell down to 0.25; signal 1 blocked
        (89.5, 90, 89, 89.5),  # 7  21:00  still blocked
        (89.5, 90, 89, 89.5),  # 8  00:00 next day: ACTIVE again, signal 1 accepted
        (90, 91, 89, 90),  # 9  buy up to 1
    ]
    signal = [0.5, NAN, NAN, 1.0, 1.0, 0.25, 1.0, 1.0, 1.0, NAN]
    result = step(bars(rows, step_ns=3 * HOUR_NS), signal, max_daily_loss_pct=5.0)
    assert _states(result) == [ACTIVE] * 3 + [REDUCING] * 5 + [ACTIVE] * 2
    assert list(result.orders["bar"]) == [1, 6, 9]
    assert list(result.orders["status"]) == [OrderStatus.FILLED] * 3
    np.testing.assert_allclose(result.position[1:6], 50.0, rtol=1e-12)
    equity_at_open = 5_000.0 + 50 * 89.5
    reduced = 0.25 * equity_at_open / 89.5
    np.testing.assert_allclose(result.position[6:9], reduced, rtol=1e-12)
    assert result.fills["side"].tolist() == [1, -1, 1]
    equity_at_open = result.states["cash"][8] + result.position[8] * 90.0
    assert result.position[9] == pytest.approx(equity_at_open / 90.0, rel=1e-12)
    # the day's reference is the equity at its first bar's start
    assert result.states["day_start_equity"][7] == CASH
    assert result.states["day_start_equity"][8] == pytest.approx(result.equity[7], rel=1e-15)


def test_reducing_turns_a_flip_into_a_flatten_and_retries_the_flip_next_day():
    rows = [FLAT, FLAT, (100, 100, 93, 94), FLAT, FLAT, FLAT, FLAT, FLAT, FLAT, FLAT]
    signal = [1.0, NAN, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, NAN]
    result = step(bars(rows, step_ns=3 * HOUR_NS), signal, max_daily_loss_pct=5.0)
    assert _states(result)[2:8] == [REDUCING] * 6
    assert list(result.orders["bar"]) == [1, 3, 9]
    assert result.fills["position_after"][1] == 0.0  # flattened, not flipped
    np.testing.assert_array_equal(result.position[3:9], 0.0)
    assert result.position[9] < 0.0  # the short came after the day rolled over


def test_max_drawdown_trips_flattens_at_next_open_and_stays_halted():
    rows = [
        FLAT,  # 0  signal 1
        (100, 106, 99.5, 105),  # 1  buy 100 at 100; peak 10500
        (105, 105.5, 95.5, 96),  # 2  drawdown 8.6 %
        (96, 96.5, 93.5, 94),  # 3  drawdown 10.5 % -> HALTED, flatten queued
        (95, 96, 94, 95.5),  # 4  sold at the open, 95
    ] + [FLAT] * 7
    signal = [1.0, NAN, NAN, NAN, -1.0, 1.0, 0.5, NAN, 1.0, -0.3, 0.0, 1.0]
    result = step(bars(rows, step_ns=12 * HOUR_NS), signal, max_drawdown_pct=10.0)
    assert _states(result) == [ACTIVE] * 3 + [HALTED] * 9
    assert result.states["target"][3] == 0.0
    assert result.states["target_reason"][3] == FillReason.RISK
    buy, flatten = result.fills
    assert flatten["bar"] == 4 and flatten["price"] == 95.0 and flatten["side"] == -1
    assert flatten["reason"] == FillReason.RISK
    assert flatten["qty"] == pytest.approx(100.0, rel=1e-12)
    assert result.orders["reason"][-1] == FillReason.RISK
    assert result.orders["decision_ts_ns"][-1] == result.states["target_ts_ns"][3]
    assert len(result.orders) == 2  # nothing after the flatten, whatever the signal says
    np.testing.assert_array_equal(result.position[4:], 0.0)
    np.testing.assert_allclose(result.equity[4:], 9_500.0, rtol=1e-12)
    (trade,) = result.trades
    assert trade["exit_reason"] == FillReason.RISK


def test_leverage_cap_clips_targets():
    prices = bars([FLAT] * 3)
    short = run(prices, [-3.0, NAN, NAN])  # a raw value beyond the cap of 1
    assert short.position[-1] == pytest.approx(-100.0, rel=1e-12)
    assert run(prices, [1.0, NAN, NAN], fraction=3.0, max_leverage=2.0).position[-1] == (
        pytest.approx(200.0, rel=1e-12))
    assert run(prices, [-1.0, NAN, NAN], allow_short=False).position[-1] == 0.0


def test_a_short_pushed_above_the_cap_is_reduced_at_the_next_open():
    rows = [FLAT, FLAT, (100, 121, 99, 120), (120, 121, 119, 120), (120, 121, 119, 120)]
    result = step(bars(rows), [-1.0, NAN, NAN, NAN, NAN], max_leverage=1.0)
    # short 100 at 100: cash 20000; at 120 equity is 8000 and exposure -1.5
    assert result.equity[2] == pytest.approx(8_000.0, rel=1e-12)
    assert result.states["target"][2] == -1.0
    assert result.states["target_reason"][2] == FillReason.RISK
    _, cut = result.fills
    assert cut["bar"] == 3 and cut["side"] == 1 and cut["reason"] == FillReason.RISK
    assert cut["position_after"] == pytest.approx(-8_000.0 / 120.0, rel=1e-12)
    assert result.position[4] == result.position[3]  # at the cap: nothing more to do
    assert len(result.orders) == 2


def test_a_levered_long_pushed_above_the_cap_is_reduced():
    rows = [FLAT, FLAT, (100, 100.5, 94.5, 95), (95, 96, 94, 95)]
    result = step(bars(rows), [1.0, NAN, NAN, NAN], fraction=2.0, max_leverage=2.0)
    assert result.position[1] == pytest.approx(200.0, rel=1e-12)
    # equity at 95: -10000 + 200 × 95 = 9000; exposure 19000 / 9000 = 2.11
    assert result.equity[2] == pytest.approx(9_000.0, rel=1e-12)
    assert result.position[3] == pytest.approx(2 * 9_000.0 / 95.0, rel=1e-12)
    assert result.fills["reason"][-1] == FillReason.RISK


def test_equity_at_zero_halts_and_flattens():
    rows = [FLAT, FLAT, (100, 215, 99, 210), (205, 206, 204, 205), FLAT, FLAT]
    result = step(bars(rows), [-1.0, NAN, NAN, NAN, -1.0, 1.0])
    assert result.equity[2] == pytest.approx(-1_000.0, rel=1e-12)  # 20000 - 100 × 210
    assert _states(result) == [ACTIVE] * 2 + [HALTED] * 4
    _, cover = result.fills
    assert cover["bar"] == 3 and cover["price"] == 205.0 and cover["reason"] == FillReason.RISK
    np.testing.assert_array_equal(result.position[3:], 0.0)
    assert len(result.orders) == 2
    assert result.equity[-1] == pytest.approx(-500.0, rel=1e-12)


def test_step_and_simulate_agree():
    """The runner's path (one call per bar) and the backtest loop give the same run."""
    rows = [FLAT, (100, 106, 99.5, 105), (105, 105.5, 95.5, 96), (96, 96.5, 93.5, 94),
            (95, 96, 94, 95.5), FLAT, (100, 101, 90, 91), FLAT]
    signal = [1.0, NAN, -0.5, NAN, 1.0, 0.2, -1.0, NAN]
    settings = dict(fee_bps=7, slippage_bps=3, max_drawdown_pct=12.0, lot_size=0.5)
    stepped = step(bars(rows), signal, stops=[4.0] * 8, **settings)
    simulated = run(bars(rows), signal, stops=[4.0] * 8, **settings)
    np.testing.assert_array_equal(stepped.equity, simulated.equity)
    np.testing.assert_array_equal(stepped.position, simulated.position)
    np.testing.assert_array_equal(stepped.fills, simulated.fills)
    np.testing.assert_array_equal(stepped.orders, simulated.orders)
    np.testing.assert_array_equal(stepped.trades, simulated.trades)


def test_reducing_never_buys_more_units_after_a_gap_and_retries_next_day():
    """Regression: a reduction decided at the close (0.45 < 0.47 exposure) must not turn
    into a buy when the next open gaps down and 0.45 of the equity is more units."""
    rows = [FLAT, FLAT, (100, 100, 88.5, 89), (60, 61, 59, 60)] + [(60, 61, 59, 60)] * 6
    signal = [0.5, NAN] + [0.45] * 8
    result = step(bars(rows, step_ns=3 * HOUR_NS), signal, max_daily_loss_pct=5.0)
    assert _states(result)[2:8] == [REDUCING] * 6
    # the gate lets 0.45 through at bar 2's close: it is below the 0.47 held at 89
    assert 0.45 < result.position[2] * 89.0 / result.equity[2] < 0.48
    # at 60, 0.45 of the equity (8000) is 60 units > 50 held: no order at all
    np.testing.assert_allclose(result.position[1:9], 50.0, rtol=1e-12)
    assert list(result.orders["bar"]) == [1, 9]
    # the signal persisted, so it was retried and filled once the day rolled over
    assert result.position[9] == pytest.approx(0.45 * result.equity[8] / 60.0, rel=1e-12)


def test_reducing_drops_the_rest_of_a_partial_fill_until_next_day():
    """Regression: the rest of a participation-capped buy placed while ACTIVE must not
    keep filling once the daily loss limit trips."""
    big = 1e6
    rows = [(100, 101, 99, 100, big), (100, 101, 99, 100, big), (100, 100, 87.5, 88, 20.0),
            (88, 89, 87, 88, 20.0)] + [(88, 89, 87, 88, big)] * 6
    signal = [0.5, 1.0] + [1.0] * 8
    result = step(bars(rows, step_ns=3 * HOUR_NS), signal, max_daily_loss_pct=5.0,
                  max_participation=0.1)
    assert list(result.orders["bar"]) == [1, 2, 9]
    assert list(result.orders["status"]) == [OrderStatus.FILLED, OrderStatus.PARTIAL,
                                             OrderStatus.FILLED]
    assert _states(result)[2:8] == [REDUCING] * 6
    np.testing.assert_allclose(result.position[2:9], 52.0, rtol=1e-12)
    equity_at_open = result.states["cash"][8] + 52.0 * 88.0
    assert result.position[9] == pytest.approx(equity_at_open / 88.0, rel=1e-12)


def test_a_leverage_cut_with_lots_rounds_the_position_toward_zero():
    """Regression: rounding the trade (not the position) toward zero left a reduction
    short of its target, above the cap, or rejected it outright when under one lot."""
    rows = [FLAT, FLAT, (100, 121, 99, 120), (120, 121, 119, 120), (120, 121, 119, 120)]
    result = step(bars(rows), [-1.0, NAN, NAN, NAN, NAN], lot_size=1.0)
    assert result.position[1] == -100.0
    assert result.position[3] == -66.0  # 8000 / 120 = 66.7 units at most
    assert abs(result.position[3]) * 120 / result.equity[3] <= 1.0

    scaled = [tuple(30 * p for p in row) for row in
              [FLAT, FLAT, (100, 111, 99, 110), (110, 111, 109, 110), (110, 111, 109, 110)]]
    result = step(bars(scaled), [-1.0, NAN, NAN, NAN, NAN], lot_size=1.0)
    assert result.position[1] == -3.0  # 9000 of 10000: three lots of 3000
    # at 3300 the equity is 9100 and the short 9900: cut to 2 lots, not left at 3
    assert result.orders["status"][-1] == OrderStatus.FILLED
    assert result.fills["reason"][-1] == FillReason.RISK
    np.testing.assert_array_equal(result.position[3:], -2.0)
    assert len(result.orders) == 2
