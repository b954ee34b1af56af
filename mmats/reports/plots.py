"""The pictures of one backtest and of a sweep, as the reports and the command line name
them. They are drawn by :mod:`mmats.plots`, beside the backtest (whose ``result.plot()``
and ``sweep(...).plot()`` call them without reaching up into the reports).

Example::

    from mmats.reports.plots import sweep_figure
    sweep_figure(sweep("ema_cross", candles), "fast", "slow", path="grid.png")
"""

from mmats.plots import backtest_figure, check_png_path, save_png, sweep_figure, sweep_grid

__all__ = ["backtest_figure", "check_png_path", "save_png", "sweep_figure", "sweep_grid"]
