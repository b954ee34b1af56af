"""Validation of backtest results: Monte Carlo robustness and overfitting statistics."""

from mmats.validate.montecarlo import MonteCarloResult, monte_carlo
from mmats.validate.overfitting import (
    DSRResult,
    PBOResult,
    PSRResult,
    SPAResult,
    deflated_sharpe_ratio,
    deflated_sharpe_ratio_from_statistics,
    expected_maximum_sharpe,
    probabilistic_sharpe_ratio,
    probabilistic_sharpe_ratio_from_statistics,
    probability_of_backtest_overfitting,
    spa_test,
)

__all__ = [
    "DSRResult",
    "MonteCarloResult",
    "PBOResult",
    "PSRResult",
    "SPAResult",
    "deflated_sharpe_ratio",
    "deflated_sharpe_ratio_from_statistics",
    "expected_maximum_sharpe",
    "monte_carlo",
    "probabilistic_sharpe_ratio",
    "probabilistic_sharpe_ratio_from_statistics",
    "probability_of_backtest_overfitting",
    "spa_test",
]
