"""The operator console's web app: FastAPI over a runner's journal, served by uvicorn.

What it reads: the journal through :class:`~mmats.console.readmodel.ReadModel` (a
read-only SQLite connection that follows the sequence number: a watcher looks at the
journal's files every ``poll_s`` and, when they changed, reads only the rows after the
last one seen), the candle store (:mod:`mmats.console.market_view`) and the research
reports folder. What it writes: nothing, but the operator actions — pause, resume, close,
kill, a manual order — which go through :mod:`mmats.live.control` and
:mod:`mmats.live.manual` exactly as ``mmats live`` does, journaled with the user who
pressed them, and the logins and failed logins (operator actions ``login`` /
``login_failed``).

Access: no page and no API answers without a session (pages redirect to ``/login``, the
API says 401). Sessions are server-side (:mod:`mmats.console.auth`), carried by an
HttpOnly, SameSite=Strict cookie; every POST needs the session's CSRF token in the
``X-CSRF-Token`` header and the dashboard's own Origin; logins are throttled per address
and per name. Viewers read everything; operators may act (403 for a viewer).

Live updates: ``GET /api/stream`` is a server-sent-events stream of every journaled row
after the client's last seen seq (``Last-Event-ID`` resumes it after a reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)

from mmats.console import actions as operator_actions
from mmats.console.auth import LoginThrottle, Sessions, check_csrf, cookie_settings
from mmats.console.readmodel import ReadModel
from mmats.console.users import (
    UsersError,
    active_users,
    authenticate,
    file_signature,
    list_users,
)
from mmats.errors import MMATSError
from mmats.live.config import RunnerConfig
from mmats.records import json_safe

STATIC = Path(__file__).with_name("static")
COOKIE = "mmats_session"
#: Pages and files anyone may fetch: the login page and the app's own scripts and styles.
PUBLIC = ("/login", "/static/", "/favicon.ico")
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; "
                                "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
                                "frame-src 'self'; frame-ancestors 'self'; form-action 'self'; "
                                "base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
# A research report is a stored HTML page of our own making: shown in a sandboxed frame.
REPORT_HEADERS = {**SECURITY_HEADERS,
                  "Content-Security-Policy": ("default-src 'self' 'unsafe-inline' data: blob:; "
                                              "frame-ancestors 'self'; sandbox allow-same-origin"),
                  "Cache-Control": "private, max-age=60"}


@dataclass
class ConsoleSettings:
    """How a dashboard runs: the runner's configuration and the mode the runner runs in
    (a kill acts at the venues in operator mode), the reports folder, the accounts file
    (None: beside the secrets), the cookie's Secure flag, and the journal watcher's
    period."""

    config: RunnerConfig
    mode: str
    reports_dir: Path = Path("reports")
    users_path: Path | None = None
    secure_cookies: bool = True
    cash: float = 10_000.0
    live_trading_allowed: bool = False
    poll_s: float = 0.05
    session_idle_s: float = 30 * 60


@dataclass
class Console:
    """What the app holds between requests."""

    settings: ConsoleSettings
    model: ReadModel
    sessions: Sessions
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    head: int = 0
    changed: asyncio.Condition | None = None
    answers: dict = field(default_factory=dict)  # (view, args) -> (head, JSON bytes)
    accounts: tuple | None = None  # the accounts file's signature when last looked at

    def check_accounts(self) -> None:
        """``user remove`` / ``user passwd`` run in another process: when the accounts file
        changed, end the sessions of accounts removed, disabled or re-passworded since."""
        path = self.settings.users_path
        signature = file_signature(path)
        if signature != self.accounts:
            self.accounts = signature
            try:
                self.sessions.keep_only(active_users(path=path))
            except UsersError:
                self.sessions.keep_only(())  # a damaged file: nobody stays logged in

    def answer(self, key, compute) -> Response:
        """A view's JSON, computed once per journal head however many pages ask (twenty
        open tabs cost one computation per new row, not twenty)."""
        head = self.head
        cached = self.answers.get(key)
        if cached is None or cached[0] != head:
            cached = (head, json.dumps(json_safe(compute()), allow_nan=False))
            if len(self.answers) > 256:
                self.answers.clear()
            self.answers[key] = cached
        return Response(cached[1], media_type="application/json")


def create_app(settings: ConsoleSettings) -> FastAPI:
    """The dashboard app for one runner configuration."""
    console = Console(settings, ReadModel(settings.config),
                      Sessions(idle_s=settings.session_idle_s))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        console.changed = asyncio.Condition()
        console.head = await asyncio.to_thread(console.model.refresh)
        watcher = asyncio.create_task(_watch_journal(console))
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    app = FastAPI(title="MMATS console", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.console = console

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        if not path.startswith(PUBLIC):
            console.check_accounts()
            session = _session(console, request)
            if session is None:
                if path.startswith("/api/"):
                    return _headers(JSONResponse({"error": "log in first"}, status_code=401))
                return _headers(RedirectResponse("/login", status_code=303))
            request.state.session = session
            if request.method not in ("GET", "HEAD", "OPTIONS"):
                reason = check_csrf(session, request.headers.get("x-csrf-token"),
                                    request.headers.get("origin")
                                    or _origin_of(request.headers.get("referer")),
                                    request.headers.get("host"))
                if reason is not None:
                    return _headers(JSONResponse({"error": f"refused: {reason}"},
                                                 status_code=403))
        response = await call_next(request)
        headers = REPORT_HEADERS if path.startswith("/reports/") else SECURITY_HEADERS
        return _headers(response, headers)

    _mount_pages(app, console)
    _mount_reads(app, console)
    _mount_actions(app, console)
    return app


# -- pages, login and logout -----------------------------------------------------------
def _mount_pages(app: FastAPI, console: Console) -> None:
    charts_js = _charts_js()

    @app.get("/login")
    def login_page():
        return FileResponse(STATIC / "login.html", media_type="text/html")

    @app.post("/login")
    async def login(request: Request):
        address = request.client.host if request.client else "?"
        form = await request.form()
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        if _origin_of(request.headers.get("origin")) not in (None, _own_origin(request)):
            return JSONResponse({"error": "refused: a login from another site"},
                                status_code=403)
        wait = console.throttle.blocked(address, name)
        if wait:
            return _login_again("too many failed logins: wait and try again", 429,
                                {"Retry-After": str(int(wait) + 1)})
        try:
            user = await asyncio.to_thread(authenticate, name, password,
                                           path=console.settings.users_path)
        except UsersError as error:
            return _login_again(f"the accounts file cannot be read: {error}", 500)
        if user is None:
            console.throttle.failed(address, name)
            await asyncio.to_thread(_journal_login, console, "login_failed", name, address)
            return _login_again("wrong name or password", 401)
        console.throttle.succeeded(address, name)
        session_id, _ = console.sessions.create(user)
        await asyncio.to_thread(_journal_login, console, "login", user.name, address)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, session_id,
                            **cookie_settings(console.settings.secure_cookies))
        return response

    @app.post("/logout")
    def logout(request: Request):
        console.sessions.end(request.cookies.get(COOKIE, ""))
        response = JSONResponse({"ok": True})
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/")
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/charts.js")
    def charts():
        return FileResponse(charts_js, media_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/static/{name}")
    def static(name: str):
        path = (STATIC / name).resolve()
        if path.parent != STATIC.resolve() or not path.is_file():
            raise HTTPException(404)
        kind = {".js": "text/javascript", ".css": "text/css", ".html": "text/html",
                ".svg": "image/svg+xml"}.get(path.suffix, "application/octet-stream")
        return FileResponse(path, media_type=kind)

    @app.get("/reports/{name:path}")
    def report(name: str):
        root = console.settings.reports_dir.resolve()
        path = (root / name).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise HTTPException(404, f"no report {name}")
        return FileResponse(path)


def _login_again(message: str, status: int, headers: dict | None = None) -> HTMLResponse:
    page = (STATIC / "login.html").read_text()
    page = page.replace('<p id="error" class="error" hidden></p>',
                        f'<p id="error" class="error">{_escape(message)}</p>')
    return HTMLResponse(page, status_code=status, headers=headers)


def _journal_login(console: Console, action: str, name: str, address: str) -> None:
    """A login or a failed one, as an operator action (only into a journal that exists:
    the console never creates the runner's journal, and only into one of the
    configuration's environment: a dev dashboard pointed at prod's journal writes nothing
    there)."""
    from mmats.live.journal import Journal

    config = console.settings.config
    if not config.journal.is_file():
        return
    with contextlib.suppress(MMATSError, OSError), \
            Journal(config.journal, create=False, anchor=config.journal_anchor,
                    environment=config.environment) as journal:
        journal.append_operator_action(action, "dashboard", name[:64] or "?",
                                       f"from {address}")


# -- what the views read ---------------------------------------------------------------
def _mount_reads(app: FastAPI, console: Console) -> None:
    model = console.model
    settings = console.settings

    @app.get("/api/me")
    def me(request: Request):
        session = request.state.session
        return {"user": session.user, "role": session.role, "csrf": session.csrf,
                "can_act": session.role == "operator"}

    from mmats.live.sleeves import sleeves

    config = settings.config
    layout = {"sleeve_list": [{"id": s.id, "model_id": s.model_id, "symbol": s.symbol,
                               "market": s.market} for s in sleeves(config, 1.0)],
              "symbols": [{"market": m.name, "symbol": symbol}
                          for m in config.markets for symbol in m.symbols]}

    @app.get("/api/overview")
    def overview():
        return console.answer("overview", lambda: {**model.overview(), "mode": settings.mode,
                                                   **layout})

    @app.get("/api/portfolio")
    def portfolio():
        return console.answer("portfolio", model.portfolio)

    @app.get("/api/positions")
    def positions():
        return console.answer("positions", model.positions)

    @app.get("/api/orders")
    def orders(limit: int = 200):
        return console.answer(("orders", limit), lambda: model.orders(limit=min(limit, 2000)))

    @app.get("/api/fills")
    def fills(limit: int = 500):
        return console.answer(("fills", limit), lambda: model.fills(limit=min(limit, 5000)))

    @app.get("/api/strategies")
    def strategies():
        return console.answer("strategies", model.strategies)

    @app.get("/api/risk")
    def risk():
        from mmats.console.risk_view import risk_usage

        def usage():
            states, books = model.latest_states()
            return risk_usage(settings.config, states, books)

        return console.answer("risk", usage)

    @app.get("/api/market")
    def market(market: str, symbol: str, start_ms: int | None = None,
               end_ms: int | None = None):
        from mmats.console.market_view import candles

        try:
            bars = candles(settings.config, market, symbol, start_ms=start_ms,
                           end_ms=end_ms)
        except MMATSError as error:
            raise HTTPException(400, str(error)) from None
        return _json({"candles": bars, "fills": model.fill_markers(symbol),
                      "stops": model.stop_levels(symbol)})

    @app.get("/api/orderbook")
    def orderbook(market: str, symbol: str):
        from mmats.console.market_view import order_book

        try:
            return _json(order_book(settings.config, market, symbol))
        except MMATSError as error:
            return _json({"available": False, "reason": str(error)})

    @app.get("/api/logs")
    def logs(source: str = "", level: str = "", q: str = "", limit: int = 500):
        kinds = [part for part in source.split(",") if part] or None
        return _json(model.logs(kinds=kinds, level=level or None, text=q or None,
                                limit=min(limit, 5000)))

    @app.get("/api/reports")
    def reports():
        root = settings.reports_dir
        found = sorted((p for p in root.rglob("*") if p.suffix in (".html", ".pdf", ".png")),
                       key=lambda p: p.stat().st_mtime, reverse=True) if root.is_dir() else []
        return [{"name": str(p.relative_to(root)), "size": p.stat().st_size,
                 "mtime_ms": int(p.stat().st_mtime * 1000),
                 "url": "/reports/" + str(p.relative_to(root))} for p in found[:200]]

    @app.get("/api/settings")
    def settings_view(request: Request):
        session = request.state.session
        users = [] if session.role != "operator" else list_users(path=settings.users_path)
        return _json({"config": json.loads(settings.config.snapshot()), "mode": settings.mode,
                      "source": str(settings.config.source),
                      "journal": str(settings.config.journal),
                      "reports": str(settings.reports_dir), "users": users,
                      "live_trading_allowed": settings.live_trading_allowed})

    @app.get("/api/stream")
    async def stream(request: Request, after: int | None = None):
        last = request.headers.get("last-event-id")
        seq = int(last) if last and last.isdigit() else (after if after is not None
                                                         else console.head)
        return StreamingResponse(_events(console, request, seq),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})


async def _watch_journal(console: Console) -> None:
    """Look at the journal's files every ``poll_s``; when they changed, read the rows after
    the last seen seq and wake the streams. A stat per period: nothing is read while the
    runner is quiet."""
    path = console.settings.config.journal
    seen = None
    while True:
        marks = tuple(_mark(Path(f"{path}{suffix}")) for suffix in ("", "-wal"))
        if marks != seen:
            seen = marks
            with contextlib.suppress(MMATSError, OSError):
                head = await asyncio.to_thread(console.model.refresh)
                if head != console.head:
                    console.head = head
                    async with console.changed:
                        console.changed.notify_all()
        await asyncio.sleep(console.settings.poll_s)


def _mark(path: Path):
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


#: Rows a page is sent one by one; of the others (a row per bar and sleeve) only the count.
ROWS_SENT = ("fills", "orders", "risk_events", "operator_actions", "config_snapshots")


async def _events(console: Console, request: Request, seq: int):
    """Server-sent events: what was journaled after ``seq``, in batches: each batch says
    which tables changed (and how many rows) and carries the rows a page shows one by one
    (fills, orders, risk events, operator actions); a busy runner makes at most one batch
    per look at the journal, however many rows it writes. A comment every 15 s keeps
    proxies from closing a quiet stream."""
    yield f"retry: 1000\nevent: hello\ndata: {json.dumps({'head': console.head})}\n\n"
    while not await request.is_disconnected():
        if console.head < seq:  # the journal was replaced (a new replay): from its start
            seq = 0
        if console.head > seq:
            changes = console.model.changes(seq, limit=2000)
            if not changes:  # the read model is behind the head it reported: wait
                seq = console.head
                continue
            seq = max(int(change["seq"]) for change in changes)
            tables: dict[str, int] = {}
            for change in changes:
                tables[change["table"]] = tables.get(change["table"], 0) + 1
            batch = {"seq": seq, "tables": tables,
                     "rows": [c for c in changes if c["table"] in ROWS_SENT]}
            yield (f"id: {seq}\nevent: changes\n"
                   f"data: {json.dumps(json_safe(batch), allow_nan=False)}\n\n")
            continue
        async with console.changed:
            try:
                await asyncio.wait_for(console.changed.wait(), timeout=15.0)
            except TimeoutError:
                yield ": keep-alive\n\n"


# -- the operator's actions -------------------------------------------------------------
def _mount_actions(app: FastAPI, console: Console) -> None:
    @app.post("/api/actions/{action}")
    async def act(action: str, request: Request):
        session = request.state.session
        if session.role != "operator":
            return JSONResponse({"error": f"{session.user} is a viewer: only an operator "
                                 "may act"}, status_code=403)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse({"error": "send a JSON object"}, status_code=400)
        try:
            result = await asyncio.to_thread(operator_actions.perform, console.settings,
                                             action, body, session.user)
        except operator_actions.ActionRefused as refusal:
            return JSONResponse({"ok": False, "error": str(refusal), **refusal.details},
                                status_code=refusal.status)
        return _json({"ok": True, **result})


# -- helpers ------------------------------------------------------------------------------
def _session(console: Console, request: Request):
    session_id = request.cookies.get(COOKIE)
    return console.sessions.get(session_id) if session_id else None


def _json(value) -> Response:
    return Response(json.dumps(json_safe(value), allow_nan=False),
                    media_type="application/json")


def _headers(response: Response, headers: dict = SECURITY_HEADERS) -> Response:
    for name, value in headers.items():
        response.headers.setdefault(name, value)
    return response


def _origin_of(url: str | None) -> str | None:
    if not url:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else url


def _own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


def _escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def _charts_js() -> Path:
    """TradingView's Lightweight Charts (Apache 2.0), as shipped inside the
    ``lightweight-charts`` package: served by the app itself, so the dashboard draws
    offline (no CDN)."""
    import importlib.util

    spec = importlib.util.find_spec("lightweight_charts")
    path = None if spec is None or spec.origin is None else \
        Path(spec.origin).parent / "js" / "lightweight-charts.js"
    if path is None or not path.is_file():
        raise MMATSError("the chart library is missing: pip install 'mmats[console]' "
                         "(it ships in the lightweight-charts package)")
    return path


# -- serving -------------------------------------------------------------------------------
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def serve(settings: ConsoleSettings, *, host: str = "127.0.0.1", port: int = 8050,
          ready=None, stop: threading.Event | None = None, extras=()) -> None:
    """Run the dashboard on uvicorn until interrupted (or ``stop`` is set). ``ready`` is
    called with the URL once the socket listens (port 0 picks a free one); ``extras``
    (the Telegram bot) are started beside it and stopped with it."""
    import socket

    import uvicorn

    app = create_app(settings)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    bound = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=1))
    if stop is not None:
        threading.Thread(target=lambda: (stop.wait(), setattr(server, "should_exit", True)),
                         daemon=True).start()
    for extra in extras:
        extra.start()
    if ready is not None:
        shown = f"[{host}]" if ":" in host else host
        ready(f"http://{shown}:{bound}")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        for extra in extras:
            with contextlib.suppress(Exception):
                extra.stop()
