"""MMATS: a research-first, multi-market trading library.

The public surface is small::

    from mmats import backtest, sweep, load_strategy
    from mmats.data import load
"""

__version__ = "0.1.0"

from mmats.errors import MMATSError  # noqa: E402

__all__ = ["MMATSError", "__version__", "backtest", "sweep", "load_strategy"]


def __getattr__(name):
    # Lazy so `import mmats` stays cheap (numba compiles on first use, not on import).
    if name in ("backtest", "sweep"):
        from mmats import backtest as _bt

        return getattr(_bt, name)
    if name == "load_strategy":
        from mmats.strategy import load_strategy

        return load_strategy
    raise AttributeError(f"module 'mmats' has no attribute {name!r}")
