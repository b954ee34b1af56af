"""The pure numba core: indicators, sizing, fills, risk gates, the bar step and metrics.

Every function here is ``@njit(cache=True)`` over arrays, scalars and the record dtypes
of :mod:`mmats.types`: no pandas, no I/O, no clock. The backtest loops these functions
over bars; the live runner calls the very same ones once per new bar.
"""
