"""Our orders at a venue: their client ids, and the journal's rows as order records.

Below the desk (:mod:`mmats.live.operator`), its protective legs
(:mod:`mmats.live.protect`), the kill switch and the tick, which all name orders the same
way and read them back from the journal the same way.
"""

from __future__ import annotations

import hashlib
from base64 import b32encode

import numpy as np

from mmats.types import ORDER_DTYPE

# every client order id of ours starts with this: an order without it is not ours
CLIENT_ID_PREFIX = "mm"


def client_order_id(sleeve_id: str, decision_ts_ns: int, order_id: int) -> str:
    """Deterministic and short enough for every venue (32 characters of [a-z2-7]):
    the same sleeve, decision time and order sequence always give the same id, so an
    order re-sent after a crash is recognised by the venue instead of doubled.

    >>> client_order_id("ema:ETH/BTC", 0, 1) == client_order_id("ema:ETH/BTC", 0, 1)
    True
    """
    digest = hashlib.sha256(f"{sleeve_id}|{decision_ts_ns}|{order_id}".encode()).digest()
    return CLIENT_ID_PREFIX + b32encode(digest).decode("ascii").lower()[:30]


def order_record(row: dict) -> np.ndarray:
    """A journaled order row (a dict of the ``orders`` table) as an ``ORDER_DTYPE``
    record; the columns the row leaves empty stay zero."""
    order = np.zeros(1, dtype=ORDER_DTYPE)[0]
    for name in ORDER_DTYPE.names:
        if row.get(name) is not None:
            order[name] = row[name]
    return order
