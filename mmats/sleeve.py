"""Settings of one sleeve (a strategy on a symbol): costs, sizing and risk limits.

The same :class:`SleeveConfig` drives the backtest, the sweep and the live runner; it
becomes the numba ``CONFIG_DTYPE`` record the kernel reads.

Example::

    config = SleeveConfig(fee_bps=10, slippage_bps=2, max_drawdown_pct=25)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from mmats.errors import ConfigError
from mmats.types import (
    CONFIG_DTYPE,
    METRICS_DTYPE,
    STATE_DTYPE,
    SizingMode,
    SlippageModel,
)

SIZING_MODES = {"fixed_fraction": SizingMode.FIXED_FRACTION,
                "volatility_target": SizingMode.VOLATILITY_TARGET,
                "kelly": SizingMode.KELLY}
SLIPPAGE_MODELS = {"fixed": SlippageModel.FIXED,
                   "volatility_sqrt": SlippageModel.VOLATILITY_SQRT,
                   "participation": SlippageModel.PARTICIPATION}


@dataclass(frozen=True)
class SleeveConfig:
    """Costs, sizing and per-strategy risk limits of one sleeve.

    Defaults: no costs, exposure 1 = all equity (as vectorbt's ``size=np.inf``),
    fractional quantities, no leverage (cap 1), shorting allowed, no loss limits.
    """

    fee_bps: float = 0.0
    slippage_bps: float = 0.0
    slippage_model: str = "fixed"
    impact_coef: float = 1.0
    max_participation: float = 0.0
    max_order_notional: float = 0.0
    sizing: str = "fixed_fraction"
    fraction: float = 1.0
    vol_target: float = 0.2
    vol_halflife_bars: float = 20.0
    kelly_multiplier: float = 0.5
    kelly_cap: float = 1.0
    kelly_min_trades: int = 20
    lot_size: float = 0.0
    min_notional: float = 0.0
    max_leverage: float = 1.0
    max_daily_loss_pct: float = 0.0
    max_drawdown_pct: float = 0.0
    allow_short: bool = True

    def __post_init__(self):
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in ("slippage_model", "sizing", "allow_short"):
                continue
            if isinstance(value, str | bool):  # "10" or True would compare or size wrongly
                raise ConfigError(f"{item.name} must be a number, got {value!r} "
                                  f"({type(value).__name__}); e.g. {item.name}={item.default!r}")
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{item.name} must be a number, got {value!r}") from None
            if not math.isfinite(number) or number < 0:
                raise ConfigError(f"{item.name} must be a finite number >= 0, got {value!r}")
        if self.slippage_model not in SLIPPAGE_MODELS:
            raise ConfigError(
                f"slippage_model {self.slippage_model!r} is unknown; use one of "
                f"{', '.join(SLIPPAGE_MODELS)}"
            )
        if self.sizing not in SIZING_MODES:
            raise ConfigError(
                f"sizing {self.sizing!r} is unknown; use one of {', '.join(SIZING_MODES)}"
            )
        if self.max_leverage <= 0:
            raise ConfigError("max_leverage must be > 0")
        if self.fee_bps >= 10_000 or self.slippage_bps >= 10_000:
            raise ConfigError("fee_bps and slippage_bps must be below 10000 (100 %)")
        for name in ("max_daily_loss_pct", "max_drawdown_pct"):
            if getattr(self, name) > 100:
                raise ConfigError(f"{name} is a percentage and must be <= 100")

    @classmethod
    def from_mapping(cls, values: dict | None = None, **overrides) -> SleeveConfig:
        """Build from a dict, naming any unknown key."""
        values = {**(values or {}), **overrides}
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown setting {', '.join(map(repr, unknown))}; known settings: "
                f"{', '.join(sorted(known))}"
            )
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_record(self, periods_per_year: float) -> np.ndarray:
        """The 1-element ``CONFIG_DTYPE`` array the numba kernel reads."""
        record = np.zeros(1, dtype=CONFIG_DTYPE)
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "sizing":
                record["sizing_mode"] = int(SIZING_MODES[value])
            elif item.name == "slippage_model":
                record["slippage_model"] = int(SLIPPAGE_MODELS[value])
            else:
                record[item.name] = value
        record["periods_per_year"] = periods_per_year
        record["ewm_decay"] = 0.5 ** (1.0 / max(self.vol_halflife_bars, 1.0))
        return record


def new_state(cash: float) -> np.ndarray:
    """A fresh 1-element ``STATE_DTYPE`` array: a flat sleeve holding ``cash``."""
    from mmats.nb.sim import init_state

    if not (cash > 0 and math.isfinite(cash)):
        raise ConfigError(f"cash must be a positive number, got {cash!r}")
    state = np.zeros(1, dtype=STATE_DTYPE)
    init_state(state[0], float(cash))
    return state


def new_metrics(start_equity: float) -> np.ndarray:
    from mmats.nb.metrics import init_metrics

    metrics = np.zeros(1, dtype=METRICS_DTYPE)
    init_metrics(metrics[0], float(start_equity))
    return metrics
