"""Time units in nanoseconds, the unit of every MMATS timestamp (``ts_ns``).

Defined once here, below everything else, so the numba kernel can read them as
compile-time constants and the rest of the package imports the same numbers.
"""

SECOND_NS = 1_000_000_000
MINUTE_NS = 60 * SECOND_NS
HOUR_NS = 60 * MINUTE_NS
DAY_NS = 24 * HOUR_NS
WEEK_NS = 7 * DAY_NS
# 1970-01-01 was a Thursday: the first Monday after the epoch, where weekly buckets start.
EPOCH_MONDAY_NS = 4 * DAY_NS
