"""Replay parity for strategies with extra inputs and a confidence: the runner, tick by
tick on trailing windows (each building its inputs from its own window and the feed),
equals the backtest over the whole history."""

import json

import numpy as np
import pytest

from mmats.backtest import backtest
from mmats.data import load
from mmats.live.config import parse_config
from mmats.live.journal import Journal
from mmats.live.replay import replay

COSTS = {"fee_bps": 10, "slippage_bps": 2}
BARS = 1500


def _config(strategy, params, risk=None):
    return parse_config({
        "mode": "paper",
        "markets": {"m": {"type": "crypto", "feed": "bittrex", "execution": "paper",
                          "symbols": ["ETH/BTC"], "timeframe": "5m"}},
        "models": [{"id": "model", "strategy": strategy, "market": "m", "costs": COSTS,
                    "params": params, **({"risk": risk} if risk else {})}],
    })


def _same(replayed, expected):
    np.testing.assert_allclose(replayed.equity.iloc[:, 0].to_numpy(),
                               expected.equity.to_numpy(), rtol=1e-9)
    fills = replayed.fills
    assert len(fills) == len(expected.fills) > 0
    np.testing.assert_array_equal(fills["bar"], expected.fills["bar"])
    for column in ("qty", "price", "fee"):
        np.testing.assert_allclose(fills[column], expected.fills[column], rtol=1e-9)


def _eth():
    return load("bittrex:ETH/BTC:5m").iloc[:BARS].reset_index(drop=True)


def test_a_multi_timeframe_strategy_replays_as_it_backtests(tmp_path):
    strategy = "trend_filter"
    params = {"fast": 10, "slow": 30, "hours": 2}
    candles = _eth()
    replayed = replay(_config(strategy, params), {"ETH/BTC": candles}, tmp_path / "j.sqlite")
    _same(replayed, backtest(strategy, candles, params, **COSTS))


def test_a_cross_symbol_strategy_replays_as_it_backtests(tmp_path):
    strategy = "pair_spread"
    params = {"window": 48, "entry": 1.5, "exit": 0.5, "short": 1}
    eth, ltc = _eth(), load("bittrex:LTC/BTC:5m").iloc[:BARS].reset_index(drop=True)
    replayed = replay(_config(strategy, params), {"ETH/BTC": eth, "LTC/BTC": ltc},
                      tmp_path / "j.sqlite")
    _same(replayed, backtest(strategy, eth, params, **COSTS,
                             extra_data={"bittrex:LTC/BTC:5m": ltc}))


def test_confidence_sizes_the_replay_as_the_backtest_and_is_journaled(tmp_path):
    strategy = "vol_target_momentum"
    params = {"lookback": 48, "vol_window": 96, "target_bps": 20}
    risk = {"size_by_confidence": True, "confidence_step": 0.25}
    candles = _eth()
    replayed = replay(_config(strategy, params, risk), {"ETH/BTC": candles},
                      tmp_path / "j.sqlite")
    expected = backtest(strategy, candles, params, **COSTS, size_by_confidence=True,
                        confidence_step=0.25)
    _same(replayed, expected)
    with Journal(tmp_path / "j.sqlite") as journal:
        rows = journal.rows("signals")
    said = [row for row in rows if row["confidence"] is not None]
    assert len(said) > 100 and all(0.0 <= row["confidence"] <= 1.0 for row in said)
    confidence = expected.confidence.to_numpy()
    at = {int(ts): c for ts, c in zip(expected.market.ts_ns, confidence, strict=True)}
    for row in said:  # each is the strategy's confidence at that bar, as the backtest's
        assert row["confidence"] == pytest.approx(at[int(row["ts_ns"])], rel=1e-12)
        meta = json.loads(row["meta"])
        assert meta["strategy_exposure"] in (0.0, 1.0)
