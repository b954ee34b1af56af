"""Soak: the always-on runner against the local Binance look-alikes, with faults.

``mmats live --serve`` runs as a real process (restarted a second after it dies, as
systemd's ``Restart=always``/``RestartSec=1`` would) in paper mode on a Binance feed: the
REST look-alike of tests/venues and the WebSocket look-alike that speaks Binance's
stream dialect, both on one accelerated clock that the service shares
(``--clock START@SPEED@ORIGIN``). A venue thread closes a 1m bar every ``60/speed``
seconds: it moves the REST server's clock and pushes the closed kline on the stream. The
faults, spread over the run: dropped sockets, a 5xx burst, 429s, a silent feed (longer
than the heartbeat), and ``kill -9`` of the service.

Reported (and written as JSON with ``--output``):

- **availability**: the share of bar closes acted on within 2 s (the service printed a
  tick whose newest bar is that one, at most 2 s of wall time after the venue closed it);
- **recovery**: after each ``kill -9``, the wall time until the restarted service's first
  tick line (it has recovered its state from the journal, synced the missed bars and
  reconciled: a tick's stages run in that order); target <= 5 s, NF4 allows 30 s;
- **lost bars** (closes never journaled) and **duplicates** (a bar journaled twice, a
  client order id ordered twice): both must be 0.

    python benchmarks/soak_runner.py                 # 3 minutes, the default faults
    python benchmarks/soak_runner.py --minutes 30    # longer
    python benchmarks/soak_runner.py --quick         # ~70 s, CI-sized

Nothing here asserts a figure; the exit code is 1 only if the run itself broke (a lost
bar, a duplicate, or the service never came up).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmats.live.service import RehearsalClock  # noqa: E402
from tests.venues.binance_clocked import STEP_MS, ClockedBinance  # noqa: E402

HEARTBEAT_S = 3.0
RESTART_S = 1.0
ON_TIME_S = 2.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="wall minutes (3)")
    parser.add_argument("--speed", type=float, default=12.0,
                        help="clock speed: a 1m bar every 60/SPEED s (12: every 5 s)")
    parser.add_argument("--quick", action="store_true", help="about 70 s (CI-sized)")
    parser.add_argument("--output", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    minutes = 70 / 60 if args.quick else args.minutes
    figures = soak(minutes * 60, args.speed)
    print(json.dumps(figures, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(figures, indent=2))
    broken = (figures["lost_bars"] or figures["duplicate_bars"]
              or figures["duplicate_orders"] or not figures["closes"])
    return 1 if broken else 0


class Supervisor:
    """The service as systemd would run it: restarted RESTART_S after it dies; every
    stdout line kept with the wall time it arrived."""

    def __init__(self, command: list[str], log: Path):
        self.command, self.log = command, log
        self.lines: list[tuple[float, int, str]] = []  # (wall, run number, line)
        self.kills: list[tuple[float, int]] = []  # (wall, run killed)
        self.runs = 0
        self.process = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, daemon=True)

    def start(self) -> Supervisor:
        self._thread.start()
        return self

    def _supervise(self):
        while not self._stop.is_set():
            with self._lock:
                self.runs += 1
                run = self.runs
                self.process = subprocess.Popen(
                    self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            for line in self.process.stdout:
                self.lines.append((time.time(), run, line.rstrip()))
            self.process.wait()
            if not self._stop.wait(RESTART_S):
                continue

    def kill9(self):
        with self._lock:
            if self.process is not None and self.process.poll() is None:
                self.kills.append((time.time(), self.runs))
                self.process.send_signal(signal.SIGKILL)

    def stop(self):
        self._stop.set()
        with self._lock:
            if self.process is not None and self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
        self._thread.join(60)


def soak(seconds: float, speed: float) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="mmats-soak-"))
    start_ms = (int(time.time() * 1000) // STEP_MS) * STEP_MS  # a bar boundary
    clock = RehearsalClock(start_ms * 1_000_000 + 30_000_000_000, speed)
    venue = ClockedBinance(clock, first_open_ms=start_ms - 300 * STEP_MS).start()
    config = folder / "soak.yaml"
    config.write_text(json.dumps({
        "mode": "paper", "environment": "test",
        "venues": {"binance": {"base_url": venue.rest.url, "stream_url": venue.ws.url,
                               "timeout_s": 2}},
        "markets": {"crypto": {"type": "crypto", "feed": "binance", "execution": "paper",
                               "symbols": ["BTC/USDT"], "timeframe": "1m"}},
        "models": [{"id": "ema", "strategy": "ema_cross", "market": "crypto",
                    "params": {"fast": 3, "slow": 8}, "costs": {"fee_bps": 10}}],
        "heartbeat_s": HEARTBEAT_S, "stale_after_bars": 3,
        "notifications": ["console"],
        "journal": str(folder / "journal" / "soak.sqlite"),
        "data_root": str(folder / "data")}))
    command = [sys.executable, "-m", "mmats.cli.main", "live", "--config", str(config),
               "--serve", "--health-port", "0",
               "--clock", f"{clock.start_ns}@{speed}@{clock.origin_ns}"]
    began = time.time()
    service = Supervisor(command, folder / "service.log").start()
    faults = _faults(seconds)
    done: list[tuple[str, float]] = []
    try:
        while time.time() - began < seconds:
            elapsed = time.time() - began
            for at, name in faults:
                if name not in {n for n, _ in done} and elapsed >= at * seconds:
                    done.append((name, time.time()))
                    _inject(name, venue, service)
            time.sleep(0.05)
        time.sleep(3)  # the last close's tick
    finally:
        service.stop()
        venue.stop()
        (folder / "service.log").write_text("".join(
            f"{wall - began:8.2f} [{run}] {line}\n" for wall, run, line in service.lines))
        print(f"service output: {folder / 'service.log'}", file=sys.stderr)
    return _figures(venue, service, folder / "journal" / "soak.sqlite", began, seconds,
                    speed, done)


def _faults(seconds: float) -> list[tuple[float, str]]:
    return [(0.15, "drop sockets"), (0.25, "5xx burst"), (0.35, "429 burst"),
            (0.45, "silent feed"), (0.62, "kill -9"), (0.85, "kill -9 again")]


def _inject(name: str, venue: ClockedBinance, service: Supervisor) -> None:
    """One fault at a time: REST faults left over from the last one are cleared first;
    a REST fault comes with the stream refused for 4 s, so REST is what the runner
    needs while it lasts."""
    print(f"[{time.strftime('%H:%M:%S')}] fault: {name}", flush=True)
    venue.rest.clear_faults()
    if name == "drop sockets":
        venue.ws.drop()
    elif name == "5xx burst":
        venue.rest.fail("500", times=6)
        venue.ws.refuse(4.0)
        venue.ws.drop()
    elif name == "429 burst":
        venue.rest.fail("429", times=3, retry_after=1)
        venue.ws.refuse(4.0)
        venue.ws.drop()
    elif name == "silent feed":
        venue.silence(HEARTBEAT_S * 2)
    elif name.startswith("kill -9"):
        service.kill9()


def _figures(venue, service, journal, began, seconds, speed, faults) -> dict:
    acted = []  # (wall, newest bar open ns) of each tick line
    firsts = {}  # run -> wall of its first tick line
    for wall, run, line in service.lines:
        if line.startswith("tick (") and "; bars to " in line:
            acted.append((wall, int(line.rsplit("; bars to ", 1)[1])))
        if line.startswith("tick ("):
            firsts.setdefault(run, wall)
    first_tick = min((wall for wall, _ in acted), default=None)
    closes = [(close, wall) for close, wall in venue.closes
              if first_tick is not None and wall > first_tick]
    latencies = []
    for close_ms, wall in closes:
        open_ns = (close_ms - STEP_MS) * 1_000_000
        seen = [w for w, newest in acted if newest >= open_ns and w >= wall - 0.01]
        latencies.append(min(seen) - wall if seen else None)
    on_time = sum(1 for lat in latencies if lat is not None and lat <= ON_TIME_S)
    recoveries = [round(firsts[run + 1] - wall, 2) for wall, run in service.kills
                  if run + 1 in firsts]
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as db:
        bars = db.execute("SELECT bar_ts_ns, COUNT(*) FROM ticks GROUP BY bar_ts_ns").fetchall()
        orders = db.execute("SELECT client_order_id, COUNT(DISTINCT broker_status), COUNT(*) "
                            "FROM orders GROUP BY client_order_id, broker_status "
                            "HAVING COUNT(*) > 1").fetchall()
        kinds = dict(db.execute("SELECT kind, COUNT(*) FROM risk_events GROUP BY kind"))
        n_orders = db.execute("SELECT COUNT(DISTINCT client_order_id) FROM orders").fetchone()
    journaled = {ts for ts, _ in bars}
    lost = [close for close, _ in closes if (close - STEP_MS) * 1_000_000 not in journaled]
    lat = sorted(x for x in latencies if x is not None)
    late = [f"close at {wall - began:.1f} s: "
            + ("never" if latency is None else f"{latency:.2f} s")
            for (_, wall), latency in zip(closes, latencies, strict=True)
            if latency is None or latency > ON_TIME_S]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime(began)),
        "machine": f"{os.cpu_count()} CPUs", "load_1m_after": os.getloadavg()[0],
        "wall_s": round(time.time() - began, 1), "speed": speed,
        "bar_every_s": round(60 / speed, 2), "heartbeat_s": HEARTBEAT_S,
        "faults": [f"{name} at {wall - began:.1f} s" for name, wall in faults],
        "closes": len(closes), "acted_within_2s": on_time,
        "availability_pct": round(100 * on_time / len(closes), 2) if closes else None,
        "latency_s": {"median": _pct(lat, 50), "p95": _pct(lat, 95),
                      "max": lat[-1] if lat else None},
        "late": late, "kills": len(service.kills), "recovery_s": recoveries, "restarts": service.runs - 1,
        "lost_bars": len(lost), "duplicate_bars": sum(1 for _, n in bars if n > 1),
        "duplicate_orders": len(orders), "orders": n_orders[0] if n_orders else 0,
        "journal_events": kinds,
        "tracebacks": sum("Traceback" in line for _, _, line in service.lines),
    }


def _pct(values, q):
    if not values:
        return None
    return round(values[min(len(values) - 1, int(len(values) * q / 100))], 3)


if __name__ == "__main__":
    sys.exit(main())
