"""The research run and the scripts that lead the README: walkforward.py and montecarlo.py."""

import json
import subprocess

import numpy as np
import pytest

from mmats.data import load
from mmats.validate.research import run_research, statistics_period


def test_research_summary_and_verdict():
    candles = load("bittrex:ETH/BTC:5m").iloc[:3000]
    research = run_research("ema_cross", candles, {"fast": [5, 10, 20], "slow": [30, 60]},
                            folds=3, fee_bps=10, mc_runs=200, seed=3)
    summary = research.summary()
    json.dumps(summary, allow_nan=False)
    assert len(summary["folds"]) == 3
    assert summary["combinations"] == 6
    assert 0.0 <= summary["dsr"] <= 1.0 and 0.0 <= summary["pbo"] <= 1.0
    assert 0.0 <= summary["spa_pvalue"] <= 1.0
    assert summary["oos_metrics"]["final_equity"] == pytest.approx(
        research.walk_forward.equity.iloc[-1])
    # the Monte Carlo resamples the stitched out-of-sample bar returns
    assert research.monte_carlo.steps == len(research.walk_forward.returns)
    assert research.monte_carlo.runs == 200
    for word in ("Out of sample", "deflated Sharpe", "overfitting", "SPA"):
        assert word in research.verdict
    # the statistics use hourly returns on 10 days of 5-minute bars: 251 of them
    assert research.period == "1h"
    assert research.sweep.returns.shape == (251, 6)


def test_statistics_period_follows_the_span():
    from mmats.backtest import market

    assert statistics_period(market(load("nasdaq:GOOG:1d"))) == "bar"
    assert statistics_period(market(load("fx:EUR_USD:1h"))) == "1d"  # 251 trading days
    assert statistics_period(market(load("bittrex:ETH/BTC:5m"))) == "1h"


@pytest.mark.slow
def test_walkforward_script_with_no_arguments(repo, python, tmp_path):
    done = subprocess.run([python, repo / "scripts/walkforward.py"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "ema_cross on bittrex:ETH/BTC:5m" in out
    assert "DSR" in out and "PBO" in out and "SPA" in out
    reports = sorted((tmp_path / "reports").iterdir())
    assert {p.suffix for p in reports} >= {".html", ".pdf"}
    for path in reports:
        assert str(path.name) in out


def test_walkforward_script_json(repo, python, tmp_path):
    done = subprocess.run([python, repo / "scripts/walkforward.py", "--json", "--data",
                           "nasdaq:GOOG:1d", "--strategy", "donchian_breakout",
                           "--grid", "channel=10|20|40,stop_atr=2|4", "--folds", "4",
                           "--mc-runs", "300", "--reports", tmp_path],
                          capture_output=True, text=True, timeout=600, cwd=repo)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no progress bars under --json
    out = json.loads(done.stdout)
    assert {"folds", "oos_metrics", "dsr", "pbo", "spa_pvalue", "reports"} <= set(out)
    assert len(out["folds"]) == 4 and out["combinations"] == 6
    for path in out["reports"].values():
        assert (tmp_path / path.split("/")[-1]).exists()


def test_montecarlo_script(repo, python):
    done = subprocess.run([python, repo / "scripts/montecarlo.py", "--json", "--runs", "300",
                           "--method", "reshuffle", "--fee-bps", "10", "--seed", "7"],
                          capture_output=True, text=True, timeout=300, cwd=repo)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    final = out["backtest"]["final_equity"]
    # reshuffling trades keeps their product: every run ends where the backtest ended
    spread = out["monte_carlo"]
    assert spread["runs"] == 300 and spread["method"] == "reshuffle"
    quantiles = list(spread["percentiles"]["final_equity"].values())
    assert len(quantiles) == 5
    assert np.allclose(quantiles, final, rtol=1e-9)
    assert spread["percentiles"]["max_drawdown"]["p5"] <= spread["percentiles"][
        "max_drawdown"]["p95"]
    done = subprocess.run([python, repo / "scripts/montecarlo.py", "--runs", "0"],
                          capture_output=True, text=True, timeout=300, cwd=repo)
    assert done.returncode == 2 and "runs" in done.stderr


@pytest.fixture(scope="module")
def goog_research():
    return run_research("ema_cross", load("nasdaq:GOOG:1d"), {"fast": [5, 10, 20],
                        "slow": [30, 60, 100]}, folds=4, fee_bps=10, mc_runs=100)


def test_dsr_trials_are_measured_over_the_tested_span(goog_research):
    # like with like: each trial's Sharpe over the same periods as the stitched
    # out-of-sample returns it deflates, not over the whole history (another T)
    from mmats.validate.overfitting import deflated_sharpe_ratio

    research = goog_research
    oos = research.walk_forward.returns
    dsr = research.deflated_sharpe
    assert research.period == "bar"
    assert dsr.n_observations == len(oos) < len(research.sweep.returns)
    span = research.sweep.returns.loc[oos.index[0]:oos.index[-1]]  # the trials, by hand
    assert len(span) == len(oos)
    sharpes = span.mean() / span.std(ddof=1)
    assert dsr.trial_sharpe_variance == pytest.approx(sharpes.var(ddof=1), rel=1e-12)
    assert dsr.n_trials == 9
    same = deflated_sharpe_ratio(oos.to_numpy(), trial_sharpes=sharpes.to_numpy())
    assert dsr.dsr == pytest.approx(same.dsr, rel=1e-12)
    reported = research.summary()["deflated_sharpe"]
    assert reported["trials"] == 9 and reported["observations"] == len(oos)
    assert reported["span_start"] == oos.index[0].isoformat()
    assert reported["span_end"] == oos.index[-1].isoformat()


def test_dsr_trials_per_hour_cover_the_same_hours():
    candles = load("bittrex:ETH/BTC:5m").iloc[:3000]
    research = run_research("ema_cross", candles, {"fast": [5, 10], "slow": [30, 60]},
                            folds=3, fee_bps=10, mc_runs=50)
    assert research.period == "1h"
    tested, trials = research.tested_returns, research.trial_returns
    assert research.deflated_sharpe.n_observations == len(tested) == len(trials)
    hour = 3_600_000_000_000
    np.testing.assert_array_equal(tested.index.asi8 // hour, trials.index.asi8 // hour)
    first = research.walk_forward.returns.index[0]
    assert trials.index[0] >= first.floor("1h") and tested.index[0] >= first


def test_mc_reshuffle_reorders_the_stitched_trades(goog_research):
    from mmats.validate.montecarlo import trade_returns_on_equity

    wf = goog_research.walk_forward
    research = run_research("ema_cross", load("nasdaq:GOOG:1d"), {"fast": [5, 10, 20],
                            "slow": [30, 60, 100]}, folds=4, fee_bps=10, mc_runs=100,
                            mc_method="reshuffle")
    mc = research.monte_carlo
    assert mc.method == "reshuffle" and mc.steps == wf.metrics["trades"] > 0
    returns = trade_returns_on_equity(wf.oos)
    # compounding the trades in any order ends where the stitched run's last trade did
    last_exit = wf.oos.trades["exit_bar"][-1] - (len(wf.oos.market) - len(wf.equity))
    np.testing.assert_allclose(mc.final_equity, wf.equity.iloc[last_exit], rtol=1e-9)
    assert np.prod(1 + returns) * wf.oos.cash == pytest.approx(wf.equity.iloc[last_exit])
    from mmats.reports.research_report import research_document

    section = next(s for s in research_document(research).sections if s.anchor == "monte-carlo")
    intro = section.blocks[0].text
    assert f"The {mc.steps:,} out-of-sample trades were put in a new order" in intro


def test_psr_reproduces_the_2012_papers_example():
    """Bailey & López de Prado, "The Sharpe Ratio Efficient Frontier" (Journal of Risk
    15(2), 2012): two years of monthly returns (T = 24) with a Sharpe ratio of 0.458 a
    month (1.59 a year), skewness -2.448 and kurtosis 10.164 give PSR(0) = 0.913."""
    from mmats.validate.overfitting import probabilistic_sharpe_ratio_from_statistics

    psr = probabilistic_sharpe_ratio_from_statistics(0.458, 24, -2.448, 10.164)
    assert psr.psr == pytest.approx(0.913, abs=5e-4)
