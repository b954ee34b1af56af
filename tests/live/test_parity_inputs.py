"""Replay parity for strategies with extra inputs and a confidence: the runner, tick by
tick on trailing windows (each building its inputs from its own window and the feed),
equals the backtest over the whole history."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mmats.backtest import backtest
from mmats.data import load
from mmats.errors import ConfigError
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


def test_sentiment_lowers_the_replay_as_the_backtest_and_is_journaled(tmp_path):
    """A model with ``sentiment:`` reads the records at each close (the synthetic sample
    here), as ``backtest(sentiment=...)`` reads them over the history; the journal keeps
    the sentiment, multiplier and cap beside each signal."""
    import mmats

    sample = str(Path(mmats.__file__).parent / "data" / "sample" / "sentiment"
                 / "ETH_BTC.jsonl")
    rule = {"weight": 1.0, "cap_above": 0.5, "cap": 0.25}
    params = {"fast": 10, "slow": 30}
    candles = _eth()
    config = _config("ema_cross", params)
    config = replace(config, models=(replace(config.models[0],
                                             sentiment={"source": sample, **rule}),))
    replayed = replay(config, {"ETH/BTC": candles}, tmp_path / "j.sqlite")
    expected = backtest("ema_cross", candles, params, **COSTS, sentiment=sample,
                        sentiment_rule=rule)
    plain = backtest("ema_cross", candles, params, **COSTS)
    assert not np.array_equal(expected.equity.to_numpy(), plain.equity.to_numpy())
    _same(replayed, expected)
    with Journal(tmp_path / "j.sqlite") as journal:
        metas = [json.loads(row["meta"]) for row in journal.rows("signals")]
    lowered = [m for m in metas if m.get("sentiment_multiplier", 1.0) < 1.0]
    assert lowered and all(m["sentiment"] is not None for m in lowered)


def test_a_sentiment_block_is_checked_at_load():
    from mmats.errors import ConfigError

    for block, message in (({"weight": 0.5}, "source"),
                           ({"source": "x.jsonl", "weight": 2}, "weight must be a number"),
                           ({"source": "x.jsonl", "level": 1}, "unknown key 'level'")):
        with pytest.raises(ConfigError, match=message):
            parse_config({
                "mode": "paper",
                "markets": {"m": {"type": "crypto", "feed": "bittrex", "execution": "paper",
                                  "symbols": ["ETH/BTC"], "timeframe": "5m"}},
                "models": [{"id": "m1", "strategy": "ema_cross", "market": "m",
                            "sentiment": block}]})


FAR = '''
import numpy as np
from numba import njit

INPUTS = {"far": {"venue": "kraken", "symbol": "LTC/BTC"},
          "far_hour": {"symbol": "LTC/BTC", "timeframe": "1h"}}
PARAMS = {"n": [6, 12]}
DEFAULTS = {"n": 6}
WARMUP = 60


@njit(cache=False)
def signal(open, high, low, close, volume, far, far_hour, n):
    out = np.zeros(close.shape[0])
    for i in range(12 * n, close.shape[0]):
        if far[i] > far[i - n] and far_hour[i] >= far_hour[i - 12 * n]:
            out[i] = 1.0
    return out
'''


def _far_series():
    from mmats.data.resample import resample

    ltc = load("bittrex:LTC/BTC:5m").iloc[:BARS].reset_index(drop=True)
    return {"kraken:LTC/BTC:5m": ltc, "bittrex:LTC/BTC:1h": resample(ltc, "1h")}


def test_inputs_from_another_venue_and_timeframe_replay_as_they_backtest(tmp_path):
    """Another venue's series and another timeframe of another symbol: the replay's
    ticks read them through their own feeds, the backtest from extra_data; equal."""
    strategy = tmp_path / "far.py"
    strategy.write_text(FAR)
    eth, series = _eth(), _far_series()
    replayed = replay(_config(str(strategy), {"n": 6}), {"ETH/BTC": eth, **series},
                      tmp_path / "j.sqlite")
    _same(replayed, backtest(str(strategy), eth, {"n": 6}, **COSTS, extra_data=series))
    with pytest.raises(ConfigError, match="no candles for kraken:LTC/BTC:5m"):
        replay(_config(str(strategy), {"n": 6}), {"ETH/BTC": eth}, tmp_path / "k.sqlite")


def test_a_store_tick_reads_another_venues_series_from_the_store(tmp_path):
    """The cron tick reads another venue's and another timeframe's series from the
    candle store (their folders filled by imports here), and decides as the backtest."""
    from mmats.data.store import CandleStore
    from mmats.live.control import tick_once

    strategy = tmp_path / "far.py"
    strategy.write_text(FAR)
    eth, series = _eth(), _far_series()
    store = CandleStore(tmp_path / "data")
    store.write("bittrex", "ETH/BTC", "5m", eth)
    store.write("kraken", "LTC/BTC", "5m", series["kraken:LTC/BTC:5m"])
    store.write("bittrex", "LTC/BTC", "1h", series["bittrex:LTC/BTC:1h"])
    config = replace(_config(str(strategy), {"n": 6}), data_root=tmp_path / "data",
                     journal=tmp_path / "journal" / "j.sqlite")
    last_close = int(eth["ts"].iloc[-1].value) + 300_000_000_000
    report = tick_once(config, now_ns=last_close)
    assert not [a for a in report.alerts if "input series" in a[0]], report.alerts
    expected = backtest(str(strategy), eth, {"n": 6}, **COSTS, extra_data=series)
    with Journal(config.journal) as journal:
        state = journal.load_state("model:ETH/BTC")[0]
    assert state["equity"] == pytest.approx(expected.metrics["final_equity"], rel=1e-9)


def test_a_missing_input_series_is_alerted_and_no_opinion_not_a_failed_tick(tmp_path):
    from mmats.data.store import CandleStore
    from mmats.live.control import tick_once

    strategy = tmp_path / "far.py"
    strategy.write_text(FAR)
    eth = _eth()
    CandleStore(tmp_path / "data").write("bittrex", "ETH/BTC", "5m", eth)
    config = replace(_config(str(strategy), {"n": 6}), data_root=tmp_path / "data",
                     journal=tmp_path / "journal" / "j.sqlite")
    report = tick_once(config, now_ns=int(eth["ts"].iloc[-1].value) + 300_000_000_000)
    assert report.bars == len(eth)
    assert any(title == "MMATS input series missing" and "kraken" in message
               for title, message in report.alerts), report.alerts
    with Journal(config.journal) as journal:
        assert journal.load_state("model:ETH/BTC")[0]["n_trades"] == 0
