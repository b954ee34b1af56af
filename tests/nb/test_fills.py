"""The fill model on bars built by hand: stop-loss / take-profit inside a bar, gaps,
trade records and position flips."""

import math
import textwrap

import numpy as np
import pytest
from kernel_runs import bars, run

from mmats.backtest import backtest
from mmats.types import FillReason, OrderStatus

NAN = math.nan
CASH = 10_000.0
FLAT = (100, 101, 99, 100)


def _with_stop(second_bar, direction=1.0, stop=5.0, take_profit=10.0, **settings):
    """Enter at bar 1's open (100) with stop / take-profit distances, then ``second_bar``."""
    prices = bars([FLAT, FLAT, second_bar, FLAT])
    return run(prices, [direction, NAN, NAN, NAN], stops=[stop, NAN, NAN, NAN],
               take_profits=[take_profit, NAN, NAN, NAN], **settings)


def _exit(result):
    entry, exit_ = result.fills
    assert entry["bar"] == 1 and entry["reason"] == FillReason.SIGNAL
    assert exit_["bar"] == 2 and exit_["order_id"] == -1
    assert exit_["position_after"] == 0.0
    assert result.position[-1] == 0.0
    (trade,) = result.trades
    assert trade["exit_reason"] == exit_["reason"]
    assert trade["exit_price"] == exit_["price"]
    return exit_


@pytest.mark.parametrize(
    ("bar", "price", "reason"),
    [
        ((99, 100, 94, 96), 95.0, FillReason.STOP_LOSS),  # low touches the stop
        ((93, 94, 90, 92), 93.0, FillReason.STOP_LOSS),  # gap below the stop: the open
        ((101, 112, 100, 111), 110.0, FillReason.TAKE_PROFIT),  # high touches the target
        ((115, 116, 113, 114), 115.0, FillReason.TAKE_PROFIT),  # gap above the target
        ((100, 112, 94, 100), 95.0, FillReason.STOP_LOSS),  # both in range: the stop
    ],
)
def test_long_stop_loss_and_take_profit_inside_a_bar(bar, price, reason):
    exit_ = _exit(_with_stop(bar))
    assert exit_["side"] == -1
    assert exit_["price"] == price and exit_["reason"] == reason


@pytest.mark.parametrize(
    ("bar", "price", "reason"),
    [
        ((101, 106, 100, 104), 105.0, FillReason.STOP_LOSS),
        ((107, 108, 106, 107), 107.0, FillReason.STOP_LOSS),
        ((99, 100, 88, 89), 90.0, FillReason.TAKE_PROFIT),
        ((85, 86, 84, 85), 85.0, FillReason.TAKE_PROFIT),
        ((100, 106, 88, 100), 105.0, FillReason.STOP_LOSS),
    ],
)
def test_short_stop_loss_and_take_profit_inside_a_bar(bar, price, reason):
    exit_ = _exit(_with_stop(bar, direction=-1.0))
    assert exit_["side"] == 1
    assert exit_["price"] == price and exit_["reason"] == reason


def test_untouched_levels_keep_the_position():
    result = _with_stop((100, 109, 96, 104))
    assert len(result.fills) == 1 and result.position[-1] > 0


def test_stop_fill_pays_slippage_and_fee_and_the_trade_records_it():
    fee, slip = 0.001, 0.002
    result = _with_stop((99, 100, 94, 96), fee_bps=10, slippage_bps=20)
    entry, exit_ = result.fills
    entry_price = 100 * (1 + slip)
    quantity = CASH / (entry_price * (1 + fee))
    assert entry["price"] == pytest.approx(entry_price, rel=1e-15)
    stop_level = entry_price - 5.0  # the distance counts from the entry fill price
    assert exit_["price"] == pytest.approx(stop_level * (1 - slip), rel=1e-15)
    assert exit_["slippage"] == pytest.approx(quantity * stop_level * slip, rel=1e-9)
    (trade,) = result.trades
    expected_pnl = quantity * (exit_["price"] - entry_price) - entry["fee"] - exit_["fee"]
    assert trade["pnl"] == pytest.approx(expected_pnl, rel=1e-12)
    assert trade["fees"] == pytest.approx(entry["fee"] + exit_["fee"], rel=1e-12)
    assert result.equity[-1] == pytest.approx(CASH + expected_pnl, rel=1e-12)


def test_stop_on_the_entry_bar_fills_at_the_level_not_the_open():
    # with 20 bps slippage the entry costs 100.2, so a 0.1 stop sits at 100.1, above
    # the bar's open: on the entry bar that is not a gap, the stop fills at its level
    prices = bars([FLAT, (100, 101, 99, 100), FLAT])
    result = run(prices, [1.0, NAN, NAN], stops=[0.1, NAN, NAN], slippage_bps=20)
    entry, exit_ = result.fills
    assert entry["bar"] == exit_["bar"] == 1
    assert exit_["reason"] == FillReason.STOP_LOSS
    assert exit_["price"] == pytest.approx(100.1 * 0.998, rel=1e-15)


def test_no_reentry_after_a_stop_until_the_signal_changes():
    rows = [FLAT, FLAT, (99, 100, 94, 96), FLAT, FLAT, FLAT, FLAT]
    signal = [1.0, 1.0, 1.0, 1.0, 0.0, 1.0, NAN]
    result = run(bars(rows), signal, stops=[5.0] * 7)
    assert list(result.fills["bar"]) == [1, 2, 6]
    assert list(result.fills["reason"]) == [FillReason.SIGNAL, FillReason.STOP_LOSS,
                                            FillReason.SIGNAL]
    np.testing.assert_array_equal(result.position[2:6], 0.0)
    assert len(result.orders) == 2  # the 0 at bar 4 finds the sleeve flat: no order


STRATEGY = textwrap.dedent('''
    """Long while the close is above a level (a numpy strategy for the tests)."""
    import numpy as np

    PARAMS = {"level": [100.0]}
    DEFAULTS = {"level": 100.0}
    WARMUP = 1


    def signal(open, high, low, close, volume, level):
        return np.where(close > level, 1.0, 0.0)
''')

LEVEL_ROWS = [
    (99, 99.5, 98.5, 99),  # 0
    (99, 101.5, 98.8, 101),  # 1: close above 100 -> long
    (102, 104, 101.5, 103),  # 2: entry at 102
    (103, 104, 98, 99),  # 3: close below -> flat
    (98, 99.5, 97, 99.5),  # 4: exit at 98 (a loss)
    (99.5, 102, 99, 101),  # 5: long
    (100.5, 106, 100, 105),  # 6: entry at 100.5
    (105, 106, 99.5, 99.9),  # 7: flat
    (107, 108, 106, 107),  # 8: exit at 107 (a win); the close is above 100 -> long
    (107, 108, 106, 107.5),  # 9: entry at 107
    (108, 109, 107, 108),  # 10: still long at the end: an open trade
]


def test_trade_records_and_metrics_through_backtest(tmp_path):
    path = tmp_path / "above_level.py"
    path.write_text(STRATEGY)
    frame = bars(LEVEL_ROWS).frame()
    result = backtest(str(path), frame, fee_bps=10, timeframe="1h", calendar="24/7")
    fee = 0.001
    q1 = CASH / (102 * (1 + fee))
    cash1 = q1 * 98 * (1 - fee)
    q2 = cash1 / (100.5 * (1 + fee))
    cash2 = q2 * 107 * (1 - fee)
    q3 = cash2 / (107 * (1 + fee))
    pnl1, pnl2 = cash1 - CASH, cash2 - cash1

    trades = result.trades
    assert len(trades) == 2
    assert list(trades["entry_bar"]) == [2, 6] and list(trades["exit_bar"]) == [4, 8]
    assert list(trades["direction"]) == [1, 1]
    np.testing.assert_array_equal(trades["entry_price"], [102.0, 100.5])
    np.testing.assert_array_equal(trades["exit_price"], [98.0, 107.0])
    np.testing.assert_allclose(trades["size"], [q1, q2], rtol=1e-12)
    np.testing.assert_allclose(trades["pnl"], [pnl1, pnl2], rtol=1e-9)
    np.testing.assert_allclose(trades["fees"], [fee * q1 * (102 + 98), fee * q2 * (100.5 + 107)],
                               rtol=1e-12)
    np.testing.assert_allclose(trades["return_pct"],
                               [100 * pnl1 / (q1 * 102), 100 * pnl2 / (q2 * 100.5)], rtol=1e-9)
    assert list(trades["exit_reason"]) == [FillReason.SIGNAL] * 2
    np.testing.assert_array_equal(trades["entry_ts_ns"], frame["ts"].iloc[[2, 6]].astype("int64"))

    metrics = result.metrics
    assert metrics["trades"] == 2
    assert metrics["win_rate"] == 0.5
    assert metrics["profit_factor"] == pytest.approx(pnl2 / -pnl1, rel=1e-9)
    assert metrics["final_equity"] == pytest.approx(q3 * 108, rel=1e-12)
    fees = fee * (q1 * (102 + 98) + q2 * (100.5 + 107) + q3 * 107)
    assert metrics["fees_paid"] == pytest.approx(fees, rel=1e-12)
    assert metrics["exposure"] == pytest.approx(6 / 11)  # bars 2, 3, 6, 7, 9 and 10
    assert result.state[0]["n_wins"] == 1
    assert list(result.orders["status"]) == [OrderStatus.FILLED] * 5


def test_a_flip_from_long_to_short_closes_one_trade_and_opens_another():
    prices = bars([FLAT, FLAT, (110, 111, 109, 110), (105, 106, 104, 105), FLAT])
    fee = 0.001
    result = run(prices, [1.0, -1.0, 0.0, NAN, NAN], fee_bps=10)
    long_qty = CASH / (100 * (1 + fee))
    equity = CASH + long_qty * 10 - long_qty * 100 * fee  # at bar 2's open, before the flip
    # short size S: S × 110 = equity - fee on (long + S) units at 110
    short_qty = (equity - long_qty * 110 * fee) / (110 * (1 + fee))

    buy, flip, cover = result.fills
    assert flip["bar"] == 2 and flip["side"] == -1
    assert flip["qty"] == pytest.approx(long_qty + short_qty, rel=1e-12)
    assert flip["position_after"] == pytest.approx(-short_qty, rel=1e-12)
    assert flip["realized_pnl"] == pytest.approx(long_qty * 10, rel=1e-12)
    assert -flip["position_after"] * 110 == pytest.approx(
        equity - flip["fee"], rel=1e-12)  # short value = equity after the fee

    first, second = result.trades
    assert (first["direction"], second["direction"]) == (1, -1)
    assert (first["entry_bar"], first["exit_bar"]) == (1, 2)
    assert (second["entry_bar"], second["exit_bar"]) == (2, 3)
    assert (first["entry_price"], first["exit_price"]) == (100.0, 110.0)
    assert (second["entry_price"], second["exit_price"]) == (110.0, 105.0)
    pnl1 = long_qty * 10 - fee * long_qty * (100 + 110)
    pnl2 = short_qty * 5 - fee * short_qty * (110 + 105)
    assert first["pnl"] == pytest.approx(pnl1, rel=1e-12)
    assert second["pnl"] == pytest.approx(pnl2, rel=1e-12)
    assert second["size"] == pytest.approx(short_qty, rel=1e-12)
    # flat at the end: the trades' pnl is the whole change in equity
    assert result.equity[-1] == pytest.approx(CASH + pnl1 + pnl2, rel=1e-12)
    assert cover["position_after"] == 0.0
    assert result.state[0]["n_trades"] == 2 and result.state[0]["n_wins"] == 2


def test_flip_resets_the_stop_to_the_new_direction():
    prices = bars([FLAT, FLAT, (110, 111, 109, 110), (109, 116, 108, 112), FLAT])
    result = run(prices, [1.0, -1.0, NAN, NAN, NAN], stops=[20.0, 5.0, NAN, NAN, NAN])
    # long stop at 80 is dropped; the short's stop is 110 + 5 = 115, hit at bar 3
    assert list(result.fills["reason"]) == [FillReason.SIGNAL, FillReason.SIGNAL,
                                            FillReason.STOP_LOSS]
    assert result.fills["price"][-1] == 115.0 and result.fills["bar"][-1] == 3
    assert list(result.trades["direction"]) == [1, -1]


def test_scaling_in_and_out_averages_entry_and_exit_prices_of_one_trade():
    rows = [FLAT, FLAT, (110, 111, 109, 110), (120, 121, 119, 120), (105, 106, 104, 105), FLAT]
    result = run(bars(rows), [0.5, 1.0, 0.5, 0.0, NAN, NAN])
    first = 50.0  # half of 10000 at 100
    added = (CASH - first * 100 + first * 110) / 110 - first  # up to all equity at 110
    held = first + added
    half = held * 120 * 0.5 / 120  # back to half the equity at 120
    assert list(result.fills["bar"]) == [1, 2, 3, 4]
    np.testing.assert_allclose(result.fills["qty"], [first, added, held - half, half],
                               rtol=1e-12)
    (trade,) = result.trades
    assert trade["entry_bar"] == 1 and trade["exit_bar"] == 4
    assert trade["size"] == pytest.approx(held, rel=1e-12)
    assert trade["entry_price"] == pytest.approx((first * 100 + added * 110) / held, rel=1e-12)
    assert trade["exit_price"] == pytest.approx(((held - half) * 120 + half * 105) / held,
                                                rel=1e-12)
    assert trade["pnl"] == pytest.approx(result.equity[-1] - CASH, rel=1e-12)
    # realised pnl of each reducing fill is against the average entry price
    average = trade["entry_price"]
    np.testing.assert_allclose(result.fills["realized_pnl"],
                               [0, 0, (held - half) * (120 - average), half * (105 - average)],
                               rtol=1e-12, atol=1e-9)
