"""Hand MMATS results to vectorbt, for users who analyse and plot with it.

vectorbt is optional (the ``dev`` extra); it is imported only when called.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mmats.errors import MMATSError


def to_vectorbt(result, freq: str | None = None):
    """A vectorbt ``Portfolio`` holding exactly the fills of a :class:`BacktestResult`.

    Each fill becomes an order of its signed quantity at its fill price, with its fee as
    a fixed fee, so vectorbt's ``value()`` equals ``result.equity``. vectorbt accepts one
    order per bar and column, so a bar with two fills (an entry at the open and a stop
    in the same bar) puts its second fill in a second column; the columns share cash
    and form one group, and the group's value is the sleeve's value. Results that
    borrowed cash (leverage above 1) cannot be represented and raise ``MMATSError``.
    """
    import vectorbt as vbt

    fills = result.fills
    index = result.equity.index.tz_convert(None)
    offset = len(result.market) - len(result.equity)  # bars before the run's start
    if len(fills) and (fills["cash_after"] < -1e-9 * result.cash).any():
        raise MMATSError(
            "this backtest borrowed cash (leverage above 1); vectorbt's from_orders cannot "
            "represent that"
        )
    bars = fills["bar"] - offset
    slot = np.zeros(len(fills), dtype=np.int64)
    for i in range(1, len(fills)):
        if bars[i] == bars[i - 1]:
            slot[i] = slot[i - 1] + 1
    columns = int(slot.max()) + 1 if len(fills) else 1
    size = np.full((len(index), columns), np.nan)
    price = np.full((len(index), columns), np.nan)
    fixed_fees = np.zeros((len(index), columns))
    size[bars, slot] = fills["side"] * fills["qty"]
    price[bars, slot] = fills["price"]
    fixed_fees[bars, slot] = fills["fee"]
    close = np.repeat(result.market.close[offset:, None], columns, axis=1)
    frame = lambda values: pd.DataFrame(values, index=index)  # noqa: E731
    step = freq or _frequency(result.market.timeframe)
    return vbt.Portfolio.from_orders(
        frame(close),
        size=frame(size),
        size_type="amount",
        price=frame(price),
        fees=0.0,
        fixed_fees=frame(fixed_fees),
        direction="both",
        init_cash=result.cash,
        cash_sharing=True,
        group_by=np.zeros(columns, dtype=np.int64),
        freq=step,
    )


def _frequency(timeframe: str) -> str:
    units = {"s": "s", "m": "min", "h": "h", "d": "D", "w": "W"}
    return f"{timeframe[:-1]}{units[timeframe[-1]]}"
