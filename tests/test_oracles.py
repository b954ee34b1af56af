"""MMATS against independent implementations on the bundled data: vectorbt and
backtesting.py for the simulation, quantstats for the metrics, and the sweep against
single backtests.

vectorbt compiles for ~30 s on first use, so it is imported once per module and called
only a few times.
"""

from __future__ import annotations

import inspect
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmats.backtest import backtest, sweep
from mmats.types import METRIC_NAMES

SAMPLE = Path(__file__).resolve().parents[1] / "mmats" / "data" / "sample"
DATASETS = {
    "eth_btc_5m": "bittrex/ETH_BTC_5m.parquet",
    "eur_usd_1h": "fx/EUR_USD_1h.parquet",
    "goog_1d": "nasdaq/GOOG_1d.parquet",
}
EMA = {"fast": 10, "slow": 50}
FEE_BPS = 10
CASH = 10_000.0


def _candles(name: str) -> pd.DataFrame:
    return pd.read_parquet(SAMPLE / DATASETS[name])


@pytest.fixture(scope="module")
def ema_runs():
    """``backtest("ema_cross", ...)`` on each bundled dataset, with its candles."""
    runs = {}
    for name in DATASETS:
        candles = _candles(name)
        runs[name] = (candles, backtest("ema_cross", candles, EMA, fee_bps=FEE_BPS))
    return runs


@pytest.fixture(scope="module")
def vbt():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import vectorbt
    return vectorbt


def _naive_index(series: pd.Series) -> pd.Series:
    return series.set_axis(series.index.tz_convert(None))


def _transitions(result):
    """Entries and exits from the signal (long while > 0), moved to the bar they fill in."""
    long = (result.signal > 0).to_numpy()
    before = np.concatenate([[False], long[:-1]])
    entries = pd.Series(long & ~before, index=result.signal.index)
    exits = pd.Series(~long & before, index=result.signal.index)
    return entries.shift(1, fill_value=False), exits.shift(1, fill_value=False)


@pytest.mark.parametrize("name", sorted(DATASETS))
@pytest.mark.slow
def test_ema_cross_equals_vectorbt_from_signals(vbt, ema_runs, name):
    candles, result = ema_runs[name]
    frame = candles.set_index("ts")
    entries, exits = _transitions(result)
    assert entries.sum() > 5, "too few trades for a meaningful comparison"
    portfolio = vbt.Portfolio.from_signals(
        frame["close"], entries.set_axis(frame.index), exits.set_axis(frame.index),
        price=frame["open"], size=np.inf, fees=FEE_BPS * 1e-4, init_cash=CASH, freq=None)
    value = portfolio.value().to_numpy()
    np.testing.assert_allclose(result.equity.to_numpy(), value, rtol=1e-9, atol=0)
    assert result.metrics["final_equity"] == pytest.approx(value[-1], rel=1e-9)

    records = portfolio.trades.records
    closed = records[records["status"] == 1]
    assert len(closed) == len(result.trades) == result.metrics["trades"]
    still_open = int(result.position.iloc[-1] != 0.0)
    assert len(records) == len(result.trades) + still_open == int(entries.sum())
    np.testing.assert_allclose(result.trades["entry_price"], closed["entry_price"], rtol=1e-12)
    np.testing.assert_allclose(result.trades["exit_price"], closed["exit_price"], rtol=1e-12)
    np.testing.assert_allclose(result.trades["size"], closed["size"], rtol=1e-9)
    np.testing.assert_allclose(result.trades["pnl"], closed["pnl"], rtol=1e-9,
                               atol=1e-9 * CASH)
    assert result.metrics["fees_paid"] == pytest.approx(
        float(portfolio.orders.records["fees"].sum()), rel=1e-9)


def _backtesting_run(candles: pd.DataFrame, fractional: bool):
    from backtesting import Backtest, Strategy
    from backtesting.lib import FractionalBacktest

    def long_while_fast_above_slow(close, fast, slow):
        def ema(span):
            return pd.Series(close).ewm(span=span, adjust=False, min_periods=span).mean()

        # 0/1 without NaN: backtesting.py starts calling next() one bar after its
        # indicators' warm-up NaNs end, which would skip the decision at bar slow - 1
        return (ema(fast) > ema(slow)).astype(float).to_numpy()

    class EmaCross(Strategy):
        fast = EMA["fast"]
        slow = EMA["slow"]

        def init(self):
            self.long = self.I(long_while_fast_above_slow, self.data.Close, self.fast,
                               self.slow)

        def next(self):
            long = self.long[-1] > 0.0
            if long and not self.position:
                # "all equity": a fraction just below 1 (1 itself would mean one unit)
                self.buy(size=1 - 1e-12)
            elif not long and self.position:
                self.position.close()

    data = candles.set_index("ts").rename(columns=str.capitalize)
    data.index = data.index.tz_convert(None)
    engine = FractionalBacktest if fractional else Backtest
    extra = {"fractional_unit": 1e-8} if fractional else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test = engine(data, EmaCross, cash=CASH, commission=FEE_BPS * 1e-4,
                      trade_on_close=False, exclusive_orders=False, **extra)
        return test.run()


def test_ema_cross_equals_backtesting_py_in_whole_shares():
    """backtesting.py fills at the next open and buys ``floor(cash / (price × (1 +
    commission)))`` whole units, paying the commission on entry and on exit; MMATS with
    ``lot_size=1`` rounds the same quantity toward zero, so the runs match exactly."""
    candles = _candles("goog_1d")
    result = backtest("ema_cross", candles, EMA, fee_bps=FEE_BPS, lot_size=1.0)
    stats = _backtesting_run(candles, fractional=False)
    equity = stats["_equity_curve"]["Equity"].to_numpy()
    np.testing.assert_allclose(result.equity.to_numpy(), equity, rtol=1e-9, atol=0)
    assert result.metrics["final_equity"] == pytest.approx(stats["Equity Final [$]"],
                                                           rel=1e-9)
    trades = stats["_trades"]
    closed = len(result.trades)
    assert len(trades) >= closed > 5
    np.testing.assert_array_equal(result.trades["size"], trades["Size"].to_numpy()[:closed])
    np.testing.assert_allclose(result.trades["pnl"], trades["PnL"].to_numpy()[:closed],
                               rtol=1e-9, atol=1e-9 * CASH)


def test_ema_cross_against_fractional_backtesting_py():
    """FractionalBacktest trades whole multiples of ``fractional_unit`` (here 1e-8
    shares), so each of its buys is up to 1e-8 shares (~5e-6 dollars on GOOG) smaller
    than MMATS's exact all-in quantity. That idle cash earns nothing for the trade:
    ~1e-10 of the equity per trade at most, so over GOOG's 22 trades the curves agree
    to a few 1e-10 (1.6e-10 measured). MMATS with ``lot_size=1e-8`` makes the same
    rounding and agrees to ~1e-10 as well."""
    candles = _candles("goog_1d")
    stats = _backtesting_run(candles, fractional=True)
    equity = stats["_equity_curve"]["Equity"].to_numpy()
    for lot_size in (0.0, 1e-8):
        result = backtest("ema_cross", candles, EMA, fee_bps=FEE_BPS, lot_size=lot_size)
        np.testing.assert_allclose(result.equity.to_numpy(), equity, rtol=1e-9, atol=0,
                                   err_msg=f"lot_size={lot_size}")
        assert len(result.trades) == len(stats["_trades"])


def _readme_metrics_table() -> dict[str, str]:
    """The README's Metrics table: metric name -> its quantstats cell."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| .+? \| (.+?) \|$", section, flags=re.M)
    return dict(rows)


def test_readme_metrics_table_lists_every_metric():
    assert list(_readme_metrics_table()) == list(METRIC_NAMES)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_metrics_equal_quantstats(ema_runs, name):
    """Every metric the README's table marks "= `function`" equals ``qs.stats.function``."""
    import quantstats as qs

    _, result = ema_runs[name]
    returns = _naive_index(result.returns)  # quantstats fails on tz-aware indexes
    periods = result.market.periods_per_year
    metrics = result.metrics
    claims = {
        metric: re.fullmatch(r"= `(\w+)`", cell).group(1)
        for metric, cell in _readme_metrics_table().items()
        if cell.startswith("=")
    }
    assert set(claims) == {"total_return", "sharpe", "sortino", "max_drawdown", "volatility"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for metric, function in claims.items():
            call = getattr(qs.stats, function)
            kwargs = {"periods": periods} if "periods" in inspect.signature(call).parameters else {}
            assert metrics[metric] == pytest.approx(call(returns, **kwargs), rel=1e-9), metric
        quantstats_cagr = qs.stats.cagr(returns, periods=periods)

    # CAGR, as the table says: calendar years here, bars / bars per year in quantstats
    growth = metrics["final_equity"] / result.cash
    bar = pd.Timedelta(result.market.bar_ns, "ns")
    years = (returns.index[-1] - returns.index[0] + bar) / pd.Timedelta(days=365.25)
    assert metrics["cagr"] == pytest.approx(growth ** (1 / years) - 1, rel=1e-9)
    assert quantstats_cagr == pytest.approx(growth ** (periods / len(returns)) - 1, rel=1e-9)
    stated = {"eth_btc_5m": 2.3e-5, "goog_1d": 1.3e-3, "eur_usd_1h": 5.3e-3}[name]
    assert abs(metrics["cagr"] / quantstats_cagr - 1) == pytest.approx(stated, rel=0.1)

    trades = result.trades
    pnl = trades["pnl"]
    assert metrics["trades"] == len(trades)
    assert metrics["win_rate"] == pytest.approx(np.mean(pnl > 0), rel=1e-12)
    assert metrics["profit_factor"] == pytest.approx(pnl[pnl > 0].sum() / -pnl[pnl < 0].sum(),
                                                     rel=1e-9)
    assert metrics["exposure"] == pytest.approx(np.mean(result.position.to_numpy() != 0.0))
    assert metrics["fees_paid"] == pytest.approx(result.fills["fee"].sum(), rel=1e-12)


@pytest.mark.parametrize(
    ("strategy", "grid"),
    [
        ("ema_cross", {"fast": [5, 10, 30], "slow": [20, 50]}),
        ("donchian_breakout", {"channel": [10, 30], "atr_period": [14], "stop_atr": [1.5, 3.0]}),
        ("rsi_reversion", {"period": [7, 14], "lower": [30], "upper": [70], "short": [0, 1]}),
    ],
)
def test_sweep_rows_equal_single_backtests(strategy, grid):
    candles = _candles("eth_btc_5m")
    settings = dict(fee_bps=FEE_BPS, slippage_bps=2, max_drawdown_pct=30.0)
    table = sweep(strategy, candles, grid, **settings).table
    assert len(table) >= 4
    names = [c for c in table.columns if c in grid]
    for row in table.to_dict("records"):
        params = {name: row[name] for name in names}
        metrics = backtest(strategy, candles, params, check_lookahead_bias=False,
                           **settings).metrics
        for key, value in metrics.items():
            np.testing.assert_allclose(row[key], value, rtol=1e-12, atol=0,
                                       err_msg=f"{strategy} {params} {key}")


@pytest.mark.parametrize(("strategy", "name", "params"), [
    ("ema_cross", "goog_1d", EMA),
    # stops: an entry and its stop can fill in the same bar (two vectorbt columns)
    ("donchian_breakout", "eth_btc_5m", {"channel": 20, "atr_period": 14, "stop_atr": 1.5}),
])
def test_to_vectorbt_value_equals_equity(vbt, strategy, name, params):
    result = backtest(strategy, _candles(name), params, fee_bps=FEE_BPS, slippage_bps=3)
    portfolio = result.to_vectorbt()
    value = portfolio.value()
    assert isinstance(value, pd.Series)
    np.testing.assert_allclose(value.to_numpy(), result.equity.to_numpy(), rtol=1e-9, atol=0)
    assert portfolio.orders.count() == len(result.fills)
