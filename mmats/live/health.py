"""``GET /health`` of the always-on runner, on loopback, from the standard library.

The service gives a function that returns its health as a dict with a ``status`` of
``ok``, ``degraded`` (trading goes on with a fault: a stream down and REST polling in its
place, a sleeve halted, the kill switch on) or ``down`` (the loop is hung or its ticks
fail); ``starting`` until the first tick (a catch-up of every bar since the last run)
has ended. ``ok`` and ``degraded`` answer 200, ``starting`` and ``down`` 503: a
container's HEALTHCHECK (with a start period) or a
load balancer needs only the code, a person reads the JSON. Only ``/health`` is served;
anything else is 404, and nothing is ever changed through it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mmats.errors import ConfigError

LOOPBACK = ("127.0.0.1", "::1", "localhost")


class HealthServer:
    """Serves ``report()`` at ``/health`` on ``host:port`` (port 0: any free one) in a
    thread; :attr:`port` is the port bound."""

    def __init__(self, report: Callable[[], dict], host: str = "127.0.0.1",
                 port: int = 8787, *, allow_remote: bool = False) -> None:
        if host not in LOOPBACK and not allow_remote:
            raise ConfigError(f"--health-host {host}: /health listens on loopback only "
                              "(127.0.0.1); reach it through an SSH tunnel or the "
                              "container's own HEALTHCHECK")
        if not 0 <= port <= 65535:
            raise ConfigError(f"--health-port {port}: not a port number (0-65535)")
        self.report = report
        handler = type("Handler", (_Handler,), {"server_report": staticmethod(report)})
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as error:
            raise ConfigError(f"--health-port {port}: cannot listen on {host}:{port} "
                              f"({error.strerror or error}); is another runner serving "
                              "there? pick another with --health-port") from None
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.host = host
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="health", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def code_of(report: dict) -> int:
    return 503 if report.get("status") in ("down", "starting") else 200


class _Handler(BaseHTTPRequestHandler):
    server_report: Callable[[], dict]

    def do_GET(self):  # noqa: N802 - the standard library's name
        if self.path.split("?", 1)[0] != "/health":
            self._send(404, {"error": "not found; the runner serves only /health"})
            return
        try:
            report = self.server_report()
        except Exception as error:  # noqa: BLE001 - a health check must answer
            report = {"status": "down", "error": f"health report failed: {error!r}"}
        self._send(code_of(report), report)

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body, default=str, allow_nan=False).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):  # noqa: A002 - quiet: the journal logs what matters
        pass
