"""Properties of the bar step on random OHLCV paths, random signals and random settings.

Every run goes bar by bar through ``on_bar`` / ``on_signal`` (the live runner's path),
keeping the state after each bar, and is checked against ``simulate`` (the backtest's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from kernel_runs import HOUR_NS, Bars, Run, random_bars, run, step

from mmats.types import OrderStatus, TradingState

CASH = 10_000.0
HALTED, REDUCING = int(TradingState.HALTED), int(TradingState.REDUCING)
FILLED = int(OrderStatus.FILLED)
PROPERTY = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Scenario:
    prices: Bars
    signal: np.ndarray
    stops: np.ndarray | None
    take_profits: np.ndarray | None
    settings: dict

    def step(self) -> Run:
        return step(self.prices, self.signal, stops=self.stops, take_profits=self.take_profits,
                    cash=CASH, **self.settings)

    def simulate(self) -> Run:
        return run(self.prices, self.signal, stops=self.stops, take_profits=self.take_profits,
                   cash=CASH, **self.settings)


def _signal(rng: np.random.Generator, n: int) -> np.ndarray:
    """Exposures in [-1, 1]: held values, jumps, NaN runs."""
    levels = np.array([-1.0, -0.5, 0.0, 0.0, 0.25, 0.5, 1.0, math.nan])
    out = np.empty(n)
    value = 0.0
    for i in range(n):
        draw = rng.random()
        if draw < 0.15:
            value = rng.choice(levels)
        elif draw < 0.2:
            value = rng.uniform(-1.0, 1.0)
        elif draw < 0.3:
            out[i] = math.nan
            continue
        out[i] = value
    return out


@st.composite
def scenarios(draw, costs=True):
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(2, 240))
    rng = np.random.default_rng(seed)
    step_ns = draw(st.sampled_from([HOUR_NS, 3 * HOUR_NS]))
    volatility = draw(st.sampled_from([0.002, 0.01, 0.04]))
    prices = random_bars(rng, n, start_price=draw(st.sampled_from([0.05, 1.3, 100.0, 30_000.0])),
                         step_ns=step_ns, volatility=volatility)
    signal = _signal(rng, n)
    stops = take_profits = None
    if draw(st.booleans()):
        distance = prices.close * rng.uniform(0.002, 0.05, n)
        stops = np.where(rng.random(n) < 0.3, math.nan, distance)
    if draw(st.booleans()):
        distance = prices.close * rng.uniform(0.002, 0.08, n)
        take_profits = np.where(rng.random(n) < 0.3, math.nan, distance)
    options = dict(
        max_participation=draw(st.sampled_from([0.0, 0.0, 0.05, 0.5])),
        sizing=draw(st.sampled_from(["fixed_fraction", "fixed_fraction",
                                     "volatility_target", "kelly"])),
        fraction=draw(st.sampled_from([0.3, 1.0, 2.0])),
        kelly_min_trades=2,
        vol_halflife_bars=5.0,
        lot_size=draw(st.sampled_from([0.0, 0.0, 0.001, 0.1, 1.0])),
        min_notional=draw(st.sampled_from([0.0, 0.0, 5.0, 200.0])),
        max_leverage=draw(st.sampled_from([0.5, 1.0, 1.0, 2.0, 3.0])),
        max_daily_loss_pct=draw(st.sampled_from([0.0, 0.3, 1.0, 3.0])),
        max_drawdown_pct=draw(st.sampled_from([0.0, 0.0, 1.0, 3.0, 10.0])),
        allow_short=draw(st.booleans()),
    )
    if costs:
        options.update(
            fee_bps=draw(st.sampled_from([0.0, 1.0, 10.0, 75.0])),
            slippage_bps=draw(st.sampled_from([0.0, 2.0, 30.0])),
            slippage_model=draw(st.sampled_from(["fixed", "fixed", "volatility_sqrt",
                                                 "participation"])),
            impact_coef=draw(st.sampled_from([0.1, 1.0])),
        )
    return Scenario(prices, signal, stops, take_profits, options)


def _scale(result: Run, prices: Bars) -> float:
    """The money involved, for relative tolerances."""
    notional = np.abs(result.position) * prices.close
    return max(CASH, float(np.max(np.abs(result.equity))), float(np.max(notional)))


def _position_before_each_fill(result: Run) -> np.ndarray:
    after = result.fills["position_after"]
    return np.concatenate([[0.0], after[:-1]]) if len(after) else np.empty(0)


@PROPERTY
@given(scenarios())
def test_value_is_conserved_except_fees_and_slippage(scenario):
    prices, result = scenario.prices, scenario.step()
    tolerance = 1e-9 * _scale(result, prices)
    states = result.states
    fills = result.fills
    # equity is cash plus the position at the close, every bar
    np.testing.assert_allclose(result.equity, states["cash"] + result.position * prices.close,
                               rtol=0, atol=tolerance)
    # bar by bar, equity moves by the position times each price move, less the fees
    previous_equity, previous_position, previous_close = CASH, 0.0, math.nan
    for t in range(len(prices)):
        in_bar = fills[fills["bar"] == t]
        position, reference, change = previous_position, previous_close, 0.0
        for fill in in_bar:
            if position != 0.0:
                change += position * (fill["price"] - reference)
            change -= fill["fee"]
            position, reference = fill["position_after"], fill["price"]
        if position != 0.0:
            change += position * (prices.close[t] - reference)
        assert position == result.position[t]
        assert abs(result.equity[t] - previous_equity - change) <= tolerance, t
        previous_equity, previous_position, previous_close = (
            result.equity[t], position, prices.close[t])
    # in total: the cash flows of the fills, less fees, plus what is held at the end
    signed = fills["side"] * fills["qty"]
    total = -np.sum(signed * fills["price"]) - np.sum(fills["fee"])
    total += result.position[-1] * prices.close[-1]
    assert abs(result.equity[-1] - CASH - total) <= tolerance
    np.testing.assert_allclose(np.cumsum(signed)[-1:] if len(fills) else [0.0],
                               [result.position[-1]], rtol=0, atol=1e-9 * max(
                                   1.0, float(np.max(np.abs(result.position)))))
    final = result.state[0]
    assert abs(final["fees_paid"] - np.sum(fills["fee"])) <= tolerance
    # each fill's fee and slippage are what the settings say
    fee_rate = scenario.settings.get("fee_bps", 0.0) * 1e-4
    np.testing.assert_allclose(fills["fee"], fills["qty"] * fills["price"] * fee_rate,
                               rtol=1e-12, atol=0)
    at_open = fills["order_id"] >= 0
    opens = prices.open[fills["bar"][at_open]]
    np.testing.assert_allclose(fills["slippage"][at_open],
                               fills["qty"][at_open] * np.abs(fills["price"][at_open] - opens),
                               rtol=1e-12, atol=1e-12 * tolerance)
    # trades: closed pnl + the open trade's pnl so far + unrealised = the whole change
    unrealised = final["position"] * (prices.close[-1] - final["avg_price"])
    open_trade = final["trade_pnl"] if final["position"] != 0.0 else 0.0
    assert abs(np.sum(result.trades["pnl"]) + open_trade + unrealised
               - (result.equity[-1] - CASH)) <= tolerance
    assert final["n_trades"] == len(result.trades)
    assert final["n_wins"] == int(np.sum(result.trades["pnl"] > 0))


@PROPERTY
@given(scenarios(costs=False))
def test_without_costs_equity_moves_exactly_with_position_times_price(scenario):
    prices, result = scenario.prices, scenario.step()
    fills = result.fills
    tolerance = 1e-9 * _scale(result, prices)
    assert np.all(fills["fee"] == 0.0) and np.all(fills["slippage"] == 0.0)
    at_open = fills["order_id"] >= 0
    np.testing.assert_array_equal(fills["price"][at_open], prices.open[fills["bar"][at_open]])
    # a fill at price p changes nothing at p, so equity follows the position through
    # each of the bar's prices
    held = np.concatenate([[0.0], result.position[:-1]])
    for t in range(len(prices)):
        path = [prices.close[t - 1] if t else prices.open[t]]
        positions = [held[t]]
        for fill in fills[fills["bar"] == t]:
            path.append(fill["price"])
            positions.append(fill["position_after"])
        path.append(prices.close[t])
        expected = sum(q * (b - a) for q, a, b in zip(positions, path[:-1], path[1:],
                                                     strict=True))
        before = result.equity[t - 1] if t else CASH
        assert abs(result.equity[t] - before - expected) <= tolerance, t


@PROPERTY
@given(scenarios())
def test_every_fill_is_inside_its_bar(scenario):
    prices, result = scenario.prices, scenario.simulate()
    fills = result.fills
    bar = fills["bar"]
    assert np.all(fills["price"] >= prices.low[bar])
    assert np.all(fills["price"] <= prices.high[bar])
    assert np.all(fills["qty"] > 0.0)
    event(f"fills: {'none' if len(fills) == 0 else 'some'}")


@PROPERTY
@given(scenarios())
def test_leverage_right_after_a_fill_never_exceeds_the_cap(scenario):
    result = scenario.simulate()
    cap = scenario.settings["max_leverage"]
    fills = result.fills
    before = _position_before_each_fill(result)
    orders = {int(o["order_id"]): o for o in result.orders}
    checked = 0
    for fill, held in zip(fills, before, strict=True):
        after = fill["position_after"]
        equity = fill["cash_after"] + after * fill["price"]
        if equity <= 0.0:
            continue
        grew = abs(after) > abs(held) or after * held < 0.0
        completed = fill["order_id"] >= 0 and orders[int(fill["order_id"])]["status"] == FILLED
        if grew or completed:
            checked += 1
            leverage = abs(after * fill["price"]) / equity
            assert leverage <= cap * (1 + 1e-9), (fill, held, leverage)
    event(f"fills checked: {min(checked, 3)}+")


def _grew(before, after) -> bool:
    tiny = 1e-12 * max(abs(before), abs(after), 1.0)
    return abs(after) > abs(before) + tiny or (after * before < 0.0)


@PROPERTY
@given(scenarios())
def test_once_halted_the_position_never_grows(scenario):
    prices, result = scenario.prices, scenario.step()
    halted = np.flatnonzero(result.states["trading_state"] == HALTED)
    if halted.size == 0:
        event("never halted")
        return
    event("halted")
    first = halted[0]
    assert np.all(result.states["trading_state"][first:] == HALTED)
    fills = result.fills
    before = _position_before_each_fill(result)
    for fill, held in zip(fills, before, strict=True):
        if fill["bar"] > first:
            assert not _grew(held, fill["position_after"]), (first, fill)
    tail = np.abs(result.position[first:])
    assert np.all(np.diff(tail) <= 1e-12 * np.maximum(tail[:-1], 1.0))
    assert len(prices) == len(result.position)


@PROPERTY
@given(scenarios())
def test_reducing_never_grows_the_position_within_the_day(scenario):
    prices, result = scenario.prices, scenario.step()
    state = result.states["trading_state"]
    day = prices.day
    fills = result.fills
    before = _position_before_each_fill(result)
    seen = False
    for fill, held in zip(fills, before, strict=True):
        t = fill["bar"]
        if t == 0 or state[t - 1] != REDUCING or day[t] != day[t - 1]:
            continue
        seen = True
        assert not _grew(held, fill["position_after"]), (t, fill, held)
    event("a fill while reducing" if seen else "no fill while reducing")


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_the_runner_path_equals_the_backtest_loop(scenario):
    stepped, simulated = scenario.step(), scenario.simulate()
    np.testing.assert_array_equal(stepped.equity, simulated.equity)
    np.testing.assert_array_equal(stepped.position, simulated.position)
    np.testing.assert_array_equal(stepped.fills, simulated.fills)
    np.testing.assert_array_equal(stepped.orders, simulated.orders)
    np.testing.assert_array_equal(stepped.trades, simulated.trades)


def test_the_generator_reaches_the_risk_states():
    """The properties above are not vacuous: random scenarios do halt and reduce."""
    seen = set()

    @settings(max_examples=80, deadline=None, database=None, derandomize=True)
    @given(scenarios())
    def collect(scenario):
        result = scenario.step()
        seen.update(int(s) for s in np.unique(result.states["trading_state"]))
        if len(result.fills):
            seen.add("fills")

    collect()
    assert {HALTED, REDUCING, "fills"} <= seen
