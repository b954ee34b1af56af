"""The product's promise: replaying history through the runner (paper mode, one tick per
bar, every tick loading its state from the journal) gives the backtest's fills and equity."""

import json
import subprocess

import numpy as np
import pytest

from mmats.backtest import backtest
from mmats.data import load
from mmats.live.config import parse_config
from mmats.live.replay import replay
from mmats.strategy import available_strategies, load_strategy

DATA = {  # spec: (market type, bars replayed)
    "bittrex:ETH/BTC:5m": ("crypto", 600),
    "fx:EUR_USD:1h": ("forex", 400),
    "nasdaq:GOOG:1d": ("stocks", 400),
}
COSTS = {"fee_bps": 10, "slippage_bps": 2}
PARTNERS = {"bittrex:ETH/BTC:5m": ("LTC/BTC",)}  # other symbols the samples can give


def one_model_config(strategy, spec, market_type):
    venue, symbol, timeframe = spec.split(":")
    return parse_config({
        "mode": "paper",
        "markets": {"m": {"type": market_type, "feed": venue, "execution": "paper",
                          "symbols": [symbol], "timeframe": timeframe}},
        "models": [{"id": "model", "strategy": strategy, "market": "m", "costs": COSTS}],
    })


@pytest.mark.parametrize("spec", sorted(DATA))
@pytest.mark.parametrize("strategy", available_strategies())
def test_replay_through_the_runner_equals_the_backtest(strategy, spec, tmp_path):
    market_type, bars = DATA[spec]
    candles = load(spec).iloc[:bars].reset_index(drop=True)
    if load_strategy(strategy).inputs and spec not in PARTNERS:
        pytest.skip(f"{strategy} reads 5-minute crypto inputs (tests/live/test_parity_inputs"
                    ".py replays it at length)")
    config = one_model_config(strategy, spec, market_type)
    symbol = config.markets[0].symbols[0]
    given = {symbol: candles}
    extra = {}
    for partner in PARTNERS.get(spec, ()):  # what a strategy's extra inputs may read
        venue, _, timeframe = spec.split(":")
        given[partner] = load(f"{venue}:{partner}:{timeframe}").iloc[:bars]
        extra[f"{venue}:{partner}:{timeframe}"] = given[partner]
    replayed = replay(config, given, tmp_path / "journal.sqlite")
    expected = backtest(strategy, candles, **COSTS, extra_data=extra)
    np.testing.assert_allclose(replayed.equity.iloc[:, 0].to_numpy(),
                               expected.equity.to_numpy(), rtol=1e-9)
    fills = replayed.fills
    assert len(fills) == len(expected.fills)
    np.testing.assert_array_equal(fills["bar"], expected.fills["bar"])
    np.testing.assert_array_equal(fills["side"], expected.fills["side"])
    for column in ("qty", "price", "fee"):
        np.testing.assert_allclose(fills[column], expected.fills[column], rtol=1e-9)
    assert replayed.trades == expected.metrics["trades"]
    assert replayed.final_equity == pytest.approx(expected.metrics["final_equity"], rel=1e-9)


def test_live_script_replay_equals_backtest_script(repo, python, tmp_path):
    config = tmp_path / "one.yaml"
    config.write_text(
        "mode: paper\n"
        "markets:\n  crypto: {type: crypto, feed: bittrex, execution: paper, "
        "symbols: [ETH/BTC], timeframe: 5m}\n"
        "models:\n  - {id: ema, strategy: ema_cross, market: crypto, "
        "params: {fast: 10, slow: 30}, costs: {fee_bps: 10}}\n")
    data = tmp_path / "eth.parquet"
    load("bittrex:ETH/BTC:5m").iloc[:500].to_parquet(data)
    live = subprocess.run([python, repo / "scripts/live.py", "--config", config, "--replay",
                           data, "--json", "--journal", tmp_path / "j.sqlite"],
                          capture_output=True, text=True, timeout=600, cwd=repo)
    assert live.returncode == 0, live.stderr
    bt = subprocess.run([python, repo / "scripts/backtest.py", "--strategy", "ema_cross",
                         "--data", data, "--params", "fast=10,slow=30", "--fee-bps", "10",
                         "--json"], capture_output=True, text=True, timeout=600, cwd=repo)
    assert bt.returncode == 0, bt.stderr
    live_out, bt_out = json.loads(live.stdout), json.loads(bt.stdout)
    assert live_out["final_equity"] == pytest.approx(bt_out["final_equity"], rel=1e-9)
    assert live_out["trades"] == bt_out["trades"]
    assert len(live_out["fills"]) == bt_out["fills"]
    verify = subprocess.run([python, repo / "scripts/journal.py", "verify", "--journal",
                             tmp_path / "j.sqlite"], capture_output=True, text=True, cwd=repo)
    assert verify.returncode == 0, verify.stdout + verify.stderr
