"""MMATS: a research-first, multi-market trading library.

The public surface is small::

    from mmats import load, backtest, sweep, run_research, write_research_report

    candles = load("bittrex:ETH/BTC:5m")
    result = backtest("ema_cross", candles, {"fast": 10, "slow": 50}, fee_bps=10)
    result.plot(path="ema_cross.png")
    write_research_report(run_research("ema_cross", candles, fee_bps=10), "reports")

Each name is imported on first use (PEP 562), so ``import mmats`` — which every
``import mmats.<module>`` runs first, the live runner's included — loads neither pandas,
numba nor matplotlib. Everything else lives in its module (``mmats.data``,
``mmats.validate``, ``mmats.reports``, ...).
"""

from __future__ import annotations

# Private aliases: a submodule bound on the package (mmats.types!) would replace a global
# of the same name, since the package's attributes are these globals.
import importlib as _importlib
import sys as _sys
import types as _types

__version__ = "0.1.0"

#: public name -> the module that defines it
_HOMES = {
    "load": "mmats.data.io",
    "data_quality": "mmats.data.quality",
    "load_strategy": "mmats.strategy",
    "check_lookahead": "mmats.lookahead",
    "market": "mmats.backtest",
    "backtest": "mmats.backtest",
    "sweep": "mmats.backtest",
    "walk_forward": "mmats.validate.walkforward",
    "monte_carlo": "mmats.validate.montecarlo",
    "run_research": "mmats.validate.research",
    "write_research_report": "mmats.reports.research_report",
}

__all__ = list(_HOMES)

# No static imports of these, not even under TYPE_CHECKING: import-linter counts them, and
# modules that import ``mmats`` itself (mmats.data.io, for the package's folder) would
# then depend on every layer.


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'mmats' has no attribute {name!r}")
    value = getattr(_importlib.import_module(home), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


class _Package(_types.ModuleType):
    """``mmats.backtest`` names both a module and its function; the package attribute is
    the function. Python binds a submodule onto its package when it is first imported
    (``from mmats.backtest import sweep`` anywhere), which would make a later
    ``from mmats import backtest`` return the module; this keeps the function there.
    ``from mmats.backtest import ...`` still reads the module (from ``sys.modules``); only
    ``import mmats.backtest as name`` gets the function, so write the former."""

    def __setattr__(self, name: str, value) -> None:
        if (isinstance(value, _types.ModuleType) and _HOMES.get(name) == value.__name__
                and value.__name__ == f"{__name__}.{name}"):
            value = getattr(value, name)
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
