"""systemd's notify protocol, without a dependency: READY, WATCHDOG, STATUS, STOPPING.

Under a ``Type=notify`` unit systemd passes ``$NOTIFY_SOCKET`` (a Unix datagram socket;
a leading ``@`` names an abstract one) and, with ``WatchdogSec=``, ``$WATCHDOG_USEC`` (and
``$WATCHDOG_PID``). The service sends ``READY=1`` once it serves, ``WATCHDOG=1`` at least
every half watchdog period from its main loop (so a hung loop stops the pings and systemd
restarts the process), and ``STOPPING=1`` on its way out. Outside systemd every call is
a no-op.
"""

from __future__ import annotations

import os
import socket
import threading


class Notifier:
    """The ``sd_notify`` side of one process; ``address`` defaults to ``$NOTIFY_SOCKET``."""

    def __init__(self, address: str | None = None, watchdog_usec: str | None = None,
                 watchdog_pid: str | None = None) -> None:
        address = os.environ.get("NOTIFY_SOCKET") if address is None else address
        self.address = None
        if address:
            self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = os.environ.get("WATCHDOG_USEC") if watchdog_usec is None else watchdog_usec
        pid = os.environ.get("WATCHDOG_PID") if watchdog_pid is None else watchdog_pid
        self.watchdog_s = None
        if usec and (not pid or pid == str(os.getpid())):
            try:
                self.watchdog_s = int(usec) / 1e6
            except ValueError:
                self.watchdog_s = None
        self.sent: list[str] = []  # what was sent, newest last (for /health and tests)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ping_interval_s(self, default: float = 5.0) -> float:
        """How often the main loop must ping: half the watchdog period, else ``default``."""
        return default if self.watchdog_s is None else max(0.05, self.watchdog_s / 2)

    def ready(self, status: str = "") -> bool:
        return self._send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> bool:
        return self.watchdog_s is not None and self._send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self._send(f"STATUS={text}")

    def stopping(self, status: str = "") -> bool:
        return self._send("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))

    def _send(self, message: str) -> bool:
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(message.encode())
        except OSError:
            return False  # systemd gone (or a test's socket closed): nothing to tell
        self.sent.append(message.split("\n", 1)[0])
        del self.sent[:-20]
        return True


class CompileWatch:
    """Ping the watchdog from a thread while numba compiles, and only then.

    The first tick after an install or an upgrade compiles the kernel: on a busy machine
    one compile call runs for tens of seconds without returning to the code that pings,
    and systemd would take it for a hang and restart the process, which compiles again.
    Compiling is progress, so while a compile is under way (numba's ``numba:compile``
    events) this thread pings every half watchdog period; outside a compile it sends
    nothing, so a tick that truly hangs still stops the pings.
    """

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.compiling = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener = None

    def __enter__(self) -> CompileWatch:
        if self.notifier.watchdog_s is None:
            return self
        from numba.core import event

        watch = self

        class _Listener(event.Listener):
            def on_start(self, _event) -> None:
                watch.compiling += 1

            def on_end(self, _event) -> None:
                watch.compiling -= 1

        self._listener = _Listener()
        event.register("numba:compile", self._listener)
        self._thread = threading.Thread(target=self._ping, name="compile-watch", daemon=True)
        self._thread.start()
        return self

    def _ping(self) -> None:
        while not self._stop.wait(self.notifier.ping_interval_s()):
            if self.compiling > 0:
                self.notifier.watchdog()

    def __exit__(self, *_exc) -> None:
        if self._listener is not None:
            from numba.core import event

            event.unregister("numba:compile", self._listener)
            self._stop.set()
            self._thread.join(5)
