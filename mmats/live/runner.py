"""The runner's names at their old address.

The runner is one tick per invocation, on the same kernel as the backtest. Its parts
live in their own modules: the tick, stage by stage (:mod:`mmats.live.tick`), the bar
closes it shares with the portfolio backtest (:mod:`mmats.live.closes`), the sleeves
(:mod:`mmats.live.sleeves`), and the replay and portfolio backtest
(:mod:`mmats.live.replay`); the lock, journal, feeds and brokers are built by
:mod:`mmats.live.wiring`, and the controls, the loop and the count of failed ticks are
in :mod:`mmats.live.control`. Code that imported these names from here
(``from mmats.live.runner import replay``) keeps working; new code imports them from
where they live.
"""

from __future__ import annotations

from mmats.live.closes import book_id
from mmats.live.replay import PortfolioResult, ReplayResult, portfolio_backtest, replay
from mmats.live.sleeves import CALENDAR_OF_MARKET, Sleeve, sleeves
from mmats.live.tick import MAX_BAD_BARS_PER_TICK, TickReport, run_tick

__all__ = [
    "CALENDAR_OF_MARKET", "MAX_BAD_BARS_PER_TICK", "PortfolioResult", "ReplayResult",
    "Sleeve", "TickReport", "book_id", "portfolio_backtest", "replay", "run_tick",
    "sleeves",
]
