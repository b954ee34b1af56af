"""Compile-time switches of the bar step's optional features.

All True here: these are the modules the live runner, ``backtest()`` and ``simulate``
call, where every feature is live and read from the sleeve's configuration at run time.
A sweep runs one configuration over many parameter sets, so :mod:`mmats.fused` compiles a
copy of ``mmats/nb`` in the cache folder with this file rewritten: the switch of each
feature the configuration leaves off set to False. numba reads module globals as
constants, so LLVM removes the dead branches and the state they would touch. The copy is
the same source, specialised, never a second implementation; each switch only ever
guards a branch that the configuration already makes a no-op, so both copies compute the
same numbers (tests/nb/test_specialised.py).

Each line must stay ``NAME = True`` (mmats.fused rewrites it by name).
"""

STOPS_ON = True  # stop-loss / take-profit levels from the strategy's distances
CAPS_ON = True  # volume-participation and per-order notional caps (partial fills)
LOTS_ON = True  # lot-size rounding and the minimum order notional
VOLATILITY_ON = True  # volatility and volume EWMAs: volatility sizing and slippage
PARTICIPATION_SLIPPAGE_ON = True  # impact proportional to the fill bar's volume
KELLY_ON = True  # Kelly sizing from the sleeve's closed trades
DAILY_LOSS_ON = True  # the daily-loss limit and its UTC-day window
DRAWDOWN_LIMIT_ON = True  # the drawdown limit (halt)

NAMES = ("STOPS_ON", "CAPS_ON", "LOTS_ON", "VOLATILITY_ON", "PARTICIPATION_SLIPPAGE_ON",
         "KELLY_ON", "DAILY_LOSS_ON", "DRAWDOWN_LIMIT_ON")
