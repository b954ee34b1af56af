"""Sizing: from a target exposure to a quantity, rounded to what the market accepts."""

import math

from numba import njit

from mmats.nb.features import KELLY_ON, LOTS_ON, VOLATILITY_ON
from mmats.types import SizingMode, SlippageModel

FIXED_FRACTION = int(SizingMode.FIXED_FRACTION)
VOLATILITY_TARGET = int(SizingMode.VOLATILITY_TARGET)
KELLY = int(SizingMode.KELLY)
VOLATILITY_SQRT = int(SlippageModel.VOLATILITY_SQRT)


@njit(cache=True, inline="always")
def target_quantity(exposure, equity, position, price, fee_rate):
    """Quantity to hold so that its value is ``exposure`` × the equity left after the fee.

    Buying ``dq`` at ``price`` costs ``dq × price × fee_rate`` in fees, which lowers the
    equity the exposure is measured on. Solving ``q × price = exposure × (equity - fee)``
    gives the closed forms below. From flat with ``exposure = 1`` this is
    ``equity / (price × (1 + fee_rate))``: every unit of cash spent, fee included, as
    vectorbt's ``size=np.inf``.
    """
    if price <= 0.0 or equity <= 0.0:
        return 0.0
    naive = exposure * equity / price
    if naive > position:
        quantity = exposure * (equity + position * price * fee_rate) / (
            price * (1.0 + exposure * fee_rate)
        )
        return max(quantity, position)
    if naive < position:
        quantity = exposure * (equity - position * price * fee_rate) / (
            price * (1.0 - exposure * fee_rate)
        )
        return min(quantity, position)
    return position


@njit(cache=True, inline="always")
def round_to_lot(quantity, lot_size):
    """Round a signed quantity toward zero to a whole number of lots (0 = no rounding)."""
    if not LOTS_ON or lot_size <= 0.0:
        return quantity
    lots = math.floor(abs(quantity) / lot_size + 1e-9)
    return math.copysign(lots * lot_size, quantity)


@njit(cache=True, inline="always")
def kelly_fraction(n_trades, n_wins, gross_profit, gross_loss):
    """Kelly fraction ``W - (1 - W) / R`` from closed trades (R = average win / average loss).

    Returns NaN when there are no trades; a history without losses gives +inf.
    """
    if n_trades == 0:
        return math.nan
    n_losses = n_trades - n_wins
    if n_wins == 0:
        return -math.inf
    if n_losses == 0 or gross_loss <= 0.0:
        return math.inf
    win_rate = n_wins / n_trades
    payoff = (gross_profit / n_wins) / (gross_loss / n_losses)
    return win_rate - (1.0 - win_rate) / payoff


@njit(cache=True, inline="always")
def exposure_scale(state, cfg):
    """The factor a raw signal in [-1, 1] is multiplied by, per the sleeve's sizing mode.

    - fixed fraction: ``cfg.fraction``;
    - volatility target: ``cfg.vol_target`` / annualised EWMA volatility of the bars so
      far (NaN, "no opinion yet", until the closes have moved);
    - Kelly: ``kelly_multiplier`` × the Kelly fraction of the sleeve's closed trades,
      clipped to [0, ``kelly_cap``]; ``cfg.fraction`` until ``kelly_min_trades`` trades.
    """
    mode = cfg.sizing_mode
    if VOLATILITY_ON and mode == VOLATILITY_TARGET:
        variance = bar_variance(state, cfg)
        if not variance > 0.0:
            return math.nan
        return cfg.vol_target / math.sqrt(variance * cfg.periods_per_year)
    if KELLY_ON and mode == KELLY:
        if state.n_trades < cfg.kelly_min_trades:
            return cfg.fraction
        kelly = kelly_fraction(state.n_trades, state.n_wins, state.gross_profit, state.gross_loss)
        return min(max(cfg.kelly_multiplier * kelly, 0.0), cfg.kelly_cap)
    return cfg.fraction


@njit(cache=True, inline="always")
def ewm_decay(cfg):
    """Per-bar decay λ of the volatility and volume EWMAs: ``0.5 ** (1 / half-life)``,
    computed once by :meth:`mmats.sleeve.SleeveConfig.to_record`."""
    return cfg.ewm_decay


@njit(cache=True, inline="always")
def uses_volatility(cfg):
    """Whether any rule of this sleeve reads the volatility / volume EWMAs."""
    return VOLATILITY_ON and (cfg.sizing_mode == VOLATILITY_TARGET
                              or cfg.slippage_model == VOLATILITY_SQRT)


@njit(cache=True, inline="always")
def bar_variance(state, cfg):
    """Bias-corrected EWMA variance of close-to-close log returns (NaN before two closes)."""
    n_returns = state.bars - 1
    if n_returns < 1:
        return math.nan
    weight = 1.0 - ewm_decay(cfg) ** n_returns
    return state.var_ewm / weight


@njit(cache=True, inline="always")
def average_volume(state, cfg):
    """Bias-corrected EWMA of bar volume (NaN before the first bar)."""
    if state.bars < 1:
        return math.nan
    weight = 1.0 - ewm_decay(cfg) ** state.bars
    return state.volume_ewm / weight
