"""Operator mode end to end: the runner's ticks against the local Binance and OANDA
look-alikes through the real ccxt and oandapyV20 clients, one tick per bar close, with the
venues' clocks and prices following the bar being ticked.

How the ticks run (a subprocess costs ~4 s: imports, and ccxt's rate limiter waiting
~1.2 s a tick; an in-process tick ~0.15 s):

- Binance (``binance_run``): 130 bar closes. Four of them (the first, which warms up on
  100 bars of history, the second, the 65th and the last) run
  ``scripts/live.py --mode operator --i-understand-live-trading --now NS --once`` as a
  subprocess: adapters built from ``venues:`` by ``mmats.brokers.connect``, keys from
  ``MMATS_PROD_BINANCE_API_KEY``/``_SECRET``. The other 126 run ``control.tick_once`` in
  process with one ``CcxtBroker`` built as connect builds it, rate limiter off. Positions
  are read back with ``scripts/live.py ... status``.
- OANDA (``oanda_run``): 120 ticks through ``control.tick_once`` with the adapters built
  from the configuration (no rate limiter to skip), three of them through
  ``scripts/live.py``.
- kill -9, for each venue: a child process runs ``control.tick_once`` bar after bar (for
  Binance the same in-process adapter, for OANDA the adapters built from the
  configuration), setting the venue's clock and price through its ``/_control`` route; it
  is killed 24 times and restarted, each restart re-running the close of the last bar the
  journal holds, as cron would. See ``_kill_and_finish`` for where the kills land.
- Feed failover: eight in-process ticks, the primary feed's klines failing for two.

Binance charges its commission in the asset received, as the real venue does without
BNB: a buy of q ETH credits q x (1 - 0.1 %) ETH. The adapter reports that part of the fee
as ``fee_base``; the journal books the fill's q, the fee (converted to BTC) for the trade
statistics, and takes the withheld ETH from the position instead of the cash, so the
journal's cash and position equal the venue's balances after every fill.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mmats.brokers.ccxt_broker import CcxtBroker
from mmats.brokers.oanda_broker import OandaBroker
from mmats.data import load
from mmats.live import control
from mmats.live.config import load_config
from mmats.live.journal import Journal

from .binance_server import BinanceServer
from .oanda_server import OandaServer

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "live.py"
# Distinctive, so a leak anywhere is found by a plain byte search.
KEY = "E2EkeyQ7vM2xL9pR4tW8nB3cZ6hJ1d"
SECRET = "E2EsecretK5sD8fG1hJ4kL7zX0cV3b"
TOKEN = "E2EtokenP9oI8uY7tR6eW5qA4sD3fG2"
ACCOUNT = "101-004-7654321-001"

FIVE_MINUTES_NS = 300_000_000_000
HOUR_NS = 3_600_000_000_000
CASH_BTC = 1.0
TICK = Decimal("0.00001")  # ETHBTC price step; with the 0.001 lot, q x p has 8 decimals
START, BARS = 100, 130  # ticks at the closes of bars START .. START + BARS - 1
SCRIPT_TICKS = (0, 1, 64, BARS - 1)
SLEEVE = "ema:ETH/BTC"
CASH_USD, HALF_SPREAD, OANDA_BARS = 100_000.0, 0.00005, 120
OANDA_SLEEVE = "rsi:EUR/USD"
OANDA_ENV = {"MMATS_PROD_OANDA_TOKEN": TOKEN, "MMATS_PROD_OANDA_ACCOUNT_ID": ACCOUNT}
KILL_DELAY_S = 0.5  # how late the venues answer orders and look-ups in the kill tests


def _venue_price(close: float) -> Decimal:
    """Where the venue fills at a bar's close: the close on the venue's price step."""
    return Decimal(repr(float(close))).quantize(TICK)


def _binance(candles) -> BinanceServer:
    server = BinanceServer(api_key=KEY, secret=SECRET, commission_rate="0.001").start()
    server.add_market("ETH", "BTC", step_size="0.001", tick_size=str(TICK),
                      min_notional="0.001", max_qty="100000", price="0.1")
    server.set_balance("BTC", str(CASH_BTC))
    server.load_klines("ETHBTC", "5m", candles)
    return server


def _fast_ccxt(url: str) -> CcxtBroker:
    """The adapter connect() builds, without ccxt's rate limiter (~1.2 s a tick) and with
    short back-offs: for the in-process ticks."""
    return CcxtBroker("binance", api_key=KEY, secret=SECRET, base_url=url, timeout_s=2,
                      symbols=["ETH/BTC"], rate_limit=False, retries=1, backoff_s=0.01)


def _config(folder: Path, venues: dict, market: dict, model: dict) -> Path:
    """A prod operator configuration in ``folder`` (journal, lock, store, notes beside it)."""
    path = folder / "live.yaml"
    path.write_text(yaml.safe_dump({
        "mode": "operator", "environment": "prod", "venues": venues,
        "markets": {market.pop("name"): market}, "models": [model],
        "journal": str(folder / "journal.sqlite"),
        "data_root": str(folder / "data"), "notifications": [f"file://{folder / 'notes.log'}"],
    }))
    return path


def _binance_config(folder: Path, url: str) -> Path:
    return _config(
        folder, {"binance": {"exchange": "binance", "base_url": url, "timeout_s": 2}},
        {"name": "crypto", "type": "crypto", "feed": "binance", "execution": "binance",
         "symbols": ["ETH/BTC"], "timeframe": "5m"},
        {"id": "ema", "strategy": "ema_cross", "market": "crypto",
         "params": {"fast": 5, "slow": 20}, "costs": {"fee_bps": 10},
         "risk": {"allow_short": False}})


def _oanda(candles) -> OandaServer:
    server = OandaServer(token=TOKEN, account_id=ACCOUNT, balance=CASH_USD,
                         half_spread=HALF_SPREAD).start()
    server.load_candles("EUR_USD", "H1", candles)
    return server


def _oanda_config(folder: Path, url: str) -> Path:
    return _config(
        folder, {"oanda": {"exchange": "oanda", "base_url": url, "timeout_s": 2}},
        {"name": "forex", "type": "forex", "feed": "oanda", "execution": "oanda",
         "symbols": ["EUR/USD"], "timeframe": "1h"},
        {"id": "rsi", "strategy": "rsi_reversion", "market": "forex",
         "params": {"period": 7, "lower": 35, "upper": 65, "short": 1},
         "costs": {"slippage_bps": 0.5}})


def _script(config: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--config", str(config), "--mode",
                           "operator", "--i-understand-live-trading", *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, **env})


def _events(rows: list[dict], kind: str) -> list[dict]:
    return [{**row, "data": json.loads(row["data"])} for row in rows if row["kind"] == kind]


def _same(a: float, b: float) -> bool:
    """The reconciliation's own equality: within 1e-12 of the larger (float noise)."""
    return abs(a - b) <= 1e-12 * max(abs(a), abs(b))


@dataclass
class VenueRun:
    folder: Path
    config: Path
    server: BinanceServer | OandaServer
    closes: list[int]
    outputs: list[str] = field(default_factory=list)  # stdout and stderr of the scripts
    status: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def binance_run(tmp_path_factory):
    candles = load("bittrex:ETH/BTC:5m")
    folder = tmp_path_factory.mktemp("binance")
    server = _binance(candles)
    config_path = _binance_config(folder, server.url)
    config = load_config(config_path)
    env = {"MMATS_PROD_BINANCE_API_KEY": KEY, "MMATS_PROD_BINANCE_SECRET": SECRET}
    broker = _fast_ccxt(server.url)
    run = VenueRun(folder, config_path, server, [])
    for position in range(BARS):
        index = START + position
        close = candles["ts"].iloc[index].value + FIVE_MINUTES_NS
        server.set_now(close // 1_000_000)  # the forming bar is the next one
        server.set_price("ETHBTC", _venue_price(candles["close"].iloc[index]))
        run.closes.append(close)
        if position in SCRIPT_TICKS:
            done = _script(config_path, "--now", str(close), "--cash", str(CASH_BTC),
                           "--once", env=env)
            run.outputs += [done.stdout, done.stderr]
            assert done.returncode == 0, done.stdout + done.stderr
            assert "new bar(s)" in done.stdout
        else:
            report = control.tick_once(config, cash=CASH_BTC, now_ns=close, mode="operator",
                                       brokers={"crypto": broker},
                                       sources={"binance": broker})
            assert report.bars == 1 and report.alerts == [], report
    orders_before = len(server.orders)
    # A cron re-run of the last close: nothing new to send; reconciliation adopts the
    # commission of an order the last tick sent.
    rerun = control.tick_once(config, cash=CASH_BTC, now_ns=run.closes[-1], mode="operator",
                              brokers={"crypto": broker}, sources={"binance": broker})
    assert (rerun.bars, rerun.orders, len(server.orders)) == (0, 0, orders_before)
    done = _script(config_path, "status", env=env)
    run.outputs += [done.stdout, done.stderr]
    assert done.returncode == 0, done.stderr
    run.status = json.loads(done.stdout)
    yield run
    server.stop()


def _eth_commission(order) -> Decimal:
    return sum((f["commission"] for f in order.fills if f["commission_asset"] == "ETH"),
               Decimal(0))


def _eth_after(orders) -> Decimal:
    """The venue's ETH balance after ``orders`` (it started with none)."""
    return sum((o.executed_qty - _eth_commission(o) if o.side == "BUY" else -o.executed_qty
                for o in orders), Decimal(0))


def test_binance_journal_order_log_and_positions_agree(binance_run):
    server = binance_run.server
    with Journal(load_config(binance_run.config).journal) as journal:
        assert journal.verify().ok
        orders, fills = journal.rows("orders"), journal.rows("fills")
        events = journal.rows("risk_events")
        state = journal.load_state(SLEEVE)[0]
    accepted = server.orders
    assert len(accepted) >= 6  # the EMAs crossed several times: buys and sells
    assert {o.side for o in accepted} == {"BUY", "SELL"}
    # never a second attempt at an order: every POST was accepted, once per client id
    cids = [o.client_order_id for o in accepted]
    assert len(set(cids)) == len(cids) == server.count("POST", "/api/v3/order")
    assert cids == [row["client_order_id"] for row in orders
                    if row["broker_status"] == "SENDING"]
    assert [row["broker_status"] for row in orders] == ["SENDING", "filled"] * len(cids)
    assert [row["client_order_id"] for row in fills] == cids
    for order, fill in zip(accepted, fills, strict=True):
        (venue_fill,) = order.fills
        assert order.status == "FILLED" and order.type == "MARKET"
        assert fill["side"] == (1 if order.side == "BUY" else -1)
        assert fill["qty"] == float(order.executed_qty)
        assert fill["price"] == float(venue_fill["price"])
        fee_btc = float(f"{venue_fill['commission']:.8f}") * (
            float(venue_fill["price"]) if venue_fill["commission_asset"] == "ETH" else 1.0)
        assert fill["fee"] == pytest.approx(fee_btc, rel=1e-9)
    # every close filled at that bar's close (on the venue's price step)
    closes = {close // 1_000_000: close for close in binance_run.closes}
    candles = load("bittrex:ETH/BTC:5m").set_index("ts")["close"]
    for order in accepted:
        bar_open = pd.Timestamp(closes[order.time_ms] - FIVE_MINUTES_NS, tz="UTC")
        assert order.fills[0]["price"] == _venue_price(candles.loc[bar_open])

    # The commission taken in ETH is withheld from the position, not paid in cash: after
    # every fill the journal holds exactly the venue's ETH, so nothing needs adopting.
    assert not _events(events, "reconcile_adopted")
    for index, fill in enumerate(fills):  # float noise judged against the traded size
        venue_eth = float(_eth_after(accepted[:index + 1]))
        assert abs(fill["position_after"] - venue_eth) <= 1e-12 * fill["qty"]
    kinds = {row["kind"] for row in events}
    assert not kinds & {"reconcile_mismatch", "order_rejected", "balance_short",
                        "outcome_unknown", "stray_order_cancelled", "stale_data"}

    # positions: the venue's ETH, the journal's sleeve and `live.py status` agree
    free, locked = server.balance("ETH")
    assert locked == 0 and free == _eth_after(accepted)
    assert _same(float(state["position"]), float(free))
    assert binance_run.status[SLEEVE]["position"] == float(state["position"])
    assert binance_run.status[SLEEVE]["trading_state"] == "ACTIVE"
    assert server.balance("BTC")[1] == 0


def test_binance_journal_cash_and_equity_match_the_venue(binance_run):
    server = binance_run.server
    with Journal(load_config(binance_run.config).journal) as journal:
        state = journal.load_state(SLEEVE)[0]
    btc = server.balance("BTC")[0]
    eth = server.balance("ETH")[0]
    price = float(state["last_close"])
    assert float(state["cash"]) == pytest.approx(float(btc), abs=1e-8)
    assert float(state["equity"]) == pytest.approx(float(btc) + float(eth) * price, abs=1e-8)


def test_binance_run_leaves_no_key_or_secret_in_any_file(binance_run):
    written = [path for path in binance_run.folder.rglob("*") if path.is_file()]
    names = {path.name for path in written}
    assert {"journal.sqlite", "notes.log", "live.yaml"} <= names
    assert any(path.suffix == ".parquet" for path in written)  # the synced candle store
    assert (binance_run.folder / "notes.log").stat().st_size > 0
    for path in written:
        data = path.read_bytes()
        for planted in (KEY, SECRET):
            assert planted.encode() not in data, f"{planted[:6]}... found in {path}"
    assert any(binance_run.outputs)
    for text in binance_run.outputs:
        assert KEY not in text and SECRET not in text


CRASH_CHILD = textwrap.dedent("""
    import json
    import sys
    import urllib.request
    from decimal import Decimal

    from mmats.data import load
    from mmats.live import control
    from mmats.live.config import load_config
    from mmats.live.journal import Journal

    run = json.loads(sys.argv[1])
    config = load_config(run["config"])
    candles = load(run["dataset"])
    adapters = {}  # OANDA: built from the configuration's venues, keys from the environment
    if run["venue"] == "binance":  # the in-process adapter, without the rate limiter
        from mmats.brokers.ccxt_broker import CcxtBroker
        from mmats.brokers.connect import credentials

        keys = credentials("binance", "prod")
        broker = CcxtBroker("binance", api_key=keys["api_key"], secret=keys["secret"],
                            base_url=run["url"], timeout_s=2, symbols=["ETH/BTC"],
                            rate_limit=False, retries=1, backoff_s=0.01)
        adapters = {"brokers": {"crypto": broker}, "sources": {"binance": broker}}
    first = run["start"]
    with Journal(config.journal) as journal:  # go on from the last close journaled
        state = journal.load_state(run["sleeve"])
    if state is not None:  # (a first tick killed midway left an earlier bar)
        last = int(state[0]["last_bar_ts_ns"])
        first = max(first, int((candles["ts"].astype("int64") == last).to_numpy().argmax()))
    print("ready", first, flush=True)
    for index in range(first, run["stop"]):
        close = candles["ts"].iloc[index].value + run["step_ns"]
        price = Decimal(repr(float(candles["close"].iloc[index])))
        if run["tick"]:  # on the venue's price step
            price = price.quantize(Decimal(run["tick"]))
        query = run["control"].format(now_ms=close // 1_000_000, now_ns=close, price=price)
        request = urllib.request.Request(f"{run['url']}/_control?{query}", method="POST")
        urllib.request.urlopen(request, timeout=5).read()
        control.tick_once(config, cash=run["cash"], now_ns=close, mode="operator",
                          **adapters)
    print("done", flush=True)
""")


def _crash_command(config: Path, **run) -> list[str]:
    """The crash child's command line: ticks from bar START to ``run["stop"]``."""
    return [sys.executable, "-c", CRASH_CHILD,
            json.dumps({"config": str(config), "start": START, **run})]


def _chain_rows(path: Path) -> int:
    """Rows in the journal, read through a separate connection (WAL lets it read)."""
    if not path.exists():
        return 0
    connection = sqlite3.connect(path, timeout=30)
    try:
        return connection.execute("SELECT count(*) FROM chain").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
    finally:
        connection.close()


def _kill_and_finish(command: list[str], env: dict, journal_path: Path, *, posts, lookups,
                     orders, clean_orders: int, lives: int = 24) -> list[str]:
    """Start the crash child ``lives`` times, SIGKILL it at a random moment each time, then
    let it run to the end; return where each kill was aimed.

    The venue answers orders and order look-ups ``KILL_DELAY_S`` after acting on them
    (``posts``, ``lookups`` and ``orders`` count its order POSTs, look-ups and accepted
    orders), and the kills cycle through three kinds of random moment: while an order's
    answer is on its way (the venue has it, the journal says SENDING), while the restart
    looks that order up, and twice anywhere while ticks are under way."""
    rng = random.Random(7)
    killed, kinds = 0, []
    for life in range(lives):
        kind = ("in_flight", "recovering", "anywhere", "anywhere")[life % 4]
        if kind == "in_flight" and orders() >= clean_orders:
            kind = "anywhere"  # no order left to catch in flight
        if kind == "recovering" and kinds[-1] != "in_flight":
            kind = "anywhere"
        kinds.append(kind)
        rows, sent, looked_up = _chain_rows(journal_path), posts(), lookups()
        child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                                 env=env)
        assert child.stdout.readline().startswith("ready")
        if kind == "in_flight":  # the venue has the order; its answer is delayed
            while posts() == sent and child.poll() is None:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, KILL_DELAY_S * 0.6))
        elif kind == "recovering":  # the restart is looking the order up
            while lookups() == looked_up and child.poll() is None:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, KILL_DELAY_S * 0.6))
        else:  # while ticks are under way, not while the restart imports
            while _chain_rows(journal_path) == rows and child.poll() is None:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.2))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        killed += child.returncode == -signal.SIGKILL
        with Journal(journal_path) as journal:
            assert journal.verify().ok
            statuses = {row["client_order_id"]: row["broker_status"]
                        for row in journal.rows("orders")}
        if kind != "anywhere":  # the order's outcome was unknown to the journal
            assert "SENDING" in statuses.values(), (life, kind)
    assert killed >= 20
    assert kinds.count("in_flight") >= 4 and kinds.count("recovering") >= 4
    finished = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env,
                              timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.split()[-1] == "done"
    return kinds


def _journal_after_kills(journal_path: Path, cids: list[str], sleeve: str):
    """The journal's checks after the kills: its chain verifies, one order at the venue
    (``cids``, in order) per decision, a fill for each, each bar ticked once. Returns the
    fills and the sleeve's state."""
    with Journal(journal_path) as journal:
        assert journal.verify().ok
        orders, fills = journal.rows("orders"), journal.rows("fills")
        ticks = journal.rows("ticks")
        state = journal.load_state(sleeve)[0]
    decided_at = {row["client_order_id"]: row["decision_ts_ns"] for row in orders}
    per_decision = collections.Counter(decided_at[cid] for cid in cids)
    assert set(per_decision.values()) == {1}
    assert [f["client_order_id"] for f in fills] == cids
    assert len({row["bar_ts_ns"] for row in ticks}) == len(ticks)  # each bar once
    return fills, state


def test_kill_9_during_binance_ticks_never_doubles_an_order(tmp_path, binance_run):
    """Killed 20+ times and restarted (``_kill_and_finish``): the venue's order log, the
    journal's fills and the positions equal the uninterrupted run's (``binance_run``)."""
    candles = load("bittrex:ETH/BTC:5m")
    server = _binance(candles)
    order_path = "/api/v3/order"
    server.fail("delay", times=10**6, path=order_path, delay_s=KILL_DELAY_S)
    try:
        config = _binance_config(tmp_path, server.url)
        journal_path = load_config(config).journal
        env = {**os.environ, "MMATS_PROD_BINANCE_API_KEY": KEY,
               "MMATS_PROD_BINANCE_SECRET": SECRET}
        command = _crash_command(
            config, venue="binance", url=server.url, dataset="bittrex:ETH/BTC:5m",
            stop=START + BARS, cash=CASH_BTC, sleeve=SLEEVE, step_ns=FIVE_MINUTES_NS,
            tick=str(TICK), control="now_ms={now_ms}&symbol=ETHBTC&price={price}")
        _kill_and_finish(command, env, journal_path,
                         posts=lambda: server.count("POST", order_path),
                         lookups=lambda: server.count("GET", order_path),
                         orders=lambda: len(server.orders),
                         clean_orders=len(binance_run.server.orders))
        # the re-run of the last close that the clean run made, then compare
        broker = _fast_ccxt(server.url)
        control.tick_once(load_config(config), cash=CASH_BTC, now_ns=binance_run.closes[-1],
                          mode="operator", brokers={"crypto": broker},
                          sources={"binance": broker})

        crashed, clean = server.orders, binance_run.server.orders
        cids = [o.client_order_id for o in crashed]
        assert len(set(cids)) == len(cids) == server.count("POST", "/api/v3/order")

        def log(orders):
            return [(o.client_order_id, o.side, o.executed_qty, o.fills[0]["price"],
                     o.time_ms) for o in orders]

        assert log(crashed) == log(clean)
        fills, state = _journal_after_kills(journal_path, cids, SLEEVE)
        for order, fill in zip(crashed, fills, strict=True):
            assert fill["qty"] == float(order.executed_qty)
            assert fill["price"] == float(order.fills[0]["price"])
        for asset in ("ETH", "BTC"):
            assert server.balance(asset) == binance_run.server.balance(asset)
        assert _same(float(state["position"]), float(server.balance("ETH")[0]))
        assert float(state["position"]) == binance_run.status[SLEEVE]["position"]
    finally:
        server.stop()


@pytest.fixture(scope="module")
def oanda_run(tmp_path_factory):
    candles = load("fx:EUR_USD:1h")
    folder = tmp_path_factory.mktemp("oanda")
    server = _oanda(candles)
    try:
        config_path = _oanda_config(folder, server.url)
        config = load_config(config_path)
        run = VenueRun(folder, config_path, server, [])
        with pytest.MonkeyPatch.context() as patch:
            for name, value in OANDA_ENV.items():  # the in-process ticks' connect() too
                patch.setenv(name, value)
            for position in range(OANDA_BARS):
                index = START + position
                close = candles["ts"].iloc[index].value + HOUR_NS
                server.set_now(close)
                server.set_price("EUR_USD", float(candles["close"].iloc[index]))
                run.closes.append(close)
                if position in (0, OANDA_BARS // 2, OANDA_BARS - 1):
                    done = _script(config_path, "--now", str(close), "--cash", str(CASH_USD),
                                   "--once", env=OANDA_ENV)
                    run.outputs += [done.stdout, done.stderr]
                    assert done.returncode == 0, done.stdout + done.stderr
                else:
                    report = control.tick_once(config, cash=CASH_USD, now_ns=close,
                                               mode="operator")
                    assert report.bars == 1 and report.alerts == [], report
        yield run
    finally:
        server.stop()


def _oanda_broker(server: OandaServer) -> OandaBroker:
    return OandaBroker(ACCOUNT, TOKEN, base_url=server.url, timeout_s=2)


def test_oanda_journal_order_log_and_positions_agree(oanda_run):
    candles = load("fx:EUR_USD:1h")
    server = oanda_run.server
    for text in oanda_run.outputs:
        assert TOKEN not in text

    with Journal(load_config(oanda_run.config).journal) as journal:
        assert journal.verify().ok
        orders, fills = journal.rows("orders"), journal.rows("fills")
        kinds = {row["kind"] for row in journal.rows("risk_events")}
        state = journal.load_state(OANDA_SLEEVE)[0]
    accepted, venue_fills = server.orders, server.fills()
    assert len(accepted) >= 6
    cids = [o["client_id"] for o in accepted]
    assert len(set(cids)) == len(cids) == server.count("POST", r"/orders$")
    assert cids == [r["client_order_id"] for r in orders if r["broker_status"] == "SENDING"]
    assert [r["broker_status"] for r in orders] == ["SENDING", "filled"] * len(cids)
    assert [f["clientOrderID"] for f in venue_fills] == cids
    assert [f["client_order_id"] for f in fills] == cids
    signed = []
    for venue_fill, fill in zip(venue_fills, fills, strict=True):
        units = float(venue_fill["units"])
        assert fill["side"] == (1 if units > 0 else -1)
        assert fill["qty"] == abs(units)
        assert fill["price"] == float(venue_fill["price"])
        assert fill["fee"] == 0.0
        signed.append(units)
    held_after = list(itertools.accumulate(signed))
    assert min(held_after) < 0 < max(held_after)  # it went short and long
    # each order filled at the close of the bar just ticked, across the spread
    bar_close = dict(zip([ts.value for ts in candles["ts"]], candles["close"], strict=True))
    sending = [r for r in orders if r["broker_status"] == "SENDING"]
    for row, venue_fill in zip(sending, venue_fills, strict=True):
        side = 1 if float(venue_fill["units"]) > 0 else -1
        mid = bar_close[row["order_ts_ns"] - HOUR_NS]  # the order's time is the tick's
        assert venue_fill["price"] == f"{mid + side * HALF_SPREAD:.5f}"
    assert not kinds & {"reconcile_adopted", "reconcile_mismatch", "order_rejected",
                        "outcome_unknown", "stale_data"}

    broker = _oanda_broker(server)
    held = broker.positions().get("EUR/USD", 0.0)
    assert held == float(state["position"]) == sum(signed)
    # the journal marks at the mid close, the venue at the side a close would take
    nav = broker.account_summary()["nav"]
    assert float(state["equity"]) == pytest.approx(nav + abs(held) * HALF_SPREAD, abs=0.01)


def test_kill_9_during_oanda_ticks_never_doubles_an_order(tmp_path, oanda_run):
    """Killed 20+ times and restarted (``_kill_and_finish``), the adapters built from the
    configuration's ``venues:``: the venue's order log and fills, the journal's fills and
    the account equal the uninterrupted run's (``oanda_run``)."""
    server = _oanda(load("fx:EUR_USD:1h"))
    server.delay_s = KILL_DELAY_S  # within the adapter's 2 s: an answer late, not lost
    server.fail_next("timeout", count=10**6, path="/orders")  # order POSTs and look-ups
    try:
        config = _oanda_config(tmp_path, server.url)
        journal_path = load_config(config).journal
        command = _crash_command(
            config, venue="oanda", url=server.url, dataset="fx:EUR_USD:1h",
            stop=START + OANDA_BARS, cash=CASH_USD, sleeve=OANDA_SLEEVE, step_ns=HOUR_NS,
            tick=None, control="now_ns={now_ns}&instrument=EUR_USD&mid={price}")
        kinds = _kill_and_finish(command, {**os.environ, **OANDA_ENV}, journal_path,
                                 posts=lambda: server.count("POST", r"/orders$"),
                                 lookups=lambda: server.count("GET", r"/orders/@"),
                                 orders=lambda: len(server.orders),
                                 clean_orders=len(oanda_run.server.orders))
        print("kills aimed:", collections.Counter(kinds))

        clean = oanda_run.server
        cids = [o["client_id"] for o in server.orders]
        assert len(set(cids)) == len(cids) == server.count("POST", r"/orders$")

        def log(venue: OandaServer) -> list[tuple]:
            orders = [(o["client_id"], o["type"], o["instrument"], o["units"])
                      for o in venue.orders]
            fills = [(f["clientOrderID"], f["units"], f["price"], f["pl"])
                     for f in venue.fills()]
            return orders + fills

        assert log(server) == log(clean)
        fills, state = _journal_after_kills(journal_path, cids, OANDA_SLEEVE)
        for venue_fill, fill in zip(server.fills(), fills, strict=True):
            units = float(venue_fill["units"])
            assert (fill["client_order_id"], fill["side"], fill["qty"], fill["price"]) == (
                venue_fill["clientOrderID"], 1 if units > 0 else -1, abs(units),
                float(venue_fill["price"]))
        crashed, uninterrupted = _oanda_broker(server), _oanda_broker(clean)
        assert crashed.positions().get("EUR/USD", 0.0) == float(state["position"])
        assert crashed.positions() == uninterrupted.positions()
        assert crashed.account_summary() == uninterrupted.account_summary()
    finally:
        server.stop()


def test_feed_failover_to_the_backup_and_back(tmp_path):
    candles = load("bittrex:ETH/BTC:5m")
    primary, backup = _binance(candles), _binance(candles)
    try:
        config = load_config(_config(
            tmp_path,
            {"binance": {"exchange": "binance", "base_url": primary.url, "timeout_s": 2},
             "binance_backup": {"exchange": "binance", "base_url": backup.url,
                                "timeout_s": 2}},
            {"name": "crypto", "type": "crypto", "feed": ["binance", "binance_backup"],
             "execution": "binance", "symbols": ["ETH/BTC"], "timeframe": "5m"},
            {"id": "ema", "strategy": "ema_cross", "market": "crypto",
             "params": {"fast": 5, "slow": 20}, "costs": {"fee_bps": 10},
             "risk": {"allow_short": False}}))
        sources = {"binance": _fast_ccxt(primary.url), "binance_backup": _fast_ccxt(backup.url)}
        reports = []
        for position in range(8):
            index = START + position
            close = candles["ts"].iloc[index].value + FIVE_MINUTES_NS
            for server in (primary, backup):
                server.set_now(close // 1_000_000)
                server.set_price("ETHBTC", _venue_price(candles["close"].iloc[index]))
            if position == 3:  # two ticks of failing klines (each tries twice)
                primary.fail("503", times=4, path="/api/v3/klines")
            reports.append(control.tick_once(config, cash=CASH_BTC, now_ns=close,
                                             mode="operator",
                                             brokers={"crypto": sources["binance"]},
                                             sources=sources))
        assert all(report.bars >= 1 for report in reports)  # no close was skipped
        with Journal(config.journal) as journal:
            assert journal.verify().ok
            events = journal.rows("risk_events")
            ticks = journal.rows("ticks")
            state = journal.load_state(SLEEVE)[0]
        switches = [e for e in events if e["kind"] in ("feed_failover", "feed_restored")]
        closes = [candles["ts"].iloc[START + p].value + FIVE_MINUTES_NS for p in range(8)]
        assert [(e["kind"], e["ts_ns"], json.loads(e["data"])) for e in switches] == [
            ("feed_failover", closes[3], {"feed": "binance_backup", "previous": "binance"}),
            ("feed_restored", closes[5], {"feed": "binance", "previous": "binance_backup"})]
        assert [title for title, _ in reports[3].alerts] == ["MMATS feed failover"]
        assert reports[4].alerts == []  # still on the backup: said once
        assert [title for title, _ in reports[5].alerts] == ["MMATS feed restored"]
        notes = (tmp_path / "notes.log").read_text()
        assert "feed failover" in notes and "feed restored" in notes
        # every bar up to the last close journaled once, as the venues sent it (8 decimals)
        expected = candles.iloc[: START + 8]
        assert [t["bar_ts_ns"] for t in ticks] == [ts.value for ts in expected["ts"]]
        assert [t["close"] for t in ticks] == [float(f"{c:.8f}") for c in expected["close"]]
        assert int(state["last_bar_ts_ns"]) == expected["ts"].iloc[-1].value
    finally:
        primary.stop()
        backup.stop()
