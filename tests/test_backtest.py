import numpy as np
import pandas as pd
import pytest

from mmats.backtest import backtest, market, sweep
from mmats.errors import ConfigError, DataError
from mmats.types import METRIC_NAMES


def test_result_carries_curves_records_and_metrics(eth_btc):
    result = backtest("ema_cross", eth_btc, {"fast": 10, "slow": 50}, fee_bps=10)
    assert set(METRIC_NAMES) <= set(result.metrics)
    assert len(result.equity) == len(eth_btc)
    assert result.equity.index.tz is not None
    assert result.metrics["final_equity"] == pytest.approx(result.equity.iloc[-1], rel=1e-12)
    assert result.metrics["trades"] == len(result.trades)
    assert len(result.fills) == 2 * len(result.trades)  # all-in entries and exits
    # decisions at a bar's close fill at the next bar's open
    first_fill = result.fills[0]
    decided = np.flatnonzero(result.signal.to_numpy() > 0)[0]
    assert first_fill["bar"] == decided + 1
    assert first_fill["price"] == eth_btc["open"].iloc[decided + 1]
    frame = result.trades_frame()
    assert {"entry_ts", "exit_ts", "pnl"} <= set(frame.columns)
    assert frame["pnl"].sum() == pytest.approx(
        result.metrics["final_equity"] - 10_000, rel=1e-9)


def test_periods_per_year_follow_the_calendar(sample_candles):
    result = backtest("ema_cross", sample_candles, fee_bps=5)
    ppy = result.market.periods_per_year
    expected = {"5m": 105_120.0, "1h": 6_240.0, "1d": 252.0}[result.market.timeframe]
    assert ppy == expected
    returns = result.returns
    sharpe = returns.mean() / returns.std(ddof=1) * np.sqrt(ppy)
    assert result.metrics["sharpe"] == pytest.approx(sharpe, rel=1e-9)


def test_continuing_from_a_state_equals_one_run(eth_btc):
    params = {"fast": 12, "slow": 40}
    whole = backtest("donchian_breakout", eth_btc, fee_bps=10, slippage_bps=3)
    cut = 3_000
    first = backtest("donchian_breakout", eth_btc.iloc[:cut], fee_bps=10, slippage_bps=3)
    second = backtest("donchian_breakout", eth_btc, fee_bps=10, slippage_bps=3, start=cut,
                      state=first.state)
    stitched = np.concatenate([first.equity.to_numpy(), second.equity.to_numpy()])
    np.testing.assert_allclose(stitched, whole.equity.to_numpy(), rtol=1e-12)
    fills = np.concatenate([first.fills, second.fills])
    np.testing.assert_array_equal(fills["bar"], whole.fills["bar"])
    np.testing.assert_allclose(fills["price"], whole.fills["price"], rtol=1e-12)
    assert second.metrics["final_equity"] == pytest.approx(whole.metrics["final_equity"])
    ema = backtest("ema_cross", eth_btc, params, start=pd.Timestamp(eth_btc.ts.iloc[cut]))
    assert ema.equity.index[0] == eth_btc.ts.iloc[cut]


def test_sweep_rows_cover_the_grid_and_skip_invalid(eth_btc):
    result = sweep("ema_cross", eth_btc, {"fast": [5, 10, 60], "slow": [20, 50]}, fee_bps=10)
    assert result.skipped == 2  # (60, 20) and (60, 50)
    assert len(result.table) == 4
    assert list(result.table.columns[:2]) == ["fast", "slow"]
    assert result.bar_combinations == 4 * len(eth_btc)
    assert result.seconds > 0
    single = backtest("ema_cross", eth_btc, {"fast": 5, "slow": 50}, fee_bps=10).metrics
    row = result.table.query("fast == 5 and slow == 50").iloc[0]
    for name in METRIC_NAMES:
        assert row[name] == pytest.approx(single[name], rel=1e-12, nan_ok=True), name
    best = result.best("final_equity", 1)
    assert best["final_equity"].iloc[0] == result.table["final_equity"].max()


def test_multi_symbol_sweep_is_one_table(repo):
    data = {
        "ETH/BTC": pd.read_parquet(repo / "mmats/data/sample/bittrex/ETH_BTC_5m.parquet"),
        "LTC/BTC": pd.read_parquet(repo / "mmats/data/sample/bittrex/LTC_BTC_5m.parquet"),
    }
    result = sweep("rsi_reversion", data, {"period": [7, 14], "lower": [30], "upper": [70]},
                   progress=True)
    assert list(result.table["symbol"]) == ["ETH/BTC", "ETH/BTC", "LTC/BTC", "LTC/BTC"]
    single = backtest("rsi_reversion", data["LTC/BTC"], {"period": 14}).metrics
    row = result.table.iloc[3]
    assert row["final_equity"] == pytest.approx(single["final_equity"], rel=1e-12)


def test_stop_loss_strategy_sweeps_with_its_stops(eth_btc):
    result = sweep("donchian_breakout", eth_btc, {"channel": [20], "stop_atr": [0.5, 50.0]})
    for stop_atr, row in zip([0.5, 50.0], result.table.itertuples(), strict=True):
        single = backtest("donchian_breakout", eth_btc, {"channel": 20, "stop_atr": stop_atr})
        assert row.final_equity == pytest.approx(single.metrics["final_equity"], rel=1e-12)
        stops = (single.fills["reason"] == 1).sum()  # FillReason.STOP_LOSS
        # a stopped-out breakout is not re-entered until the channel signal changes, so
        # every breakout is one trade, closed either by its stop or by the exit channel
        assert single.metrics["trades"] == row.trades
        if stop_atr == 0.5:
            assert stops > 0.5 * row.trades
        else:
            assert stops == 0


def test_bad_inputs_get_clear_errors(eth_btc):
    with pytest.raises(ConfigError, match="unknown setting 'fees'"):
        backtest("ema_cross", eth_btc, fees=10)
    with pytest.raises(ConfigError, match="fee_bps must be a finite number"):
        backtest("ema_cross", eth_btc, fee_bps=-1)
    with pytest.raises(ConfigError, match="no parameter 'fats'"):
        backtest("ema_cross", eth_btc, {"fats": 3})
    broken = eth_btc.copy()
    broken.loc[100, "close"] = np.nan
    with pytest.raises(DataError, match="column close .* row 100"):
        backtest("ema_cross", broken)
    with pytest.raises(DataError, match="lack column"):
        market(eth_btc.drop(columns="volume"))
    with pytest.raises(ConfigError, match="no valid combination"):
        sweep("ema_cross", eth_btc, {"fast": [50], "slow": [20]})


def test_sweep_keeps_period_returns_of_every_combination(eth_btc):
    grid = {"fast": [5, 10], "slow": [50, 100]}
    result = sweep("ema_cross", eth_btc, grid, fee_bps=10, period_returns="1d")
    returns = result.returns
    days = pd.to_datetime(eth_btc.ts).dt.floor("1D").nunique()
    assert returns.shape == (days, 4)
    assert list(returns.columns) == [0, 1, 2, 3]
    for column, params in enumerate(result.table[["fast", "slow"]].to_dict("records")):
        single = backtest("ema_cross", eth_btc, params, fee_bps=10)
        daily = single.equity.groupby(single.equity.index.floor("1D")).last()
        expected = daily / daily.shift(1, fill_value=10_000.0) - 1.0
        np.testing.assert_allclose(returns[column].to_numpy(), expected.to_numpy(), rtol=1e-12)
        growth = (1 + returns[column]).prod() * 10_000.0
        assert growth == pytest.approx(result.table["final_equity"][column], rel=1e-12)
    bars = sweep("ema_cross", eth_btc.iloc[:500], {"fast": [5], "slow": [50]},
                 period_returns="bar").returns
    assert bars.shape == (500, 1)
    with pytest.raises(ConfigError, match="shorter than the bars"):
        sweep("ema_cross", eth_btc, grid, period_returns="1m")
