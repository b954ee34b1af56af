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
