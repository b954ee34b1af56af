"""The order books of the Binance look-alike (binance_server.py): ``GET /api/v3/depth``.

A mixin of :class:`~tests.venues.binance_server.BinanceServer` (whose file is near its
size limit): a test sets a symbol's book with :meth:`DepthBook.set_book`; a symbol with
none has an empty book, as a quiet market has. Binance's answer: ``lastUpdateId`` and
``bids``/``asks`` as ``[price, quantity]`` strings, best first, ``limit`` levels (default
100, at most 5000).

    server.set_book("BTCUSDT", bids=[("19999.5", "0.4"), ...], asks=[("20000.5", "1.2")])
"""

from __future__ import annotations

from decimal import Decimal

MAX_LIMIT = 5000


class DepthBook:
    """Order books set by the tests, served at ``GET /api/v3/depth``."""

    def set_book(self, symbol: str, bids, asks) -> None:
        """``symbol``'s book (venue id, e.g. ``BTCUSDT``): ``(price, quantity)`` pairs of
        each side, in any order."""
        with self.lock:
            books = self.__dict__.setdefault("books", {})
            books[symbol] = (sorted(((Decimal(str(p)), Decimal(str(q))) for p, q in bids),
                                    reverse=True),
                             sorted((Decimal(str(p)), Decimal(str(q))) for p, q in asks))
            self.__dict__["book_updates"] = self.__dict__.get("book_updates", 0) + 1

    def _depth(self, params):
        from .binance_server import ApiError, _s

        market = self._market(params)
        try:
            limit = int(params.get("limit", 100))
        except ValueError:
            raise ApiError(400, -1100, "Illegal characters found in parameter 'limit'; "
                                       "legal range is '^[0-9]{1,20}$'.") from None
        if limit < 1:
            raise ApiError(400, -1102, "Mandatory parameter 'limit' was not sent, was empty/"
                                       "null, or malformed.")
        limit = min(limit, MAX_LIMIT)
        bids, asks = self.__dict__.get("books", {}).get(market.symbol, ([], []))
        return {"lastUpdateId": 1000 + self.__dict__.get("book_updates", 0),
                "bids": [[_s(p), _s(q)] for p, q in bids[:limit]],
                "asks": [[_s(p), _s(q)] for p, q in asks[:limit]]}
