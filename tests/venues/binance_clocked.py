"""The Binance look-alikes (REST and stream) on one accelerated clock, as a venue lives:
the REST server's clock follows it, a forming kline goes out every second, and each bar
is pushed closed (``k.x``) the moment the clock passes its end. Used by the serve tests
and by benchmarks/soak_runner.py."""

from __future__ import annotations

import threading
import time

from .binance_server import BinanceServer, kline_values
from .binance_ws_server import BinanceWsServer

STEP_MS = 60_000


class ClockedBinance:
    """``clock`` is a :class:`~mmats.live.service.RehearsalClock` (it has ``wall_ns``);
    BTC/USDT 1m klines exist from ``first_open_ms``."""

    def __init__(self, clock, first_open_ms: int, *, update_s: float = 1.0):
        self.clock, self.update_s = clock, update_s
        self.rest = BinanceServer(now_ms=clock() // 1_000_000).start()
        self.rest.add_market("BTC", "USDT", step_size="0.001", tick_size="0.01",
                             min_notional="10", price="100")
        self.rest.add_klines("BTCUSDT", "1m", first_open_ms=first_open_ms)
        self.ws = BinanceWsServer().start()
        self.closes: list[tuple[int, float]] = []  # (close ms, wall time it closed)
        self.withheld: set[int] = set()  # close ms the stream did not send
        self._silent_until = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ClockedBinance:
        self._thread.start()
        return self

    def silence(self, seconds: float) -> None:
        """Nothing on the stream for ``seconds`` (the connection stays open)."""
        self._silent_until = time.time() + seconds
        self.ws.silence()
        timer = threading.Timer(seconds, self.ws.speak)
        timer.daemon = True
        timer.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.ws.stop()
        self.rest.stop()

    def _run(self) -> None:
        next_close = (self.clock() // 1_000_000 // STEP_MS + 1) * STEP_MS
        last_update = 0.0
        while not self._stop.wait(0.005):
            now_ms = self.clock() // 1_000_000
            self.rest.set_now(now_ms)
            open_ms = next_close - STEP_MS
            if now_ms < next_close:
                if time.time() - last_update >= self.update_s:
                    last_update = time.time()
                    fraction = (now_ms - open_ms) / STEP_MS
                    self.ws.push_kline("BTCUSDT", "1m", open_ms,
                                       *kline_values(open_ms, STEP_MS, fraction), closed=False)
                continue
            self.closes.append((next_close, self.clock.wall_ns(next_close * 1_000_000) / 1e9))
            if time.time() >= self._silent_until:
                self.ws.push_kline("BTCUSDT", "1m", open_ms, *kline_values(open_ms, STEP_MS),
                                   closed=True)
            else:
                self.withheld.add(next_close)
            next_close += STEP_MS
