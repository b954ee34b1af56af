"""Sizing: exposure -> quantity, lot size, minimum notional, participation cap, and the
volatility-target and Kelly scales, on bars built by hand."""

import math

import numpy as np
import pandas as pd
import pytest
from kernel_runs import HOUR_NS, bars, config, run, step

from mmats.nb.sizing import exposure_scale, kelly_fraction, round_to_lot, target_quantity
from mmats.sleeve import new_state
from mmats.types import FillReason, OrderStatus

NAN = math.nan
CASH = 10_000.0


def test_all_in_buy_spends_all_cash_fee_included():
    prices = bars([(100, 101, 99, 100), (102, 104, 101, 103), (103, 105, 102, 104)])
    result = run(prices, [1.0, NAN, NAN], fee_bps=10)
    (fill,) = result.fills
    quantity = CASH / (102.0 * 1.001)
    assert fill["bar"] == 1 and fill["price"] == 102.0 and fill["side"] == 1
    assert fill["qty"] == pytest.approx(quantity, rel=1e-12)
    assert fill["fee"] == pytest.approx(quantity * 102.0 * 0.001, rel=1e-12)
    assert abs(fill["cash_after"]) < 1e-9  # every unit of cash spent, fee included
    assert result.equity[0] == CASH
    np.testing.assert_allclose(result.equity[1:], quantity * np.array([103.0, 104.0]),
                               rtol=1e-12)
    assert result.state[0]["fees_paid"] == pytest.approx(fill["fee"], rel=1e-15)


def test_decision_fills_at_next_open_never_on_the_signal_bar():
    rows = [(100 + k, 102 + k, 99 + k, 101 + k) for k in range(7)]
    prices = bars(rows)
    signal = [1.0, NAN, 0.0, 0.0, -0.5, NAN, 1.0]  # the last one has no next bar
    result = run(prices, signal)
    assert list(result.fills["bar"]) == [1, 3, 5]
    np.testing.assert_array_equal(result.fills["price"], prices.open[[1, 3, 5]])
    assert list(result.orders["bar"]) == [1, 3, 5]
    np.testing.assert_array_equal(result.orders["decision_ts_ns"], prices.ts_ns[[0, 2, 4]])
    assert list(result.orders["status"]) == [OrderStatus.FILLED] * 3
    np.testing.assert_allclose(result.orders["target_exposure"], [1.0, 0.0, -0.5])
    # the position changes only at the fill bars
    assert result.position[0] == 0.0
    assert result.position[1] == result.position[2] > 0
    assert result.position[3] == 0.0
    assert result.position[5] == result.position[6] < 0
    # short half the equity at bar 5's open: position value = 0.5 × equity
    equity_at_open = result.equity[4]  # flat since bar 3, so the equity is cash
    assert result.position[5] * prices.open[5] == pytest.approx(-0.5 * equity_at_open, rel=1e-12)


def test_slippage_and_fee_amounts_on_buy_and_sell():
    prices = bars([(100, 101, 99, 100), (100, 101, 99, 100), (105, 111, 104, 110),
                   (110, 112, 108, 109)])
    result = run(prices, [1.0, NAN, 0.0, NAN], fee_bps=10, slippage_bps=20)
    buy, sell = result.fills
    buy_price = 100.0 * 1.002
    quantity = CASH / (buy_price * 1.001)
    assert buy["price"] == pytest.approx(buy_price, rel=1e-15)
    assert buy["qty"] == pytest.approx(quantity, rel=1e-12)
    assert buy["fee"] == pytest.approx(quantity * buy_price * 0.001, rel=1e-12)
    assert buy["slippage"] == pytest.approx(quantity * 0.2, rel=1e-9)

    sell_price = 110.0 * 0.998
    assert sell["side"] == -1 and sell["bar"] == 3
    assert sell["price"] == pytest.approx(sell_price, rel=1e-15)
    assert sell["qty"] == pytest.approx(quantity, rel=1e-12)
    assert sell["fee"] == pytest.approx(quantity * sell_price * 0.001, rel=1e-12)
    assert sell["slippage"] == pytest.approx(quantity * 0.22, rel=1e-9)

    final = quantity * sell_price * (1 - 0.001)  # all cash was spent on the buy
    assert result.equity[-1] == pytest.approx(final, rel=1e-12)
    assert result.state[0]["fees_paid"] == pytest.approx(buy["fee"] + sell["fee"], rel=1e-12)
    (trade,) = result.trades
    assert trade["pnl"] == pytest.approx(final - CASH, rel=1e-9)


def test_slippage_is_clamped_into_the_bar_range():
    prices = bars([(100, 101, 99, 100), (100, 100.05, 99, 100), (100, 101, 99.99, 100.5)])
    result = run(prices, [1.0, 0.0, NAN], slippage_bps=20)
    buy, sell = result.fills
    assert buy["price"] == 100.05  # 100.2 would be above the high
    assert sell["price"] == 99.99  # 99.8 would be below the low
    assert buy["slippage"] == pytest.approx(buy["qty"] * 0.05, rel=1e-9)


def test_lot_size_rounds_the_quantity_toward_zero():
    prices = bars([(33, 34, 32, 33)] * 3)
    long = run(prices, [1.0, NAN, NAN], lot_size=1.0)
    assert long.fills["qty"][0] == 303.0  # 10000 / 33 = 303.03
    assert long.state[0]["cash"] == pytest.approx(CASH - 303 * 33.0, abs=1e-9)
    short = run(prices, [-1.0, NAN, NAN], lot_size=1.0)
    assert short.fills["side"][0] == -1 and short.position[-1] == -303.0
    fine = run(prices, [1.0, NAN, NAN], lot_size=0.25, fee_bps=10)
    # 10000 / (33 × 1.001) = 302.73 -> 302.5
    assert fine.fills["qty"][0] == pytest.approx(302.5, abs=1e-12)


def test_lot_size_rejection_when_less_than_one_lot():
    prices = bars([(20_000, 20_100, 19_900, 20_000)] * 3)
    result = run(prices, [1.0, NAN, NAN], lot_size=1.0)
    assert len(result.fills) == 0 and result.position[-1] == 0.0
    (order,) = result.orders
    assert order["status"] == OrderStatus.REJECTED_LOT_SIZE
    assert order["filled_qty"] == 0.0 and order["requested_qty"] == 0.0
    assert result.equity[-1] == CASH


def test_min_notional_rejects_small_orders_but_never_blocks_closing_out():
    prices = bars([(100, 101, 99, 100), (100, 101, 99, 100), (100, 101, 99, 100),
                   (50, 51, 49, 50), (50, 51, 49, 50), (50, 51, 49, 50)])
    # 0.005 × 10000 = 50 >= 40: accepted; 0.004 leaves a 10 trade: rejected; flat: allowed
    signal = [0.005, 0.004, NAN, NAN, 0.0, NAN]
    result = run(prices, signal, min_notional=40.0)
    statuses = list(result.orders["status"])
    assert statuses == [OrderStatus.FILLED, OrderStatus.REJECTED_MIN_NOTIONAL,
                        OrderStatus.FILLED]
    assert list(result.orders["bar"]) == [1, 2, 5]
    entry, close_out = result.fills
    assert entry["qty"] == pytest.approx(0.5, rel=1e-12)
    # the position is worth 25 at the close-out, below the minimum, yet it is closed
    assert close_out["qty"] == pytest.approx(0.5, rel=1e-12)
    assert close_out["price"] * close_out["qty"] < 40.0
    assert result.position[-1] == 0.0
    small = run(prices, [0.003, NAN, NAN, NAN, NAN, NAN], min_notional=40.0)
    assert list(small.orders["status"]) == [OrderStatus.REJECTED_MIN_NOTIONAL]
    assert len(small.fills) == 0


def test_participation_cap_fills_partially_and_continues_next_bar():
    rows = [(100, 101, 99, 100, 1e6), (100, 101, 99, 100, 20.0), (100, 101, 99, 100, 30.0),
            (100, 101, 99, 100, 5_000.0), (100, 101, 99, 100, 5_000.0)]
    prices = bars(rows)
    result = run(prices, [1.0, NAN, NAN, NAN, NAN], max_participation=0.1)
    assert list(result.fills["bar"]) == [1, 2, 3]
    np.testing.assert_allclose(result.fills["qty"], [2.0, 3.0, 95.0], rtol=1e-12)
    assert list(result.orders["status"]) == [OrderStatus.PARTIAL, OrderStatus.PARTIAL,
                                             OrderStatus.FILLED]
    # each bar asks for what is still missing from the 100 units the target needs
    np.testing.assert_allclose(result.orders["requested_qty"], [100.0, 98.0, 95.0],
                               rtol=1e-12)
    np.testing.assert_allclose(result.position, [0, 2, 5, 100, 100], rtol=1e-12)
    assert len(result.orders) == 3  # nothing left pending after the last piece


def test_participation_cap_rounds_to_lots():
    rows = [(100, 101, 99, 100, 1e6), (100, 101, 99, 100, 27.0), (100, 101, 99, 100, 1e6)]
    result = run(bars(rows), [1.0, NAN, NAN], max_participation=0.1, lot_size=1.0)
    np.testing.assert_array_equal(result.fills["qty"], [2.0, 98.0])  # 2.7 -> 2 lots


def test_target_quantity_keeps_value_equal_to_exposure_times_equity_after_fee():
    fee = 0.001
    for exposure, equity, position, price in [(1.0, 1e4, 0.0, 100.0), (0.5, 1e4, 100.0, 100.0),
                                              (-1.0, 1e4, 50.0, 80.0), (0.3, 2e4, -40.0, 50.0),
                                              (-0.7, 1e4, -10.0, 120.0)]:
        quantity = target_quantity(exposure, equity, position, price, fee)
        traded = abs(quantity - position)
        after_fee = equity - traded * price * fee
        assert quantity * price == pytest.approx(exposure * after_fee, rel=1e-12)
    assert target_quantity(1.0, 1e4, 0.0, 100.0, 0.0) == 100.0
    assert target_quantity(1.0, 0.0, 0.0, 100.0, fee) == 0.0


def test_round_to_lot():
    assert round_to_lot(7.9, 1.0) == 7.0
    assert round_to_lot(-7.9, 1.0) == -7.0
    assert round_to_lot(0.3, 0.1) == pytest.approx(0.3)  # not 0.2 from 0.3 / 0.1 = 2.999…
    assert round_to_lot(0.999, 0.0) == 0.999
    assert round_to_lot(-0.5, 1.0) == 0.0


def test_fraction_scales_the_exposure():
    prices = bars([(100, 101, 99, 100)] * 3)
    result = run(prices, [1.0, NAN, NAN], fraction=0.25)
    assert result.fills["qty"][0] == pytest.approx(25.0, rel=1e-12)
    # a fraction above 1 is clipped to max_leverage
    levered = run(prices, [1.0, NAN, NAN], fraction=2.0, max_leverage=1.5)
    assert levered.fills["qty"][0] == pytest.approx(150.0, rel=1e-12)


def test_volatility_target_scale_equals_pandas_ewm_of_squared_log_returns():
    closes = [100.0, 101.0, 99.5, 100.5, 102.0, 101.0, 100.0, 100.8]
    rows = [(c, c + 1.0, c - 1.0, c) for c in closes] + [(100.2, 101.5, 99.0, 100.0)]
    prices = bars(rows)
    halflife, target, periods = 3.0, 0.2, 8760.0
    signal = [NAN] * 7 + [1.0, NAN]  # decided at bar 7's close, filled at bar 8's open
    settings = dict(sizing="volatility_target", vol_target=target, vol_halflife_bars=halflife,
                    max_leverage=10.0)
    result = step(prices, signal, periods_per_year=periods, **settings)
    squared = np.diff(np.log(closes)) ** 2
    variance = pd.Series(squared).ewm(halflife=halflife).mean().iloc[-1]
    scale = target / math.sqrt(variance * periods)
    assert 0.0 < scale < 1.0
    (fill,) = result.fills
    assert fill["bar"] == 8
    assert fill["qty"] * 100.2 == pytest.approx(scale * CASH, rel=1e-10)
    # the same scale read directly from the state at bar 7's close
    assert exposure_scale(result.states[7], result.cfg[0]) == pytest.approx(scale, rel=1e-12)

    # a higher target is clipped by max_leverage
    capped = run(prices, signal, periods_per_year=periods, **{**settings, "max_leverage": 1.0,
                                                              "vol_target": 50.0})
    assert capped.fills["qty"][0] * 100.2 == pytest.approx(CASH, rel=1e-12)


def test_volatility_target_has_no_scale_before_a_price_move():
    state = new_state(CASH)
    cfg = config(sizing="volatility_target")
    assert math.isnan(exposure_scale(state[0], cfg[0]))


def test_volatility_target_acts_on_a_signal_given_before_the_volatility_is_known():
    """Regression: a signal held from the first bar (buy and hold) was sized to 0 while
    no return was known, and then never acted on, because it equalled the last signal."""
    rows = [(100, 101, 99, 100), (100, 101, 99, 100), (100, 102, 99, 101),
            (101, 102, 100, 101.5), (101.5, 102, 100, 101)]
    result = step(bars(rows), [1.0] * 5, sizing="volatility_target", vol_target=0.2,
                  max_leverage=10.0)
    # bar 0: one close; bar 1: a zero return; bar 2's close is the first price move
    assert list(result.fills["bar"]) == [3]
    scale = exposure_scale(result.states[2], result.cfg[0])
    assert 0.0 < scale < 10.0
    assert result.fills["qty"][0] * 101.0 == pytest.approx(scale * CASH, rel=1e-12)
    assert len(result.orders) == 1  # the held signal does not rebalance afterwards


def test_kelly_fraction_formula():
    # W = 3/4, average win 10, average loss 10 -> R = 1 -> 0.75 - 0.25 / 1 = 0.5
    assert kelly_fraction(4, 3, 30.0, 10.0) == pytest.approx(0.5)
    # W = 1/2, R = 3 -> 0.5 - 0.5 / 3
    assert kelly_fraction(4, 2, 60.0, 20.0) == pytest.approx(0.5 - 0.5 / 3)
    assert math.isnan(kelly_fraction(0, 0, 0.0, 0.0))
    assert kelly_fraction(3, 3, 30.0, 0.0) == math.inf
    assert kelly_fraction(3, 0, 0.0, 30.0) == -math.inf


def _kelly_path():
    """Three round trips (win +10, loss -5, win +20 per unit), then a fourth entry."""
    rows = []
    for entry, exit_ in ((100, 110), (100, 95), (100, 120)):
        rows += [(100, 101, 99, 100), (entry, entry + 1, entry - 1, entry),
                 (exit_, exit_ + 1, exit_ - 1, exit_)]
    rows += [(100, 101, 99, 100), (100, 101, 99, 100), (100, 101, 99, 100)]
    signal = [1.0, 0.0, NAN] * 3 + [1.0, NAN, NAN]
    return bars(rows), signal


def test_kelly_sizing_uses_fraction_until_min_trades_then_the_capped_kelly():
    prices, signal = _kelly_path()
    settings = dict(sizing="kelly", fraction=0.5, kelly_multiplier=0.5, kelly_cap=0.25,
                    kelly_min_trades=3)
    result = step(prices, signal, **settings)
    assert len(result.trades) == 3
    wins = result.trades["pnl"] > 0
    assert list(wins) == [True, False, True]
    # the first three entries are sized by the fraction: 0.5 × equity at the open
    for k, fill in enumerate(result.fills[0:6:2]):
        equity_before = result.equity[3 * k]
        assert fill["qty"] * fill["price"] == pytest.approx(0.5 * equity_before, rel=1e-12)
    # fourth entry: Kelly from the trades' pnl, × multiplier, capped
    pnl = result.trades["pnl"]
    win_rate = wins.mean()
    payoff = pnl[wins].mean() / -pnl[~wins].mean()
    kelly = win_rate - (1 - win_rate) / payoff
    scale = min(max(0.5 * kelly, 0.0), 0.25)
    last = result.fills[-1]
    assert last["bar"] == 10
    assert last["qty"] * last["price"] == pytest.approx(scale * result.equity[9], rel=1e-12)

    uncapped = step(prices, signal, **{**settings, "kelly_cap": 1.0})
    last = uncapped.fills[-1]
    assert last["qty"] * last["price"] == pytest.approx(0.5 * kelly * uncapped.equity[9],
                                                        rel=1e-12)


def test_kelly_sizing_with_a_losing_history_takes_no_position():
    prices, signal = _kelly_path()
    closes = prices.close.copy()
    # make every round trip lose: exits at 90
    for k in (2, 5, 8):
        prices.open[k], prices.high[k], prices.low[k], closes[k] = 90.0, 91.0, 89.0, 90.0
    prices.close[:] = closes
    result = run(prices, signal, sizing="kelly", kelly_min_trades=3)
    assert len(result.trades) == 3 and (result.trades["pnl"] < 0).all()
    assert result.position[-1] == 0.0
    assert result.fills["reason"].tolist() == [FillReason.SIGNAL] * 6


def test_hourly_helper_spacing():
    prices = bars([(1, 1, 1, 1)] * 3)
    assert np.all(np.diff(prices.ts_ns) == HOUR_NS)


def test_order_notional_cap_fills_partly_and_continues():
    prices = bars([(100.0, 101.0, 99.0, 100.0)] * 6)
    result = run(prices, [1.0] * 6, max_order_notional=4_000.0)
    assert list(result.fills["bar"][:3]) == [1, 2, 3]
    np.testing.assert_allclose(result.fills["qty"][:2], [40.0, 40.0])
    assert result.orders["status"][0] == 1  # OrderStatus.PARTIAL
