"""``mmats live --serve``: the always-on runner on stored candles and a rehearsal clock.

The service runs as a real process with a real systemd notify socket, its /health is
read over HTTP, a kill arrives from the command line while it serves, and SIGTERM stops
it; in-process, its journal equals one ``--once`` tick's over the same bars."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml

import mmats
from mmats.live.config import load_config
from mmats.live.control import tick_once
from mmats.live.journal import Journal
from mmats.live.service import RehearsalClock, Service
from mmats.live.wiring import runner_lock

SAMPLE = Path(mmats.__file__).parent / "data" / "sample"
START = "2018-01-12T00:00:00"
STEP_NS = 300_000_000_000


def _config(folder: Path, **extra) -> Path:
    document = {
        "mode": "paper", "environment": "dev",
        "markets": {"crypto": {"type": "crypto", "feed": "bittrex", "execution": "paper",
                               "symbols": ["ETH/BTC"], "timeframe": "5m"}},
        "models": [{"id": "ema", "strategy": "ema_cross", "market": "crypto",
                    "params": {"fast": 5, "slow": 20}, "costs": {"fee_bps": 10}}],
        "notifications": ["console"],
        "journal": str(folder / "journal" / "serve.sqlite"),
        "data_root": str(SAMPLE),
        **extra,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class _NotifySocket:
    """systemd's side of sd_notify: a Unix datagram socket that keeps what it hears."""

    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="sd-", dir="/tmp")  # short: AF_UNIX paths
        self.path = os.path.join(self.folder, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.heard: list[str] = []
        self.times: list[float] = []
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._running = True
        self._thread.start()

    def _listen(self):
        while self._running:
            try:
                message = self.sock.recv(4096).decode()
                self.times.append(time.time())
                self.heard.append(message)
            except (TimeoutError, OSError):
                continue

    def count(self, line: str) -> int:
        return sum(1 for message in self.heard if line in message.split("\n"))

    def close(self):
        self._running = False
        self._thread.join(2)
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.folder)


def _mmats(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "mmats.cli.main", *args],
                          capture_output=True, text=True, timeout=120, **kwargs)


@pytest.mark.slow
def test_serve_under_a_systemd_watchdog_kill_and_sigterm(tmp_path):
    config = _config(tmp_path)
    notify = _NotifySocket()
    env = {**os.environ, "NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "2000000",
           "PYTHONUNBUFFERED": "1"}
    env.pop("WATCHDOG_PID", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "mmats.cli.main", "live", "--config", str(config), "--serve",
         "--clock", f"{START}@600", "--health-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        first = process.stdout.readline()
        assert "/health on http://127.0.0.1:" in first, first
        port = int(first.rsplit(":", 1)[1].split("/")[0])
        _wait(lambda: notify.count("READY=1"), 120, "READY=1")
        # a tick at every 5m close of the rehearsal clock (one each half second)
        code, health = _wait(lambda: (lambda h: h if h[1].get("ticks", 0) >= 4 else None)(
            _health(port)), 60, "four ticks")
        assert code == 200 and health["status"] == "ok", health
        assert health["environment"] == "dev" and health["mode"] == "paper"
        assert health["trading"] == {"ema:ETH/BTC": "ACTIVE"}
        crypto = health["markets"]["crypto"]
        assert crypto["stream"] is None and crypto["feed"] == "bittrex"
        assert pd.Timestamp(crypto["last_bar"]) >= pd.Timestamp(START, tz="UTC")
        assert crypto["bars_behind"] < 3
        assert health["journal"]["head_seq"] > 0
        assert health["systemd"] == {"notify": True, "watchdog_s": 2.0}
        pings = notify.count("WATCHDOG=1")
        _wait(lambda: notify.count("WATCHDOG=1") >= pings + 2, 10, "watchdog pings")

        killed = _mmats("live", "--config", str(config), "kill", "--reason", "serve test")
        assert killed.returncode == 0, killed.stdout + killed.stderr
        code, health = _wait(lambda: (lambda h: h if h[1]["trading"].get("ema:ETH/BTC")
                                      == "HALTED" else None)(_health(port)), 10,
                             "the kill booked by the service")
        assert code == 200 and health["status"] == "degraded" and health["kill_switch"]

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        output = process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        notify.close()
    assert notify.count("STOPPING=1") == 1, notify.heard
    assert "Traceback" not in output, output
    loaded = load_config(config)
    with runner_lock(loaded.lock):  # released: the next runner can take it at once
        pass
    with Journal(loaded.journal) as journal:
        assert journal.verify().ok
        kinds = {row["kind"] for row in journal.rows("risk_events")}
    assert "kill" in " ".join(kinds), kinds


def test_serve_journals_what_one_cron_tick_journals(tmp_path):
    """Ticks at every close through the service, or one tick over the same bars: the same
    fills and the same final state (the service runs the cron tick, nothing else)."""
    served = load_config(_config(tmp_path / "served"))
    once = load_config(_config(tmp_path / "once"))
    service = Service(served, health_port=None, say=lambda _: None,
                      clock=RehearsalClock(pd.Timestamp(START, tz="UTC").value, 3000))
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        _wait(lambda: service.ticks >= 12, 120, "a dozen ticks")
    finally:
        service.stop()
        thread.join(60)
    assert not thread.is_alive()
    assert service.failed_ticks == 0, service.tick_log
    with Journal(served.journal) as journal:
        last_bar = int(journal.load_state("ema:ETH/BTC")[0]["last_bar_ts_ns"])
        served_fills = journal.fills_frame()
        served_state = journal.load_state("ema:ETH/BTC")
    tick_once(once, now_ns=last_bar + STEP_NS)
    with Journal(once.journal) as journal:
        once_fills = journal.fills_frame()
        once_state = journal.load_state("ema:ETH/BTC")
    assert len(served_fills) > 0
    columns = ["model_id", "symbol", "side", "qty", "price", "fee"]
    pd.testing.assert_frame_equal(served_fills[columns].reset_index(drop=True),
                                  once_fills[columns].reset_index(drop=True))
    for name in ("equity", "cash", "position", "last_bar_ts_ns", "n_trades"):
        assert served_state[0][name] == once_state[0][name], name


def test_a_kill_request_is_booked_at_once_not_at_the_next_bar(tmp_path):
    """The clock runs at real speed (the next 5m close is minutes away); a kill request
    written by any control is booked by a tick within a second or two."""
    from mmats.live import kill as killswitch

    config = load_config(_config(tmp_path))
    start = pd.Timestamp(START, tz="UTC").value + 60_000_000_000  # a minute into a bar
    service = Service(config, health_port=None, say=lambda _: None,
                      clock=RehearsalClock(start, 1.0))
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        _wait(lambda: service.ticks >= 1, 120, "the first tick")
        assert service.health()["trading"] == {"ema:ETH/BTC": "ACTIVE"}
        asked = time.monotonic()
        killswitch.write_request(config.journal, killswitch.new_request("test", "drill"))
        _wait(lambda: service.ticks >= 2, 10, "the kill's tick")
        booked_after_s = time.monotonic() - asked
    finally:
        service.stop()
        thread.join(60)
    assert service.tick_log[-1]["reason"] == "kill" and service.tick_log[-1]["ok"]
    assert booked_after_s < 5
    assert service.health()["trading"] == {"ema:ETH/BTC": "HALTED"}
    with Journal(config.journal) as journal:
        assert journal.last_risk_event(killswitch.BOOKED_KIND) is not None


def test_a_long_catch_up_tick_keeps_the_watchdog_fed(tmp_path):
    """The first tick catches up on two weeks of 5m bars (several seconds); the watchdog
    hears from every close, so systemd does not take a busy tick for a hung one."""
    from mmats.live.systemd import Notifier

    config = load_config(_config(tmp_path))
    notify = _NotifySocket()
    service = Service(config, health_port=None, say=lambda _: None,
                      notifier=Notifier(notify.path, watchdog_usec="500000"),
                      clock=RehearsalClock(pd.Timestamp("2018-01-26", tz="UTC").value, 1.0))
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        _wait(lambda: service.ticks >= 1, 300, "the catch-up tick")
    finally:
        service.stop()
        thread.join(60)
        notify.close()
    first = service.tick_log[0]
    assert first["ok"] and first["bars"] > 3000 and first["duration_s"] > 1.0
    during = [t for t, message in zip(notify.times, notify.heard, strict=True)
              if message == "WATCHDOG=1" and first["started"] < t < first["finished"]]
    assert len(during) >= first["duration_s"] - 1.5, (len(during), first["duration_s"])


def test_serve_usage_errors_are_clear(tmp_path):
    config = _config(tmp_path)
    both = _mmats("live", "--config", str(config), "--serve", "--once")
    assert both.returncode == 2 and "--serve runs until stopped" in both.stderr
    clock = _mmats("live", "--config", str(config), "--serve", "--clock", "2018-01-12@fast")
    assert clock.returncode == 2 and "SPEED must be a number" in clock.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = _mmats("live", "--config", str(config), "--serve", "--health-port", str(port))
    assert taken.returncode == 2 and f"--health-port {port}" in taken.stderr
    remote = _mmats("live", "--config", str(config), "--serve", "--health-host", "0.0.0.0")
    assert remote.returncode == 2 and "loopback only" in remote.stderr
    for result in (both, clock, taken, remote):
        assert "Traceback" not in result.stderr


def test_a_close_missing_a_symbol_waits_gather_s_not_a_whole_turn(tmp_path):
    """A streamed close still missing one symbol's bar is ticked ``gather_s`` after its
    first bar arrived: the loop sleeps only until then, not a whole second."""
    config = load_config(_config(tmp_path))
    service = Service(config, health_port=None, say=lambda _: None, gather_s=0.5,
                      clock=RehearsalClock(pd.Timestamp(START, tz="UTC").value, 1.0))
    key = (config.markets[0].name, pd.Timestamp(START, tz="UTC").value)
    service._pending.symbols[key] = set()  # heard of the close, no symbol's bar yet
    service._pending.first_seen[key] = time.monotonic() - 0.2
    reason, wait_s = service._due()
    assert reason is None and 0.0 < wait_s <= 0.3
    service._pending.first_seen[key] = time.monotonic() - 0.6
    assert service._due()[0] == f"stream {config.markets[0].name}"


def test_health_says_starting_until_the_first_tick_ends(tmp_path):
    """Before the first tick (a catch-up that can take a minute) /health says
    ``starting`` with 503, not ``down``: nothing is wrong yet."""
    from mmats.live.health import code_of

    config = load_config(_config(tmp_path))
    service = Service(config, health_port=None, say=lambda _: None,
                      clock=RehearsalClock(pd.Timestamp(START, tz="UTC").value, 1.0))
    report = service.health()
    assert report["status"] == "starting" and code_of(report) == 503
    service.last_tick = {"ok": False, "error": "boom"}
    assert service.health()["status"] == "down"
    service.last_tick = {"ok": True}
    assert service.health()["status"] in ("ok", "degraded")


def test_a_counted_tick_is_seen_with_its_outcome(tmp_path):
    """Whoever sees ``ticks`` grow (``/health``, a control waiting on a kill) sees the
    sleeves' states that tick left, even when reading them back is slow."""
    config = load_config(_config(tmp_path))
    start = pd.Timestamp(START, tz="UTC").value + 60_000_000_000
    service = Service(config, health_port=None, say=lambda _: None,
                      clock=RehearsalClock(start, 1.0))
    read = service._read_trading

    def slow_read():
        time.sleep(0.5)
        read()
    service._read_trading = slow_read
    seen = []
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        _wait(lambda: service.ticks >= 1, 120, "the first tick")
        seen.append(service.health())
    finally:
        service.stop()
        thread.join(60)
    assert seen[0]["trading"] == {"ema:ETH/BTC": "ACTIVE"}
    assert seen[0]["status"] in ("ok", "degraded")


def test_ticks_are_never_recorded_into_another_environments_store(tmp_path):
    """A store marked for another environment gets no tick recorder (the first tick would
    refuse the store; a recorder must not write into it before or despite that)."""
    from mmats.live.environments import MARKER

    root = tmp_path / "store"
    root.mkdir()
    (root / MARKER).write_text("test\n")
    config = load_config(_config(tmp_path, data_root=str(root)))  # a dev configuration
    said = []
    service = Service(config, health_port=None, say=said.append,
                      clock=RehearsalClock(pd.Timestamp(START, tz="UTC").value, 1.0))
    assert service._recorder("binance") is None and not service.recorders
    assert "not recorded" in said[-1] and "'test'" in said[-1]
    (root / MARKER).write_text("dev\n")
    assert service._recorder("binance") is not None


def test_a_numba_compile_keeps_the_watchdog_fed_and_nothing_else_does():
    """While numba compiles (a first tick after an upgrade, tens of seconds on a busy
    machine) the compile watch pings; before and after it, it sends nothing, so a tick
    that truly hangs still starves the watchdog."""
    from numba import njit

    from mmats.live.systemd import CompileWatch, Notifier

    notify = _NotifySocket()
    try:
        notifier = Notifier(notify.path, watchdog_usec="40000")  # ping every 20 ms
        with CompileWatch(notifier):
            time.sleep(0.3)
            idle = notify.count("WATCHDOG=1")
            started = time.time()
            namespace = {}
            body = "\n".join(f"    x = x * {k + 1.5} + math.sin(x) / {k + 2}" for k in range(60))
            exec(f"import math\ndef heavy(x):\n{body}\n    return x\n", namespace)
            njit(namespace["heavy"])(1.0)  # a fresh function: compiled, never cached
            finished = time.time()
            time.sleep(0.3)
        during = [t for t, m in zip(notify.times, notify.heard, strict=True)
                  if m == "WATCHDOG=1" and started <= t <= finished + 0.05]
        after = [t for t, m in zip(notify.times, notify.heard, strict=True)
                 if m == "WATCHDOG=1" and t > finished + 0.1]
    finally:
        notify.close()
    assert idle == 0 and after == []
    assert finished - started > 0.1 and len(during) >= 2, (finished - started, len(during))
