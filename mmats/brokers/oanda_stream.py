"""OANDA's v20 pricing stream as a :class:`~mmats.brokers.streams.BarStream`.

OANDA streams prices, not candles: ``/v3/accounts/{id}/pricing/stream`` is one chunked HTTP
response of JSON lines, a ``PRICE`` for each quote change of the subscribed instruments and
a ``HEARTBEAT`` every ~5 s. Each price becomes a :class:`~mmats.brokers.streams.StreamTick`
(``price`` = the mid of the best bid and best ask, the quote's own ``time``), each heartbeat
:data:`~mmats.brokers.streams.HEARTBEAT`; the feed watch builds bars with
:class:`~mmats.brokers.streams.BarBuilder` (``bars_from_ticks``). Those bars are mid-price
bars, as :meth:`OandaBroker.fetch_candles <mmats.brokers.oanda_broker.OandaBroker.fetch_candles>`
asks for (``price=M``), UTC-aligned the same way; their volume counts the prices seen here,
which is fewer than OANDA's candle volume (the stream sends at most a few prices a second).

oandapyV20 supplies the environments (``TRADING_ENVIRONMENTS``: the ``stream`` host), the
authorised HTTP session of its ``API`` and the request (``pricing.PricingStream``: path and
parameters). The body is read here, not by ``API.request``, whose generator suits none of
the stream contract (checked with oandapyV20 0.7.2):

- a malformed line ends it (``json.loads`` raises inside the generator, which is then
  finished), where the contract skips the line;
- ``PricingStream.terminate()`` throws into that generator and so cannot be called from
  another thread while it waits for data ("generator already executing");
- a short read timeout cannot serve as "check stop": after a socket timeout the response
  reads no further.

So each connection is read by its own short-lived thread, which queues the lines; :meth:`run`
takes them from the queue in the caller's thread (where ``emit`` is called), looking at
``stop`` and :meth:`close` every 0.1 s. Ending a connection shuts its socket down
(urllib3's ``HTTPResponse.shutdown``), which wakes the reader at once; a connection still
waiting for its answer's headers ends when that request does (within ``timeout_s``),
after :meth:`run` has already returned.

What becomes of each line:

==============================================  ===========================================
``PRICE`` of a subscribed instrument, tradeable  a tick: best bid (highest), best ask
                                                 (lowest), their mid; ``time`` to ns
``PRICE`` not tradeable (market closed), with    no tick (a closed market's quote is no
an empty side, of an instrument not asked for,   trade-able price, and OANDA's candles skip
or repeating the last tick exactly (OANDA's      it); counted in :attr:`skipped` /
snapshot after a reconnect); any other type      :attr:`repeats`; emitted as HEARTBEAT,
                                                 since it proves the socket alive
``HEARTBEAT``                                    HEARTBEAT
not JSON, not an object, no usable time/price    skipped, counted in :attr:`bad_lines`
==============================================  ===========================================

Ticks out of order are passed on as they come (``BarBuilder`` drops the late ones).

How a connection ends:

===========================================  =============================================
``stop`` set                                 :meth:`run` returns
:meth:`close` (another thread)               :class:`StreamClosed` ("closed by the runner")
refused, dropped, ended by the venue, no     :class:`StreamClosed` naming the URL
byte for ``timeout_s``, HTTP 5xx / 429
HTTP 401 / 403                               :class:`~mmats.brokers.base.AuthenticationFailed`
HTTP 400 naming the instruments              :class:`~mmats.errors.ConfigError` naming the
                                             symbols
other HTTP 4xx (account, URL)                :class:`~mmats.brokers.base.BrokerError`
===========================================  =============================================

``timeout_s`` bounds the connect and every wait for data: keep it above OANDA's heartbeat
interval (~5 s) or a quiet market reads as a dead socket. The token never appears in a
message or a repr, and errors are raised without the ``requests`` exception chain.

>>> stream = OandaPricingStream("101-004-1234567-001", token)            # doctest: +SKIP
>>> stream.run(("EUR/USD",), "1m", ticks.append, stop_event)            # doctest: +SKIP
"""

from __future__ import annotations

import calendar
import json
import math
import os
import queue
import re
import threading
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation

import oandapyV20
import oandapyV20.endpoints.pricing as oanda_pricing
import requests
import urllib3.exceptions

from mmats.brokers.base import AuthenticationFailed, BrokerError
from mmats.brokers.oanda_wire import to_instrument
from mmats.brokers.streams import HEARTBEAT, StreamClosed, StreamTick
from mmats.errors import ConfigError

_POLL_S = 0.1  # how often run() looks at stop and close()
_ENDED = object()  # the reader's last item when the venue ended the body properly
_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


class OandaPricingStream:
    """Ticks and heartbeats of some instruments from OANDA's v20 pricing stream.

    Parameters
    ----------
    account_id, token
        The v20 account and its personal access token; default to the ``OANDA_ACCOUNT_ID``
        and ``OANDA_TOKEN`` environment variables.
    practice
        OANDA's practice environment (``stream-fxpractice.oanda.com``), else the live one.
    stream_url
        Stream from this server instead (a proxy, a local test server): it is registered
        as an entry of ``oandapyV20.oandapyV20.TRADING_ENVIRONMENTS``.
    timeout_s
        Connect timeout, and the longest wait for any byte of the stream.

    Counters (they add up over every :meth:`run`): :attr:`ticks` and :attr:`heartbeats`
    (what was emitted), :attr:`bad_lines` (malformed, skipped), :attr:`skipped` (well-formed prices that are
    no tick), :attr:`repeats` (a tick equal to the last one of its symbol).
    """

    venue = "oanda"
    bars_from_ticks = True

    def __init__(self, account_id: str | None = None, token: str | None = None, *,
                 practice: bool = True, stream_url: str | None = None,
                 timeout_s: float = 10.0) -> None:
        account_id = account_id or os.environ.get("OANDA_ACCOUNT_ID")
        token = token or os.environ.get("OANDA_TOKEN")
        if not account_id:
            raise AuthenticationFailed("OANDA pricing stream: no account id; pass account_id "
                                       "or set the OANDA_ACCOUNT_ID environment variable")
        if not token:
            raise AuthenticationFailed(f"OANDA account {account_id}: no API token for the "
                                       "pricing stream; pass token or set the OANDA_TOKEN "
                                       "environment variable")
        try:
            self.timeout_s = float(timeout_s)
        except (TypeError, ValueError):
            self.timeout_s = math.nan
        if not self.timeout_s > 0:
            raise ConfigError(f"OANDA account {account_id}: timeout_s must be > 0, "
                              f"got {timeout_s!r}")
        self.account_id = str(account_id)
        if stream_url:
            url = str(stream_url).rstrip("/")
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"OANDA stream_url must start with http:// or https://, "
                                  f"got {stream_url!r}")
            self.environment = f"mmats-stream:{url}"
            oandapyV20.oandapyV20.TRADING_ENVIRONMENTS[self.environment] = {"stream": url}
        else:
            self.environment = "practice" if practice else "live"
        self.url = oandapyV20.oandapyV20.TRADING_ENVIRONMENTS[self.environment]["stream"]
        self._token = str(token)
        self.ticks = self.heartbeats = self.bad_lines = self.skipped = self.repeats = 0
        self._last: dict[str, tuple[int, float, float]] = {}  # symbol -> last tick emitted
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._connection: _Connection | None = None

    def __repr__(self) -> str:
        return f"OandaPricingStream(account={self.account_id!r}, url={self.url!r})"

    # -- the caller's thread --------------------------------------------------------------
    def run(self, symbols: tuple[str, ...], timeframe: str,
            emit: Callable[[object], None], stop: threading.Event) -> None:
        """Stream prices of ``symbols`` (``"EUR/USD"``) and ``emit`` a
        :class:`~mmats.brokers.streams.StreamTick` for each and
        :data:`~mmats.brokers.streams.HEARTBEAT` for each heartbeat, until ``stop`` is
        set (then return, within 0.1 s) or the connection ends (raise, see the module's
        table). ``timeframe`` is the feed watch's: OANDA's stream has none."""
        wanted = {to_instrument(symbol): str(symbol) for symbol in symbols}
        if not wanted:
            raise ConfigError(f"OANDA account {self.account_id}: no symbols to stream")
        self._closing.clear()
        connection = _Connection(self, wanted)
        with self._lock:
            self._connection = connection
        connection.start()
        try:
            while True:
                if stop.is_set():
                    return
                if self._closing.is_set():
                    raise StreamClosed(f"OANDA pricing stream {self._where()}: closed by the "
                                       "runner (silent, or stopping)")
                try:
                    item = connection.items.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                if isinstance(item, BaseException):
                    raise item from None
                if item is _ENDED:
                    raise StreamClosed(f"OANDA pricing stream {self._where()}: the venue "
                                       "ended the stream")
                self._message(item, wanted, emit)
        finally:
            with self._lock:
                if self._connection is connection:
                    self._connection = None
            connection.abandon()

    def close(self) -> None:
        """Drop the connection now (from any thread): :meth:`run` raises
        :class:`~mmats.brokers.streams.StreamClosed` within 0.1 s."""
        self._closing.set()
        with self._lock:
            connection = self._connection
        if connection is not None:
            connection.abandon()

    def _message(self, line: bytes, wanted: dict[str, str], emit) -> None:
        """One line of the body: a tick, a heartbeat, or nothing (counted)."""
        try:
            message = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            self.bad_lines += 1
            return
        if not isinstance(message, dict):
            self.bad_lines += 1
            return
        kind = message.get("type")
        if kind == "PRICE":
            try:
                tick = self._tick(message, wanted)
            except (KeyError, TypeError, ValueError, AttributeError):
                self.bad_lines += 1
                return
            if tick is not None:
                self.ticks += 1
                emit(tick)
                return
        elif kind != "HEARTBEAT":
            self.skipped += 1
        self.heartbeats += 1
        emit(HEARTBEAT)

    def _tick(self, message: dict, wanted: dict[str, str]) -> StreamTick | None:
        """The tick of a ``PRICE`` line, or None for a price that is no tick (counted)."""
        ts_ns = time_ns(message["time"])
        symbol = wanted.get(message.get("instrument"))
        tradeable = message.get("tradeable", message.get("status", "tradeable") == "tradeable")
        bids = [float(level["price"]) for level in message.get("bids") or ()]
        asks = [float(level["price"]) for level in message.get("asks") or ()]
        if symbol is None or tradeable is not True or not bids or not asks:
            self.skipped += 1
            return None
        bid, ask = max(bids), min(asks)
        if not (math.isfinite(bid) and math.isfinite(ask) and bid > 0 and ask > 0):
            raise ValueError("a price that is not a positive number")
        if self._last.get(symbol) == (ts_ns, bid, ask):
            self.repeats += 1
            return None
        self._last[symbol] = (ts_ns, bid, ask)
        return StreamTick(symbol, ts_ns, (bid + ask) / 2, bid=bid, ask=ask)

    # -- the reader's thread --------------------------------------------------------------
    def _read(self, connection: _Connection) -> None:
        """Open the stream and queue its lines, then how it ended."""
        api = oandapyV20.API(access_token=self._token, environment=self.environment)
        endpoint = oanda_pricing.PricingStream(
            self.account_id, params={"instruments": ",".join(connection.wanted)})
        url = f"{self.url}/{endpoint}"
        opened = False
        try:
            response = api.client.get(url, params=endpoint.params, stream=True,
                                      timeout=(self.timeout_s, self.timeout_s))
            if not connection.hold(response):
                return
            opened = True
            if response.status_code != 200:
                connection.items.put(self._refusal(response, connection.wanted))
                return
            for line in _lines(response):
                if connection.abandoned.is_set():
                    return
                connection.items.put(line)
            connection.items.put(_ENDED)
        except requests.exceptions.RequestException as error:
            if not connection.abandoned.is_set():
                connection.items.put(self._failure(error, opened))
        except Exception as error:  # noqa: BLE001 - run() raises it in the caller's thread
            connection.items.put(StreamClosed(
                f"OANDA pricing stream {self._where()}: {type(error).__name__}: "
                f"{self._short(error)}"))
        finally:
            connection.release()
            api.close()

    def _refusal(self, response, wanted: dict[str, str]) -> BrokerError:
        """The error of an answer other than 200 (see the module's table)."""
        status = response.status_code
        try:
            body = response.json()
            detail = body.get("errorMessage") or json.dumps(body)
        except (ValueError, AttributeError, requests.exceptions.RequestException):
            detail = response.reason or ""
        detail = f"HTTP {status}: {self._short(detail)}"
        where = self._where()
        if status in (401, 403):
            return AuthenticationFailed(
                f"OANDA account {self.account_id}: the pricing stream {where} refused the "
                f"credentials ({detail}); check the token and that it may use this account")
        if status == 429 or status >= 500:
            return StreamClosed(f"OANDA pricing stream {where}: {detail}")
        if status == 400 and "instrument" in detail.lower():
            named = [s for i, s in wanted.items() if i in detail] or list(wanted.values())
            return ConfigError(
                f"OANDA account {self.account_id}: the pricing stream refused the symbols "
                f"{', '.join(named)} ({detail}); check that OANDA lists them for this account")
        if status >= 400:
            return BrokerError(f"OANDA account {self.account_id}: the pricing stream {where} "
                               f"refused the request ({detail}); check the account id and "
                               "the stream URL")
        return StreamClosed(f"OANDA pricing stream {where}: unexpected answer ({detail})")

    def _failure(self, error: requests.exceptions.RequestException,
                 opened: bool) -> StreamClosed:
        """A refused, timed-out or dropped connection, told as the feed watch reads it."""
        where = self._where()
        if isinstance(error, requests.exceptions.ConnectTimeout):
            what = f"could not connect within {self.timeout_s:g} s"
        elif not opened:
            what = (f"no answer within {self.timeout_s:g} s"
                    if isinstance(error, requests.exceptions.ReadTimeout) else
                    "could not open the stream")
        elif _timed_out(error):
            what = f"nothing received for {self.timeout_s:g} s"
        else:
            what = "connection dropped"
        return StreamClosed(f"OANDA pricing stream {where}: {what} "
                            f"({type(error).__name__}: {self._short(error)})")

    def _where(self) -> str:
        return f"at {self.url}/v3/accounts/{self.account_id}/pricing/stream"

    def _short(self, text, limit: int = 300) -> str:
        text = " ".join(str(text).replace(self._token, "***").split())
        return text if len(text) <= limit else text[:limit] + "..."


class _Connection:
    """One HTTP connection to the stream: its reader thread, the queue of what it read,
    and the means to end it from another thread."""

    def __init__(self, stream: OandaPricingStream, wanted: dict[str, str]) -> None:
        self.wanted = wanted
        self.items: queue.Queue = queue.Queue()
        self.abandoned = threading.Event()
        self._response = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=stream._read, args=(self,), daemon=True,
                                        name="oanda-pricing-stream")

    def start(self) -> None:
        self._thread.start()

    def hold(self, response) -> bool:
        """Keep the answer so :meth:`abandon` can end it; False (and closed) if it came
        after the connection was abandoned."""
        with self._lock:
            if not self.abandoned.is_set():
                self._response = response
                return True
        response.close()
        return False

    def release(self) -> None:
        """Close the answer's connection (the reader's last act)."""
        with self._lock:
            response, self._response = self._response, None
        if response is not None:
            response.close()

    def abandon(self) -> None:
        """End the connection: wake a reader waiting for data (shut the socket down)."""
        with self._lock:
            self.abandoned.set()
            response = self._response
        if response is not None:
            try:
                response.raw.shutdown()
            except (AttributeError, ValueError, RuntimeError, OSError):
                response.close()  # released already, or an urllib3 without shutdown()


def _lines(response):
    """The body's lines as they arrive. A chunked body (OANDA's) is read a chunk at a time
    as each comes; any other body a byte at a time, so no line waits for the next."""
    size = None if getattr(response.raw, "chunked", False) else 1
    pending = b""
    for data in response.iter_content(chunk_size=size):
        pending += data
        *lines, pending = pending.split(b"\n")
        yield from (line for line in lines if line.strip())
    if pending.strip():
        yield pending


def time_ns(text: str) -> int:
    """An OANDA time (RFC 3339 to the nanosecond, or UNIX seconds) as epoch nanoseconds.

    >>> time_ns("2026-01-05T10:00:00.123456789Z")
    1767607200123456789
    """
    text = str(text)
    match = _RFC3339.match(text)
    if match is None:
        try:
            return int(Decimal(text) * 1_000_000_000)
        except InvalidOperation:
            raise ValueError(f"not an OANDA time: {text[:40]!r}") from None
    stamp, fraction, zone = match.groups()
    if zone == "Z":
        seconds = calendar.timegm(datetime.fromisoformat(stamp).timetuple())
    else:
        seconds = int(datetime.fromisoformat(stamp + zone).timestamp())
    return seconds * 1_000_000_000 + int((fraction or "").ljust(9, "0"))


def _timed_out(error: BaseException) -> bool:
    """True for a read timeout, however requests wrapped it."""
    if isinstance(error, requests.exceptions.Timeout):
        return True
    return any(isinstance(arg, urllib3.exceptions.ReadTimeoutError) for arg in error.args)
