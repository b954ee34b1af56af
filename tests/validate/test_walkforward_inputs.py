"""The walk-forward of a strategy with extra inputs and a confidence: each fold trades
the inputs aligned over the whole history, the stitched result keeps the confidence."""

import numpy as np

from mmats.data import load
from mmats.validate.walkforward import walk_forward


def test_a_cross_symbol_walk_forward_uses_the_partner_and_equals_its_folds():
    eth = load("bittrex:ETH/BTC:5m")
    ltc = load("bittrex:LTC/BTC:5m")
    grid = {"window": [48, 96], "entry": [1.5, 2.0], "exit": [0.5], "short": [0, 1]}
    given = walk_forward("pair_spread", eth, grid, folds=3, fee_bps=10,
                         extra_data={"bittrex:LTC/BTC:5m": ltc})
    stored = walk_forward("pair_spread", "bittrex:ETH/BTC:5m", grid, folds=3, fee_bps=10)
    np.testing.assert_array_equal(given.oos.equity.to_numpy(), stored.oos.equity.to_numpy())
    assert "partner" in given.market.extras
    moved = walk_forward("pair_spread", eth, grid, folds=3, fee_bps=10,
                         extra_data={"bittrex:LTC/BTC:5m": load("bittrex:ADA/BTC:5m")})
    assert not np.array_equal(moved.oos.equity.to_numpy(), given.oos.equity.to_numpy())


def test_a_walk_forward_sized_by_confidence_keeps_it_in_the_stitched_result():
    grid = {"lookback": [48, 96], "vol_window": [96], "target_bps": [20]}
    result = walk_forward("vol_target_momentum", "bittrex:ETH/BTC:5m", grid, folds=3,
                          fee_bps=10, size_by_confidence=True, confidence_step=0.25)
    oos = result.oos
    assert oos.confidence is not None
    traded = ~np.isnan(oos.confidence.to_numpy())
    assert traded.sum() > 1000
    assert (oos.acted.to_numpy()[traded] <= oos.signal.to_numpy()[traded] + 1e-12).all()
