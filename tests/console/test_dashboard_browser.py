"""The dashboard in a real browser (Playwright driving Debian's chromium) over a paper
replay of the multi-market example: logging in, every view with its charts drawn, pausing a
model, a live fill, a refused order, a viewer who cannot act, the login redirect, a forged
cross-site POST and the emergency stop. Each view's screenshot is saved
(:func:`conftest.screenshot_dir`)."""

from __future__ import annotations

import http.server
import sqlite3
import threading
import time

import pytest

from .conftest import Dashboard, copy_of, log_in, screenshot_dir

VIEWS = ("portfolio", "positions", "strategies", "risk", "market", "logs", "research",
         "settings")


def journal_rows(path, table, where="", params=()):
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(
            f"SELECT * FROM {table} {'WHERE ' + where if where else ''} ORDER BY seq",
            params)]


def drawn_pixels(page, selector: str, colour: str) -> int:
    """How many pixels of the chart's canvases have a series' colour (``#rrggbb``, within a
    little antialiasing): 0 for a series that drew nothing."""
    return page.evaluate(
        """([selector, colour]) => {
             const want = [1, 3, 5].map(i => parseInt(colour.slice(i, i + 2), 16));
             let count = 0;
             for (const canvas of document.querySelectorAll(selector + ' canvas')) {
               if (!canvas.width || !canvas.height) continue;
               const data = canvas.getContext('2d').getImageData(0, 0, canvas.width,
                                                                 canvas.height).data;
               for (let i = 0; i < data.length; i += 4) {
                 if (data[i + 3] > 200 && Math.abs(data[i] - want[0]) < 8
                     && Math.abs(data[i + 1] - want[1]) < 8
                     && Math.abs(data[i + 2] - want[2]) < 8) count++;
               }
             }
             return count;
           }""", [selector, colour])


def open_view(page, view: str) -> None:
    page.evaluate("() => { delete document.body.dataset.drawn; }")
    page.click(f"#tabs a[data-view={view}]")
    page.wait_for_selector(f"body[data-drawn={view}]")


def test_no_cookie_is_sent_to_the_login_page(browser, dashboard):
    page = browser.new_context().new_page()
    page.goto(dashboard.url + "/#risk")
    assert page.url.startswith(dashboard.url + "/login")
    assert page.locator("#login-form").is_visible()
    answer = page.request.get(dashboard.url + "/api/positions")
    assert answer.status == 401
    page.context.close()


def test_every_view_shows_the_replay_and_its_charts_draw(browser, dashboard,
                                                         tmp_path_factory):
    shots = screenshot_dir(tmp_path_factory)
    page = log_in(browser, dashboard.url, "alice")
    assert page.inner_text("#who") == "alice (operator)"
    # Portfolio: the cards and the equity curve, drawn
    page.wait_for_selector("#equity-chart canvas")
    assert drawn_pixels(page, "#equity-chart", "#58a6ff") > 300  # the global curve
    assert drawn_pixels(page, "#equity-chart", "#f0883e") == 0  # a market's, hidden
    page.check("#equity-legend input[data-line='1']")
    page.wait_for_function("() => true")
    page.wait_for_timeout(300)
    assert drawn_pixels(page, "#equity-chart", "#f0883e") > 300  # shown from the legend
    cards = page.inner_text("#portfolio-cards")
    for label in ("Equity", "P&L today", "P&L total", "Drawdown", "Daily loss"):
        assert label in cards
    page.screenshot(path=shots / "portfolio.png")
    # Positions: the four sleeves of the replay hold positions; the orders and fills
    open_view(page, "positions")
    rows = page.locator("#positions-table tbody tr")
    assert rows.count() == 4
    held = page.inner_text("#positions-table")
    for symbol in ("ETH/BTC", "EUR/USD", "GOOG"):
        assert symbol in held
    fills = journal_rows(dashboard.journal, "fills")
    assert page.locator("#fills-table tbody tr").count() == min(len(fills), 300)
    assert page.locator("#orders-table tbody tr").count() > 0
    page.screenshot(path=shots / "positions.png", full_page=True)
    # Strategies: the four models, their states and signals with the gate reason
    open_view(page, "strategies")
    models = page.locator("article.model")
    assert models.count() == 4
    assert page.locator("article.model .state").count() >= 4
    assert page.locator("article.model tbody tr").count() > 0
    page.screenshot(path=shots / "strategies.png", full_page=True)
    # Risk: every level, with the state colours
    open_view(page, "risk")
    text = page.inner_text("#risk")
    for level in ("global", "market", "strategy", "order"):
        assert level in text
    assert page.locator("#risk .meter").count() > 0
    page.screenshot(path=shots / "risk.png", full_page=True)
    # Market: candles with the runner's fills marked; no order book at the paper venue
    open_view(page, "market")
    page.wait_for_selector("#candle-chart canvas")
    # the candles: rising and falling bodies and wicks
    assert drawn_pixels(page, "#candle-chart", "#2ea043") > 2000
    assert drawn_pixels(page, "#candle-chart", "#f85149") > 2000
    assert "ETH/BTC" in page.inner_text("#candle-title")
    marked = page.request.get(dashboard.url + "/api/market?market=crypto&symbol=ETH/BTC").json()
    assert marked["fills"] and all(f["side"] in ("buy", "sell") for f in marked["fills"])
    assert "not available" in page.inner_text("#order-book")
    page.screenshot(path=shots / "market.png")
    # Logs, filterable
    open_view(page, "logs")
    assert page.locator("#logs-table tbody tr").count() > 0
    page.select_option("#log-source", "operator")
    page.wait_for_function("() => [...document.querySelectorAll('#logs-table tbody tr td:nth-child(2)')]"
                           ".every(td => td.textContent === 'operator')")
    page.screenshot(path=shots / "logs.png")
    # Research: the report opens in place
    open_view(page, "research")
    frame = page.frame_locator("#report-frame")
    assert frame.locator("#report-title").inner_text() == "Walk-forward report"
    page.screenshot(path=shots / "research.png")
    open_view(page, "settings")
    assert "paper.yaml" in page.inner_text("#settings")
    page.screenshot(path=shots / "settings.png", full_page=True)
    page.context.close()


def test_pausing_a_model_is_journaled_with_the_user(browser, dashboard):
    page = log_in(browser, dashboard.url, "alice")
    open_view(page, "strategies")
    page.click("article.model[data-model=crypto_ema_cross] .pause-model")
    page.fill("#confirm-reason", "browser test")
    page.click("#confirm-ok")
    page.wait_for_selector("#flash:not([hidden])")
    assert "paused crypto_ema_cross" in page.inner_text("#flash")
    actions = journal_rows(dashboard.journal, "operator_actions", "action = 'pause'")
    assert actions[-1]["target"] == "crypto_ema_cross"
    assert actions[-1]["user"] == "alice" and actions[-1]["reason"] == "browser test"
    page.wait_for_selector("article.model[data-model=crypto_ema_cross] .state.PAUSED")
    # the login itself is journaled too
    logins = journal_rows(dashboard.journal, "operator_actions", "action = 'login'")
    assert any(row["user"] == "alice" for row in logins)
    page.context.close()


def test_a_viewer_sees_everything_and_cannot_act(browser, dashboard):
    page = log_in(browser, dashboard.url, "rita")
    assert page.inner_text("#who") == "rita (viewer)"
    assert not page.locator("#kill").is_visible()
    open_view(page, "positions")
    assert page.locator("#positions-table tbody tr").count() == 4
    assert page.locator(".close-position").count() == 0
    csrf = page.evaluate("() => App.me.csrf")
    answer = page.request.post(dashboard.url + "/api/actions/kill",
                               data={"confirm": "KILL"},
                               headers={"X-CSRF-Token": csrf, "Origin": dashboard.url})
    assert answer.status == 403
    assert "viewer" in answer.json()["error"]
    assert not journal_rows(dashboard.journal, "operator_actions", "action = 'kill'")
    page.context.close()


class _Forger(http.server.BaseHTTPRequestHandler):
    """Another site: its page posts to the dashboard, as a forged request would."""

    target = ""

    def do_GET(self):  # noqa: N802 - the stdlib's name
        body = (f"<form id=f method=post action='{self.target}/api/actions/kill' "
                "enctype=text/plain><input name='{\"confirm\":\"KILL\",\"x\":\"' "
                "value='\"}'></form><script>document.getElementById('f').submit()"
                "</script>").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_forged_cross_site_post_is_refused(browser, dashboard):
    page = log_in(browser, dashboard.url, "alice")
    # another port of 127.0.0.1 is the same site: the SameSite cookie goes along, so the
    # CSRF token is what refuses it
    _Forger.target = dashboard.url
    forger = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Forger)
    threading.Thread(target=forger.serve_forever, daemon=True).start()
    try:
        statuses = []
        page.on("response", lambda response: statuses.append(
            (response.url, response.status)))
        page.goto(f"http://127.0.0.1:{forger.server_address[1]}/")
        page.wait_for_load_state("networkidle")
        posted = [status for url, status in statuses if url.endswith("/api/actions/kill")]
        assert posted and all(status in (401, 403) for status in posted), statuses
        # the same forgery with the session's cookie and a wrong origin is refused too
        page.goto(dashboard.url + "/")
        page.wait_for_selector("body[data-drawn]")
        csrf = page.evaluate("() => App.me.csrf")
        answer = page.request.post(dashboard.url + "/api/actions/kill",
                                   data={"confirm": "KILL"},
                                   headers={"X-CSRF-Token": csrf,
                                            "Origin": "http://evil.example"})
        assert answer.status == 403
        answer = page.request.post(dashboard.url + "/api/actions/kill",
                                   data={"confirm": "KILL"},
                                   headers={"Origin": dashboard.url})
        assert answer.status == 403
        assert not journal_rows(dashboard.journal, "operator_actions", "action = 'kill'")
    finally:
        forger.shutdown()
        page.context.close()


def test_a_manual_fill_shows_at_once_and_a_refused_order_says_why(browser, dashboard):
    page = log_in(browser, dashboard.url, "alice")
    open_view(page, "positions")
    before = page.locator("#fills-table tbody tr").count()
    page.click("#new-order")
    page.select_option("#ticket-sleeve", "stocks_ema_cross|GOOG")
    page.select_option("#ticket-side", "sell")
    page.fill("#ticket-quantity", "10")
    page.click("#confirm-ok")
    page.wait_for_selector("#flash:not([hidden])")
    page.wait_for_function(f"() => document.querySelectorAll('#fills-table tbody tr')"
                           f".length > {before}", timeout=5000)
    orders = journal_rows(dashboard.journal, "operator_actions", "action = 'order'")
    assert orders and orders[-1]["user"] == "alice"
    # far beyond the forex market's max_order_notional (10000): refused, with the reason
    page.click("#new-order")
    page.select_option("#ticket-sleeve", "forex_rsi|EUR/USD")
    page.select_option("#ticket-side", "buy")
    page.fill("#ticket-exposure", "1.5")
    page.click("#confirm-ok")
    page.wait_for_selector("#confirm-error:not([hidden])")
    refusal = page.inner_text("#confirm-error")
    assert "refused" in refusal and "max_order_notional" in refusal, refusal
    refused = journal_rows(dashboard.journal, "operator_actions", "action = 'order_refused'")
    assert refused and refused[-1]["user"] == "alice"
    page.click("#confirm-cancel")
    page.context.close()


def test_emergency_stop_leaves_every_position_flat_within_5_s(browser, replayed,
                                                              users_file, tmp_path_factory):
    folder = copy_of(replayed, tmp_path_factory.mktemp("kill"))
    server = Dashboard(folder, users_file)
    try:
        page = log_in(browser, server.url, "alice")
        open_view(page, "positions")
        assert page.locator("#positions-table tbody tr").count() == 4
        page.click("#kill")
        page.fill("#confirm-reason", "browser test: emergency")
        started = time.monotonic()
        page.click("#confirm-ok")
        page.wait_for_selector("#positions-table .empty", timeout=5000)
        elapsed = time.monotonic() - started
        assert elapsed <= 5.0
        page.wait_for_selector("#kill-state:not([hidden])")
        kills = journal_rows(server.journal, "operator_actions", "action = 'kill'")
        assert kills[-1]["user"] == "alice"
        from mmats.live import control
        from mmats.live.config import load_config

        status = control.status(load_config(server.config))
        assert status["kill_switch"]["user"] == "alice"
        for sleeve, state in status.items():
            if sleeve not in ("kill_switch", "environment"):
                assert state["position"] == pytest.approx(0.0, abs=1e-9), sleeve
                assert state["trading_state"] == "HALTED", sleeve
    finally:
        server.stop()


def test_many_tabs_share_one_live_stream(browser, dashboard):
    """A browser opens at most six connections to one server and a live stream holds one:
    the tabs share one stream (a SharedWorker), so the ninth tab still loads and draws."""
    page = log_in(browser, dashboard.url, "rita")
    tabs = [page]
    for _ in range(8):
        tab = page.context.new_page()
        tab.goto(dashboard.url + "/#risk", timeout=15_000)
        tab.wait_for_selector("body[data-drawn=risk]", timeout=15_000)
        tab.wait_for_selector("#live.on", timeout=15_000)
        tabs.append(tab)
    streams = page.evaluate("""() => performance.getEntriesByType('resource')
        .filter(e => e.name.includes('/api/stream')).length""")
    assert streams == 0  # the page itself opened none: the worker holds the one stream
    page.context.close()
