"""MMATS: a research-first, multi-market trading library.

The public surface is small::

    from mmats.backtest import backtest, sweep
    from mmats.strategy import load_strategy
    from mmats.data import load
"""

__version__ = "0.1.0"
