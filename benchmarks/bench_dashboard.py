"""Benchmark the operator console. Prints figures; never asserts timings.

1. **First paint** of the Portfolio view over a journal of 10,000 fills and 100,000 bars
   of sleeve states, with 100,000 candles in the store: from the browser's request of the
   page to the equity chart drawn (its data handed to the canvas chart and the view marked
   drawn), in Debian's chromium driven by Playwright. Cold (a new browser profile) and
   warm (the next page loads). Target <= 1 s.
2. **Fill latency**: a fill committed to the journal by another process's connection
   until its row is in the open Positions page (a MutationObserver stamps the moment):
   20 fills, one at a time. Target <= 250 ms.
3. **Twenty tabs**: the wall time of a journaled paper replay of the multi-market example
   (the runner's tick, one per bar close) with no dashboard page open, and with 20 tabs
   open on the Portfolio view following it live; alternated, median of each. Target: no
   measurable difference (the dashboard never writes the journal; it only reads).

    python benchmarks/bench_dashboard.py            # ~3 minutes
    python benchmarks/bench_dashboard.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
MMATS = str(Path(sys.executable).with_name("mmats"))
PASSWORD = "benchmark-password-1"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
BAR_NS = 300 * 10**9


def synthetic_store(root: Path, bars: int) -> None:
    from mmats.data.store import CandleStore

    rng = np.random.default_rng(7)
    close = 20_000 * np.exp(np.cumsum(rng.normal(0, 0.002, bars)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    wick = np.abs(rng.normal(0, 0.001, bars)) * close
    frame = pd.DataFrame({
        "ts": pd.to_datetime(1_600_000_000_000_000_000 + np.arange(bars) * BAR_NS, utc=True),
        "open": open_, "high": np.maximum(open_, close) + wick,
        "low": np.minimum(open_, close) - wick, "close": close,
        "volume": rng.lognormal(3, 1, bars)})
    CandleStore(root).write("synth", "BTC/USDT", "5m", frame)


def synthetic_config(folder: Path, journal: Path, data_root: Path) -> Path:
    path = folder / "synthetic.yaml"
    path.write_text(f"""mode: paper
environment: dev
risk: {{max_daily_loss_pct: 5%, max_drawdown_pct: 25%}}
markets:
  crypto: {{type: crypto, feed: synth, execution: paper, symbols: [BTC/USDT], timeframe: 5m}}
models:
  - {{id: ema, strategy: ema_cross, market: crypto, params: {{fast: 10, slow: 50}}}}
journal: {journal}
data_root: {data_root}
""")
    return path


def synthetic_journal(path: Path, bars: int, fills: int) -> None:
    """What a runner leaves after ``bars`` closes of one sleeve with ``fills`` fills: a
    tick, a signal and the state per bar, an order and a fill every bars/fills bars."""
    from mmats.live.journal import Journal
    from mmats.types import FILL_DTYPE, ORDER_DTYPE, STATE_DTYPE

    rng = np.random.default_rng(3)
    equity = 10_000 * np.exp(np.cumsum(rng.normal(0, 0.001, bars)))
    every = bars // fills
    state = np.zeros(1, dtype=STATE_DTYPE)
    fill = np.zeros(1, dtype=FILL_DTYPE)[0]
    order = np.zeros(1, dtype=ORDER_DTYPE)[0]
    with Journal(path, durable=False, sign=False) as journal:
        for start in range(0, bars, 1000):
            with journal.transaction():
                for i in range(start, min(start + 1000, bars)):
                    ts = 1_600_000_000_000_000_000 + i * BAR_NS
                    price = 20_000.0 + i * 0.01
                    journal.append_tick("BTC/USDT", ts, price, price, price, price, 1.0,
                                        timeframe="5m", ts_ns=ts)
                    journal.append_signal("ema", "BTC/USDT", "HOLD", 0.0, ts_ns=ts)
                    if i % every == 0:
                        side = 1 if (i // every) % 2 == 0 else -1
                        order["order_id"], order["ts_ns"] = i, ts
                        order["requested_qty"] = order["filled_qty"] = side * 0.25
                        order["price"] = price
                        cid = f"ema:BTC/USDT:{i}"
                        journal.append_order("ema", "BTC/USDT", cid, order,
                                             broker_status="PAPER", ts_ns=ts)
                        fill["order_id"], fill["ts_ns"], fill["side"] = i, ts, side
                        fill["qty"], fill["price"], fill["fee"] = 0.25, price, 0.5
                        journal.append_fill("ema", "BTC/USDT", cid, fill, ts_ns=ts)
                    state["equity"] = state["cash"] = equity[i]
                    state["equity_peak"] = equity[: i + 1].max()
                    state["last_close"], state["last_bar_ts_ns"] = price, ts
                    state["position"] = 0.25 if (i // every) % 2 == 0 else 0.0
                    journal.save_state("ema:BTC/USDT", state, ts_ns=ts)


class Dashboard:
    def __init__(self, config: Path, users: Path, folder: Path):
        env = {**os.environ, "MMATS_USERS_FILE": str(users)}
        self.process = subprocess.Popen(
            [MMATS, "dashboard", "--config", str(config), "--port", "0", "--json",
             "--reports", str(folder / "reports")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the dashboard did not start: {self.process.stderr.read()}")
        self.url = json.loads(line)["url"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def logged_in_context(browser, url: str):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    answer = context.request.post(url + "/login", form={"username": "bench",
                                                        "password": PASSWORD},
                                  headers={"Origin": url}, max_redirects=0)
    assert answer.status == 303, answer.status
    return context


CHART_DRAWN = ("() => document.body.dataset.drawn === 'portfolio' && "
               "document.querySelectorAll('#equity-chart canvas').length > 0")


def first_paint(browser, url: str, runs: int) -> list[float]:
    """Seconds from the page's request to the Portfolio chart drawn; the first run in a
    fresh profile (cold), the others in the same one."""
    context = logged_in_context(browser, url)
    figures = []
    for _ in range(runs):
        page = context.new_page()
        page.goto(url + "/#portfolio", wait_until="commit")
        page.wait_for_function(CHART_DRAWN, timeout=30_000)
        figures.append(page.evaluate("() => performance.now()") / 1000)
        page.close()
    context.close()
    return figures


def fill_latency(browser, url: str, journal_path: Path, fills: int) -> list[float]:
    from mmats.live.journal import Journal
    from mmats.types import FILL_DTYPE

    context = logged_in_context(browser, url)
    page = context.new_page()
    page.goto(url + "/#positions")
    page.wait_for_selector("body[data-drawn=positions]")
    page.evaluate("""() => { window.seen = {};
        new MutationObserver(() => { for (const row of document.querySelectorAll('tr.live-fill'))
          if (!(row.dataset.seq in window.seen)) window.seen[row.dataset.seq] = Date.now(); })
        .observe(document.body, {subtree: true, childList: true}); }""")
    record = np.zeros(1, dtype=FILL_DTYPE)[0]
    figures = []
    with Journal(journal_path, create=False, durable=False) as journal:
        for i in range(fills):
            record["ts_ns"], record["side"], record["qty"], record["price"] = (
                time.time_ns(), 1, 0.01, 20_000.0 + i)
            seq = journal.append_fill("ema", "BTC/USDT", f"bench-{i}", record)
            committed_ms = time.time() * 1000
            page.wait_for_function(f"() => '{seq}' in window.seen", timeout=10_000)
            figures.append((page.evaluate(f"() => window.seen['{seq}']") - committed_ms) / 1000)
            time.sleep(0.2)
    context.close()
    return figures


def replay_seconds(config_path: Path, bars: int) -> float:
    started = time.perf_counter()
    done = subprocess.run([MMATS, "live", "--config", str(config_path), "--replay",
                           "--journal", str(_journal_of(config_path)), "--bars", str(bars),
                           "--json"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return time.perf_counter() - started


def _journal_of(config_path: Path) -> Path:
    return config_path.parent / "journal" / "paper.sqlite"


def tabs_cost(browser, users: Path, folder: Path, bars: int, rounds: int, tabs: int,
              view: str = "portfolio", background: bool = False):
    """The replay's wall time without and with ``tabs`` pages open on ``view``; with
    ``background`` all but the first say they are hidden (``document.hidden``), as the
    other tabs of a browser window are: a headless browser shows every page."""
    text = (ROOT / "configs" / "paper_multi_market.yaml").read_text().splitlines()
    lines = ["journal: journal/paper.sqlite" if line.startswith("journal:") else
             f"data_root: {ROOT / 'mmats' / 'data' / 'sample'}"
             if line.startswith("data_root:") else line for line in text]
    (folder / "journal").mkdir(exist_ok=True)
    config = folder / "paper.yaml"
    config.write_text("\n".join(lines) + "\n")
    replay_seconds(config, 20)  # a first run: the dashboard has a journal to open
    dashboard = Dashboard(config, users, folder)
    context = logged_in_context(browser, dashboard.url)
    pages = []
    without, with_tabs = [], []
    try:
        for _ in range(rounds):
            for path in _journal_of(config).parent.glob("*"):
                path.unlink()
            without.append(replay_seconds(config, bars))
            for _ in range(tabs - len(pages)):
                page = context.new_page()
                if background and pages:
                    page.add_init_script("Object.defineProperty(document, 'hidden', "
                                         "{get: () => true})")
                page.goto(dashboard.url + f"/#{view}")
                pages.append(page)
            for path in _journal_of(config).parent.glob("*"):
                path.unlink()
            with_tabs.append(replay_seconds(config, bars))
            for page in pages:
                page.close()
            pages = []
    finally:
        context.close()
        dashboard.stop()
    return without, with_tabs


class _SkipPaint(Exception):
    pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--fills", type=int, default=10_000)
    parser.add_argument("--replay-bars", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tabs", type=int, default=20)
    parser.add_argument("--tab-view", default="portfolio",
                        help="the view the tabs show (portfolio redraws at each new row)")
    parser.add_argument("--only-tabs", action="store_true", help="measure the tabs only")
    parser.add_argument("--background", action="store_true",
                        help="all tabs but one hidden, as in one browser window")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("Debian's chromium is needed: apt-get install chromium")
    folder = Path(tempfile.mkdtemp(prefix="mmats-bench-dashboard-"))
    users = folder / "users.json"
    subprocess.run([MMATS, "dashboard", "user", "add", "bench", "--role", "operator",
                    "--password-stdin"], input=PASSWORD + "\n", text=True, check=True,
                   env={**os.environ, "MMATS_USERS_FILE": str(users)}, capture_output=True)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    synthetic_store(folder / "data", args.bars)
    journal = folder / "journal.sqlite"
    synthetic_journal(journal, args.bars, args.fills)
    built = time.perf_counter() - started
    (folder / "reports").mkdir()
    config = synthetic_config(folder, journal, folder / "data")
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "cpus": os.cpu_count(), "load_1m_before": load_before,
              "bars": args.bars, "fills": args.fills, "journal_built_s": built}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        dashboard = Dashboard(config, users, folder)
        try:
            if args.only_tabs:
                raise _SkipPaint
            paints = first_paint(browser, dashboard.url, 6)
            result["first_paint_cold_s"] = paints[0]
            result["first_paint_warm_s"] = statistics.median(paints[1:])
            latencies = fill_latency(browser, dashboard.url, journal, 20)
            result["fill_latency_median_s"] = statistics.median(latencies)
            result["fill_latency_max_s"] = max(latencies)
        except _SkipPaint:
            pass
        finally:
            dashboard.stop()
        tabs_folder = folder / "tabs"
        tabs_folder.mkdir()
        without, with_tabs = tabs_cost(browser, users, tabs_folder, args.replay_bars,
                                       args.rounds, args.tabs, args.tab_view)
        result["replay_with_background_tabs_s"] = tabs_cost(
            browser, users, tabs_folder, args.replay_bars, args.rounds, args.tabs,
            args.tab_view, background=True)[1] if not args.only_tabs or args.background \
            else None
        result["replay_without_tabs_s"] = without
        result["replay_with_tabs_s"] = with_tabs
        browser.close()
    result["load_1m_after"] = os.getloadavg()[0]
    shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['date']}, {result['cpus']} CPUs, load {load_before:.2f} -> "
          f"{result['load_1m_after']:.2f}")
    print(f"journal: {args.bars:,} bars of states and ticks, {args.fills:,} fills "
          f"(built in {built:.1f} s); store: {args.bars:,} candles")
    background = result["replay_with_background_tabs_s"]
    if args.only_tabs:
        print(f"tabs on {args.tab_view}: without {without}, with {with_tabs}, one shown "
              f"and the others in the background {background}")
        return 0
    print(f"first paint of Portfolio: cold {result['first_paint_cold_s']:.3f} s, warm "
          f"{result['first_paint_warm_s']:.3f} s (median of 5)   target <= 1 s")
    print(f"fill committed -> row in the page: median "
          f"{1000 * result['fill_latency_median_s']:.0f} ms, max "
          f"{1000 * result['fill_latency_max_s']:.0f} ms (20 fills)   target <= 250 ms")
    print(f"replay of {args.replay_bars} bars per market: without tabs "
          f"{statistics.median(without):.2f} s {without}, with {args.tabs} tabs "
          f"{statistics.median(with_tabs):.2f} s {with_tabs} (all {args.tabs} shown: "
          f"headless windows side by side), with one shown and {args.tabs - 1} in the "
          f"background {statistics.median(background):.2f} s {background}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
