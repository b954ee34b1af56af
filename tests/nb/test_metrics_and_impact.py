"""Hand-computed checks of what the other kernel tests leave out: CAGR, drawdown duration
and the two impact slippage models."""

import math

import numpy as np
import pytest
from kernel_runs import DAY_NS, HOUR_NS, bars, run

from mmats.nb.metrics import finalize_metrics
from mmats.sleeve import SleeveConfig
from mmats.types import METRIC_NAMES


def metrics_of(result, periods_per_year, bar_ns):
    from mmats.nb.metrics import init_metrics, update_metrics
    from mmats.sleeve import new_metrics

    metrics = new_metrics(10_000.0)
    init_metrics(metrics[0], 10_000.0)
    for t, equity in enumerate(result.equity):
        update_metrics(metrics[0], equity, result.position[t], t, int(t * bar_ns))
    out = np.empty(len(METRIC_NAMES))
    finalize_metrics(metrics[0], result.state[0], periods_per_year, bar_ns, out)
    return dict(zip(METRIC_NAMES, out, strict=True))


def test_cagr_uses_calendar_time_of_the_run():
    # buy at bar 1's open (100) and hold while the close grows 1 % a day for a year
    days = 366
    closes = 100.0 * 1.01 ** np.arange(days)
    rows = [(c, c, c, c) for c in closes]
    rows[1] = (100.0, closes[1], 100.0, closes[1])
    result = run(bars(rows, step_ns=DAY_NS), np.ones(days), periods_per_year=365.0)
    got = metrics_of(result, 365.0, DAY_NS)
    years = days * DAY_NS / (365.25 * DAY_NS)  # first to last bar plus one bar
    growth = result.equity[-1] / 10_000.0
    assert got["cagr"] == pytest.approx(growth ** (1 / years) - 1, rel=1e-12)
    assert got["total_return"] == pytest.approx(growth - 1, rel=1e-12)


def test_cagr_counts_calendar_years_not_bars():
    # three bars two calendar years apart (first to last bar plus one bar): 10,000 -> 12,100
    # is 10 % a year whatever the bar count; quantstats' bars / periods would say 3 / 252
    from mmats.nb.metrics import init_metrics, update_metrics
    from mmats.sleeve import new_metrics, new_state

    metrics, state = new_metrics(10_000.0), new_state(10_000.0)
    init_metrics(metrics[0], 10_000.0)
    last_ns = int(2 * 365.25 * DAY_NS) - DAY_NS
    for bar, (ts_ns, equity) in enumerate([(0, 10_000.0), (DAY_NS, 11_000.0),
                                           (last_ns, 12_100.0)]):
        update_metrics(metrics[0], equity, 0.0, bar, ts_ns)
    state[0]["equity"] = 12_100.0
    out = np.empty(len(METRIC_NAMES))
    finalize_metrics(metrics[0], state[0], 252.0, DAY_NS, out)
    assert dict(zip(METRIC_NAMES, out, strict=True))["cagr"] == pytest.approx(0.1, rel=1e-12)


def test_drawdown_depth_and_duration():
    # long from bar 1: equity follows the close 100 → 120 → 90 → 110 → 125 → 130
    closes = [100.0, 100.0, 120.0, 90.0, 110.0, 125.0, 130.0]
    rows = [(c, c, c, c) for c in closes]
    result = run(bars(rows), np.ones(len(closes)))
    got = metrics_of(result, 8760.0, HOUR_NS)
    assert got["max_drawdown"] == pytest.approx(90.0 / 120.0 - 1, rel=1e-12)
    # peak at bar 2, under water at bars 3 and 4, a new high at bar 5
    assert got["max_drawdown_duration_bars"] == 2
    assert got["max_drawdown_duration_days"] == pytest.approx(2 / 24)


def test_volatility_sqrt_slippage_amount():
    # closes alternate ±1 %: the EWMA of squared log returns is known in closed form
    n = 40
    closes = 100.0 * np.where(np.arange(n) % 2 == 0, 1.0, 1.01)
    volume = 500.0
    rows = [(c, c * 1.02, c * 0.98, c, volume) for c in closes]
    signal = np.zeros(n)
    signal[30:] = 1.0  # decided at bar 30's close, filled at bar 31's open
    settings = dict(slippage_bps=2.0, slippage_model="volatility_sqrt", impact_coef=0.5,
                    vol_halflife_bars=10.0)
    result = run(bars(rows), signal, **settings)
    fill = result.fills[0]
    assert fill["bar"] == 31
    decay = SleeveConfig(**settings).to_record(8760.0)[0]["ewm_decay"]
    log_returns = np.diff(np.log(closes[:31]))  # bars 1..30 are known at bar 31's open
    weights = decay ** np.arange(len(log_returns))[::-1]
    variance = np.sum(weights * log_returns**2) * (1 - decay) / (1 - decay ** len(log_returns))
    volumes = np.full(31, volume)
    average_volume = (np.sum(decay ** np.arange(31)[::-1] * volumes) * (1 - decay)
                      / (1 - decay**31))
    open_ = rows[31][0]
    # the impact is estimated on the quantity sized at the open before slippage
    estimate = 10_000.0 / (open_ * (1.0 + 0.0))
    fraction = 2e-4 + 0.5 * math.sqrt(variance) * math.sqrt(estimate / average_volume)
    assert fill["price"] == pytest.approx(open_ * (1 + fraction), rel=1e-12)
    assert fill["qty"] == pytest.approx(10_000.0 / fill["price"], rel=1e-12)


def test_participation_slippage_amount():
    rows = [(100.0, 105.0, 99.0, 100.0, 1_000.0)] * 3
    signal = np.array([1.0, 1.0, 1.0])
    result = run(bars(rows), signal, slippage_model="participation", impact_coef=0.1)
    fill = result.fills[0]
    quantity_estimate = 10_000.0 / 100.0  # 100 units against a bar volume of 1,000
    fraction = 0.1 * quantity_estimate / 1_000.0
    assert fill["price"] == pytest.approx(100.0 * (1 + fraction), rel=1e-12)  # inside the bar
    assert fill["slippage"] == pytest.approx(fill["qty"] * (fill["price"] - 100.0), rel=1e-12)
