"""The HTTP side of the OANDA look-alike in oanda_server.py: reads a request, applies the
fault the test asked for, checks the bearer token and sends the owner's answer as JSON;
and the time formats of OANDA's wire."""

from __future__ import annotations

import json
import time
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, unquote, urlsplit

import pandas as pd


def now_text(ts_ns: int | None = None) -> str:
    """Epoch nanoseconds (default now) as OANDA writes times: RFC 3339, nanoseconds."""
    ts_ns = time.time_ns() if ts_ns is None else int(ts_ns)
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{nanos:09d}Z"


def parse_time(text: str) -> int:
    """RFC 3339 or UNIX seconds to epoch nanoseconds."""
    try:
        return int(Decimal(text) * 1_000_000_000)
    except InvalidOperation:
        stamp = pd.Timestamp(text)
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        return int(stamp.value)


class OandaHandler(BaseHTTPRequestHandler):
    """One HTTP exchange with the OANDA look-alike: faults first, then authorisation, then
    the owner's route; the owner (``self.server.owner``) keeps all the state."""

    server_version = "OandaLookalike/1.0"

    def log_message(self, format, *args):  # noqa: A002 - silence the stderr log
        pass

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_PATCH(self):
        self._handle("PATCH")

    def _handle(self, method: str) -> None:
        owner = self.server.owner  # the OandaServer
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        owner.log({"method": method, "path": path, "params": params, "body": body})
        taken = owner.take_fault(method, path)
        fault = taken and taken["kind"]
        if fault == "drop":
            self.close_connection = True
            return
        if fault in ("429", "500", "503"):
            messages = {"429": "Requests per second exceeded", "500": "Internal server error",
                        "503": "Service unavailable"}
            headers = {}
            if fault == "429" and taken["retry_after"] is not None:
                headers["Retry-After"] = str(taken["retry_after"])
            self._send(int(fault), {"errorMessage": messages[fault]}, headers)
            return
        if fault == "wrong_status":
            self._send(200, {})
            return
        if path != "/_control" and (
                self.headers.get("Authorization") != f"Bearer {owner.token}"):
            self._send(401, {"errorMessage": "Insufficient authorization to perform request."})
            return
        status, payload = owner.route(method, path, params, body)
        if fault == "lost_response":
            self.close_connection = True
            return
        if fault == "timeout":
            owner._stopping.wait(owner.delay_s)
        if fault == "accepted_200" and status == 201:
            status = 200
        self._send(status, payload)

    def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("RequestID", str(time.time_ns()))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout fault)
