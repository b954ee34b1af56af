"""Global and market limits, and the portfolio backtest that equals the runner's replay."""

import numpy as np
import pandas as pd
import pytest

from mmats.data import load
from mmats.live.config import parse_config
from mmats.live.replay import portfolio_backtest, replay


def two_markets(crypto_risk=None, **global_risk):
    return parse_config({
        "mode": "paper",
        "risk": global_risk,
        "markets": {
            "crypto": {"type": "crypto", "feed": "bittrex", "execution": "paper",
                       "symbols": ["ETH/BTC", "LTC/BTC"], "timeframe": "5m",
                       "risk": crypto_risk or {}},
            "forex": {"type": "forex", "feed": "fx", "execution": "paper",
                      "symbols": ["EUR/USD"], "timeframe": "1h"},
        },
        "models": [
            {"id": "ema", "strategy": "ema_cross", "market": "crypto",
             "params": {"fast": 5, "slow": 20}, "costs": {"fee_bps": 10}},
            {"id": "rsi", "strategy": "rsi_reversion", "market": "forex",
             "params": {"period": 7, "lower": 35, "upper": 65, "short": 1},
             "costs": {"fee_bps": 1}},
        ],
    })


@pytest.fixture(scope="module")
def candles():
    eth = load("bittrex:ETH/BTC:5m").iloc[:700].reset_index(drop=True)
    ltc = load("bittrex:LTC/BTC:5m").iloc[:700].reset_index(drop=True)
    fx = load("fx:EUR_USD:1h")
    start, end = eth.ts.iloc[0] - pd.Timedelta("10D"), eth.ts.iloc[-1]
    fx = fx[(fx.ts >= start) & (fx.ts <= end)].reset_index(drop=True)
    return {"ETH/BTC": eth, "LTC/BTC": ltc, "EUR/USD": fx}


def open_positions_over_time(fills_by_sleeve):
    events = []
    for sleeve, fills in fills_by_sleeve.items():
        for fill in fills:
            events.append((int(fill["ts_ns"]), sleeve, float(fill["position_after"])))
    held, counts = {}, []
    for _, sleeve, position in sorted(events):
        held[sleeve] = position
        counts.append(sum(1 for p in held.values() if p != 0))
    return counts


def test_replay_of_a_multi_market_config_equals_its_portfolio_backtest(candles, tmp_path):
    config = two_markets(max_open_positions=2, max_daily_loss="3%", max_leverage=3)
    expected = portfolio_backtest(config, candles)
    replayed = replay(config, candles, tmp_path / "journal.sqlite")
    assert replayed.final_equity == pytest.approx(expected.final_equity, rel=1e-9)
    for sleeve_id, state in expected.states.items():
        np.testing.assert_allclose(replayed.equity[sleeve_id].dropna().to_numpy(),
                                   expected.equity[sleeve_id].dropna().to_numpy(), rtol=1e-9)
        assert replayed.states[sleeve_id].tobytes() == state.tobytes()
    fills = replayed.fills
    assert len(fills) == sum(len(f) for f in expected.fills.values())
    assert max(open_positions_over_time(expected.fills)) <= 2


def test_max_open_positions_blocks_the_third_position(candles):
    free = portfolio_backtest(two_markets(), candles)
    capped = portfolio_backtest(two_markets(max_open_positions=1), candles)
    assert max(open_positions_over_time(free.fills)) >= 2  # the limit has work to do
    assert max(open_positions_over_time(capped.fills)) == 1


def test_global_drawdown_halts_everything_at_the_breach(candles):
    result = portfolio_backtest(two_markets(max_drawdown_pct=0.5), candles)
    kinds = [(scope, kind) for scope, _, kind, _, _ in result.risk_events]
    assert kinds == [("global", "max_drawdown")]
    breach = result.risk_events[0][1]
    total = result.equity.ffill().bfill().sum(axis=1)  # sleeves start at their cash
    drawdown = (total.cummax() - total) / total.cummax() * 100
    assert drawdown[drawdown.index.asi8 <= breach].iloc[-1] >= 0.5
    assert (drawdown[drawdown.index.asi8 < breach] < 0.5).all()  # the first breach
    # every sleeve is halted and flat afterwards: after the breach, fills only flatten
    for sleeve_id, state in result.states.items():
        assert state[0]["trading_state"] == 2 and state[0]["position"] == 0
        after = result.fills[sleeve_id][result.fills[sleeve_id]["ts_ns"] > breach]
        assert (after["position_after"] == 0).all()


def test_market_daily_loss_reduces_only_that_market(candles):
    result = portfolio_backtest(two_markets(), candles)
    limited = portfolio_backtest(two_markets({"max_daily_loss": "0.2%"}), candles)
    scopes = {event[0] for event in limited.risk_events}
    assert scopes == {"market:crypto"}
    np.testing.assert_allclose(limited.equity["rsi:EUR/USD"].dropna().to_numpy(),
                               result.equity["rsi:EUR/USD"].dropna().to_numpy(), rtol=1e-12)


def test_order_notional_cap_splits_orders_over_bars(candles):
    config = two_markets(max_order_notional=2_000)
    result = portfolio_backtest(config, candles)
    for fills in result.fills.values():
        assert (fills["qty"] * fills["price"] <= 2_000 * (1 + 1e-12)).all()
    eth = result.fills["ema:ETH/BTC"]
    assert len(eth) > 0
    # an all-in entry of about 5,000 takes three consecutive bars of capped orders
    entry_bars = eth["bar"][:3]
    assert list(np.diff(entry_bars)) == [1, 1]
