"""Trading calendars: which hours a market trades, and how many bars a year that makes.

Three calendars cover the bundled markets:

- ``"24/7"``: crypto, every hour of every day;
- ``"forex"``: Sunday ~22:00 UTC to Friday ~22:00 UTC, 24 hours a day, 5 days a week;
- ``"stocks"``: weekday sessions (6.5 hours, 252 days a year), closed on holidays.
"""

from __future__ import annotations

import re

import numpy as np

from mmats.errors import ConfigError
from mmats.units import DAY_NS, HOUR_NS, MINUTE_NS, SECOND_NS, WEEK_NS

CALENDARS = ("24/7", "forex", "stocks")

_NS = {"s": SECOND_NS, "m": MINUTE_NS, "h": HOUR_NS, "d": DAY_NS, "w": WEEK_NS}
_TIMEFRAME_RE = re.compile(r"^(\d+)([smhdw])$")

# Venues whose market class is known; anything else is inferred from the data.
_VENUE_CALENDAR = {
    "binance": "24/7", "binance_futures": "24/7", "binanceus": "24/7", "bittrex": "24/7",
    "coinbase": "24/7", "kraken": "24/7", "bybit": "24/7", "okx": "24/7", "bitstamp": "24/7",
    "oanda": "forex", "fx": "forex", "forex": "forex",
    "nasdaq": "stocks", "nyse": "stocks", "stocks": "stocks", "alpaca": "stocks",
}


def timeframe_ns(timeframe: str) -> int:
    """Length of a timeframe such as ``"5m"``, ``"1h"`` or ``"1d"`` in nanoseconds.

    >>> timeframe_ns("5m")
    300000000000
    """
    match = _TIMEFRAME_RE.match(str(timeframe).strip())
    if not match or int(match.group(1)) == 0:
        raise ConfigError(
            f"timeframe {timeframe!r} is not understood; use a number and a unit of "
            "s, m, h, d or w, e.g. '5m', '1h', '1d'"
        )
    return int(match.group(1)) * _NS[match.group(2)]


def timeframe_name(step_ns: int) -> str:
    """The shortest name of a bar length in nanoseconds (inverse of :func:`timeframe_ns`)."""
    for unit in ("w", "d", "h", "m", "s"):
        if step_ns % _NS[unit] == 0:
            return f"{step_ns // _NS[unit]}{unit}"
    raise ConfigError(f"bar length of {step_ns} ns is not a whole number of seconds")


def infer_timeframe(ts_ns: np.ndarray) -> str:
    """The most common spacing of the timestamps, as a timeframe name."""
    ts_ns = np.asarray(ts_ns, dtype=np.int64)
    if ts_ns.size < 2:
        raise ConfigError("cannot infer a timeframe from fewer than two bars; pass timeframe=")
    steps, counts = np.unique(np.diff(ts_ns), return_counts=True)
    positive = steps > 0
    if not positive.any():
        raise ConfigError("timestamps do not increase; cannot infer a timeframe")
    return timeframe_name(int(steps[positive][np.argmax(counts[positive])]))


def calendar_for_venue(venue: str | None) -> str | None:
    """The calendar of a known venue, or None when the venue is not in the table."""
    if venue is None:
        return None
    return _VENUE_CALENDAR.get(str(venue).lower())


def infer_calendar(ts_ns: np.ndarray, timeframe: str | None = None) -> str:
    """Guess the calendar from the bars themselves.

    Any bar on a Saturday means 24/7. Otherwise intraday bars that cover most of the
    day mean forex, and the rest (daily bars with no weekend, or short sessions) stocks.
    """
    ts_ns = np.asarray(ts_ns, dtype=np.int64)
    if ts_ns.size == 0:
        return "24/7"
    # 1970-01-01 was a Thursday: weekday 0 = Monday.
    weekday = ((ts_ns // DAY_NS) + 3) % 7
    if np.any(weekday == 5):
        return "24/7"
    step = timeframe_ns(timeframe) if timeframe else timeframe_ns(infer_timeframe(ts_ns))
    if step >= DAY_NS:
        return "stocks"
    days = np.unique(ts_ns // DAY_NS).size
    hours_per_day = ts_ns.size * step / 3_600_000_000_000 / max(days, 1)
    return "forex" if hours_per_day > 12 else "stocks"


def check_calendar(calendar: str) -> str:
    if calendar not in CALENDARS:
        raise ConfigError(f"calendar {calendar!r} is unknown; use one of {', '.join(CALENDARS)}")
    return calendar


def periods_per_year(timeframe: str, calendar: str) -> float:
    """Bars in a year of trading: the factor that annualises Sharpe and Sortino.

    >>> periods_per_year("5m", "24/7")
    105120.0
    >>> periods_per_year("1d", "stocks")
    252.0
    >>> periods_per_year("1h", "forex")
    6240.0
    """
    check_calendar(calendar)
    step = timeframe_ns(timeframe)
    if step >= _NS["w"]:
        return 52.0 * _NS["w"] / step
    if calendar == "24/7":
        return 365.0 * DAY_NS / step
    if calendar == "forex":
        # 52 weeks of 5 full trading days.
        return 260.0 * DAY_NS / step
    # Stocks: 252 sessions of 6.5 hours; a bar longer than a session counts as one a day.
    if step >= DAY_NS:
        return 252.0 * DAY_NS / step
    session_ns = 6.5 * HOUR_NS
    return 252.0 * max(session_ns / step, 1.0)


# Trading hours of a weekday (0 = Monday) in ns after midnight UTC, kept on the safe side
# for a silence check: forex closes Friday 21:00 (the summer close; 22:00 in winter) and
# opens Sunday 22:00 (the winter open); US stocks trade 14:30-20:00 UTC in every season.
_FOREX_HOURS = {0: ((0, 24),), 1: ((0, 24),), 2: ((0, 24),), 3: ((0, 24),), 4: ((0, 21),),
                5: (), 6: ((22, 24),)}
_STOCK_SESSION = ((14.5, 20),)
_MAX_DAYS = 62  # beyond two months of silence the answer no longer matters: stale


def trading_ns_between(calendar: str, start_ns: int, end_ns: int, step_ns: int) -> int:
    """How much of ``[start_ns, end_ns)`` the market of ``calendar`` trades, in ns: the
    time in which a bar of ``step_ns`` could have closed. A weekend (forex, stocks) or a
    night (stocks) is not silence. Stocks with daily or longer bars count whole weekdays;
    exchange holidays are not known and count as trading days.

    >>> friday_22h, sunday_23h = 1_700_863_200_000_000_000, 1_701_039_600_000_000_000
    >>> trading_ns_between("forex", friday_22h, sunday_23h, 3_600_000_000_000) // 3_600_000_000_000
    1
    """
    check_calendar(calendar)
    if end_ns <= start_ns:
        return 0
    if calendar == "24/7" or (end_ns - start_ns) > _MAX_DAYS * DAY_NS:
        return end_ns - start_ns
    total = 0
    for day in range(start_ns // DAY_NS, (end_ns - 1) // DAY_NS + 1):
        weekday = (day + 3) % 7  # 1970-01-01 was a Thursday
        if calendar == "forex":
            hours = _FOREX_HOURS[weekday]
        elif weekday >= 5:
            hours = ()
        else:
            hours = ((0, 24),) if step_ns >= DAY_NS else _STOCK_SESSION
        for first, last in hours:
            opens = day * DAY_NS + int(first * HOUR_NS)
            closes = day * DAY_NS + int(last * HOUR_NS)
            total += max(0, min(closes, end_ns) - max(opens, start_ns))
    return total
