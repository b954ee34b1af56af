"""A local HTTP server speaking OANDA's v20 pricing-stream dialect, for the real oandapyV20
client, with the faults a live feed meets.

``GET /v3/accounts/{id}/pricing/stream?instruments=EUR_USD,USD_JPY`` with
``Authorization: Bearer <token>`` answers 200 and a chunked body of JSON lines, one message
per chunk, as OANDA sends them: first the latest price of each instrument (OANDA's
``snapshot``, unless ``snapshot=false``), then every price a test pushes and a
``{"type":"HEARTBEAT","time":...}`` every :attr:`OandaStreamServer.heartbeat_s` seconds.
A price line has the shape of oandapyV20's example responses: ``bids``/``asks`` as lists of
``{"price": "1.10001", "liquidity": 1000000}`` (best first), ``closeoutBid``/``closeoutAsk``,
``status`` and ``tradeable``, ``instrument`` and an RFC 3339 ``time`` with nanoseconds.
Errors are OANDA's JSON ``{"errorMessage": ...}``: 401 for a wrong token, 400 for an
unknown instrument or account.

Test controls, callable from the test's thread: :meth:`push_price`, :meth:`push_raw` (any
text: a malformed line, several lines in one chunk), :attr:`heartbeat_s`, :meth:`drop`
(close every open stream without ending its body), :meth:`finish` (end it properly), :meth:`go_silent` (streams stay open,
nothing is sent: no prices, no heartbeats), :meth:`refuse` (answer the next streams with a
status: 401, 500, 503...), :attr:`connections` (streams answered 200) and
:meth:`wait_for_connections`, :attr:`headers_delay_s` (answer a stream late). Out-of-order lines are prices pushed with an older
``time_ns``.

>>> with OandaStreamServer(heartbeat_s=0.2) as server:          # doctest: +SKIP
...     server.wait_for_connections(1)
...     server.push_price("EUR_USD", "1.10001", "1.10011")
"""

from __future__ import annotations

import json
import queue
import re
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from .oanda_http import now_text

INSTRUMENTS = ("EUR_USD", "USD_JPY", "GBP_USD", "DE30_EUR")
STREAM_PATH = re.compile(r"^/v3/accounts/(?P<account>[^/]+)/pricing/stream$")
MESSAGES = {400: "Invalid value specified", 401: "Insufficient authorization to perform "
            "request.", 403: "Insufficient authorization to perform request.",
            404: "The requested resource does not exist", 429: "Requests per second exceeded",
            500: "Internal server error", 503: "Service unavailable"}
_END = object()  # a stream's queue: stop writing (the socket is cut)
_FINISH = object()  # a stream's queue: end the body properly (the last chunk)
_CHECK_S = 0.05  # how often a waiting stream looks whether its client has gone


class _Stream:
    """One open pricing stream: its socket, its instruments and the lines to send."""

    def __init__(self, sock: socket.socket, instruments: frozenset[str]) -> None:
        self.sock, self.instruments = sock, instruments
        self.lines: queue.Queue = queue.Queue()

    def client_gone(self) -> bool:
        """True once the client closed its end (a silent stream writes nothing that would
        tell)."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            return bool(readable) and self.sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def cut(self) -> None:
        """Close the socket under the writer (no last chunk: a dropped connection)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lines.put(_END)


class OandaStreamServer:
    """The server: start with :meth:`start` (or ``with``); :attr:`url` is what the client's
    ``stream`` environment points at."""

    def __init__(self, *, token: str = "stream-token-0123456789",
                 account_id: str = "101-004-0000001-001", heartbeat_s: float = 5.0,
                 instruments: tuple[str, ...] = INSTRUMENTS) -> None:
        self.token, self.account_id = token, account_id
        self.heartbeat_s = heartbeat_s
        self.instruments = frozenset(instruments)
        self.connections = 0  # streams answered 200
        self.requests: list[dict] = []  # path, params, authorised, status of every request
        self._streams: list[_Stream] = []
        self._latest: dict[str, str] = {}  # instrument -> its last price line (snapshot)
        self._silent = False
        self.headers_delay_s = 0.0  # wait this long before answering a stream (a slow venue)
        self._refusals: list = []  # [status, remaining count or None]
        self._lock = threading.Lock()
        self._connected = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> OandaStreamServer:
        self._stopping.clear()
        self._httpd = _QuietServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.drop()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()
            self._httpd = None

    def __enter__(self) -> OandaStreamServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # -- test controls ------------------------------------------------------------------
    def push_price(self, instrument: str, bid: str | None, ask: str | None, *,
                   time_ns: int | None = None, depth: int = 1, tradeable: bool = True,
                   pip: str = "0.00001") -> dict:
        """Send a price to every open stream of ``instrument`` (and keep it as the
        snapshot for streams opened later). ``depth`` levels per side, each one ``pip``
        worse than the one before; ``bid``/``ask`` None sends an empty side. Returns the
        message sent."""
        message = {"type": "PRICE", "instrument": instrument, "time": now_text(time_ns),
                   "bids": _levels(bid, depth, f"-{pip}"),
                   "asks": _levels(ask, depth, pip),
                   "closeoutBid": bid, "closeoutAsk": ask,
                   "status": "tradeable" if tradeable else "non-tradeable",
                   "tradeable": tradeable}
        line = json.dumps(message)
        with self._lock:
            self._latest[instrument] = line
        self._send(line + "\n", instrument)
        return message

    def push_raw(self, text: str) -> None:
        """Send ``text`` as it is, as one chunk, to every open stream."""
        self._send(text, None)

    def finish(self) -> int:
        """End every open stream's body properly (OANDA closing a stream); returns how many."""
        with self._lock:
            streams, self._streams = self._streams, []
        for stream in streams:
            stream.lines.put(_FINISH)
        return len(streams)

    def go_silent(self, silent: bool = True) -> None:
        """Keep every stream open but send nothing (lines pushed meanwhile are lost)."""
        self._silent = silent

    def drop(self) -> int:
        """Close every open stream abruptly; returns how many were open."""
        with self._lock:
            streams, self._streams = self._streams, []
        for stream in streams:
            stream.cut()
        return len(streams)

    def refuse(self, status: int | None, times: int | None = None) -> None:
        """Answer the next ``times`` stream requests (None: all, until ``refuse(None)``)
        with HTTP ``status`` and OANDA's error body."""
        with self._lock:
            self._refusals = [] if status is None else [status, times]

    def open_streams(self) -> int:
        with self._lock:
            return len(self._streams)

    def wait_for_connections(self, count: int, timeout_s: float = 10.0) -> None:
        """Block until ``count`` streams have been answered (in all), else AssertionError."""
        with self._connected:
            if not self._connected.wait_for(lambda: self.connections >= count, timeout_s):
                raise AssertionError(f"{self.connections} stream connections, not {count}, "
                                     f"after {timeout_s} s")

    # -- the handler's side -------------------------------------------------------------
    def _send(self, text: str, instrument: str | None) -> None:
        if self._silent:
            return
        with self._lock:
            streams = [s for s in self._streams
                       if instrument is None or instrument in s.instruments]
        for stream in streams:
            stream.lines.put(text)

    def _take_refusal(self) -> int | None:
        with self._lock:
            if not self._refusals:
                return None
            status, times = self._refusals
            if times is not None:
                self._refusals = [status, times - 1] if times > 1 else []
            return status

    def _open(self, sock: socket.socket, instruments: frozenset[str],
              snapshot: bool) -> _Stream:
        stream = _Stream(sock, instruments)
        with self._connected:
            if snapshot and not self._silent:
                for name in sorted(instruments):
                    if name in self._latest:
                        stream.lines.put(self._latest[name] + "\n")
            self._streams.append(stream)
            self.connections += 1
            self._connected.notify_all()
        return stream

    def _close(self, stream: _Stream) -> None:
        with self._lock:
            if stream in self._streams:
                self._streams.remove(stream)

    def _heartbeat(self) -> str | None:
        if self._silent:
            return None
        return json.dumps({"type": "HEARTBEAT", "time": now_text()}) + "\n"


def _levels(price: str | None, depth: int, step: str) -> list[dict]:
    if price is None:
        return []
    decimals = len(step.split(".")[-1])
    return [{"price": f"{float(price) + k * float(step):.{decimals}f}",
             "liquidity": 1_000_000 * (k + 1)} for k in range(depth)]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a dropped client is expected here
        pass


class _Handler(BaseHTTPRequestHandler):
    """One request: a refusal, an error, or a stream written until dropped or stopped."""

    protocol_version = "HTTP/1.1"  # chunked transfer encoding
    server_version = "OandaStreamLookalike/1.0"

    def log_message(self, format, *args):  # noqa: A002 - silence the stderr log
        pass

    def do_GET(self):
        owner: OandaStreamServer = self.server.owner
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        authorised = self.headers.get("Authorization") == f"Bearer {owner.token}"
        record = {"path": path, "params": params, "authorised": authorised}
        owner.requests.append(record)
        match = STREAM_PATH.match(path)
        instruments = frozenset(filter(None, params.get("instruments", "").split(",")))
        status, detail = owner._take_refusal(), None
        if status is None:
            if not match:
                status = 404
            elif not authorised:
                status = 401
            elif match["account"] != owner.account_id:
                status, detail = 400, "Invalid value specified for 'accountID'"
            elif not instruments or not instruments <= owner.instruments:
                status, detail = 400, "Invalid value specified for 'instruments'"
        record["status"] = status or 200
        if status is not None:
            self._error(status, detail or MESSAGES.get(status, "Error"))
            return
        self._stream(owner, instruments, params.get("snapshot", "true") != "false")

    def _error(self, status: int, message: str) -> None:
        data = json.dumps({"errorMessage": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, owner: OandaStreamServer, instruments, snapshot: bool) -> None:
        self.close_connection = True
        if owner._stopping.wait(owner.headers_delay_s):
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        stream = owner._open(self.connection, instruments, snapshot)
        beat_at = time.monotonic() + owner.heartbeat_s
        try:
            while not owner._stopping.is_set():
                wait = min(_CHECK_S, max(0.0, beat_at - time.monotonic()))
                try:
                    text = stream.lines.get(timeout=wait)
                except queue.Empty:
                    if stream.client_gone():
                        return
                    if time.monotonic() < beat_at:
                        continue
                    beat_at = time.monotonic() + owner.heartbeat_s
                    text = owner._heartbeat()
                    if text is None:
                        continue
                if text is _END:
                    return
                if text is _FINISH:
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self._chunk(text.encode())
        except OSError:
            return  # the client went away, or a drop cut the socket
        finally:
            owner._close(stream)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
