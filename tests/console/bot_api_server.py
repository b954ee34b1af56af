"""A local Telegram Bot API server (the part the console's bot speaks), for the tests.

``POST /bot<TOKEN>/<method>`` as python-telegram-bot sends it (form-encoded fields, each a
JSON value; a JSON body is read too): ``getMe`` (a bot User), ``getUpdates`` (offset
confirms every update below it, a negative offset keeps the last -offset; ``timeout``
long-polls until an update is queued; ``limit``), ``sendMessage`` (recorded in
:attr:`BotApiServer.sent`, answered with a Message). A wrong token is answered 401
Unauthorized, an unknown method 404, as api.telegram.org does.

    with BotApiServer("123:abc") as server:
        server.push_message(42, "/status", username="alice")
        ...  # a telegram.Bot(token, base_url=server.base_url) polls and answers
        server.sent  # [{"chat_id": 42, "text": "..."}]
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BOT_USER = {"id": 777000111, "is_bot": True, "first_name": "MMATS test bot",
            "username": "mmats_test_bot", "can_join_groups": True,
            "can_read_all_group_messages": False, "supports_inline_queries": False}


class BotApiServer:
    """The Bot API on 127.0.0.1 (a free port), in a thread; ``base_url`` for ``telegram.Bot``,
    ``api_url`` for ``mmats telegram --api-url``."""

    def __init__(self, token: str):
        self.token = token
        self.updates: list[dict] = []  # queued, not yet confirmed
        self.sent: list[dict] = []  # sendMessage calls: chat_id, text
        self.calls: list[str] = []  # every method asked for, wrong token or not
        self._failures: list[tuple] = []  # (status, method or None, retry_after) to come
        self._next_update_id = 100_000
        self._next_message_id = 1
        self._changed = threading.Condition()
        self._closing = False
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    @property
    def base_url(self) -> str:
        return self.api_url + "/bot"

    def start(self) -> BotApiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._http.shutdown()
        self._http.server_close()

    def __enter__(self) -> BotApiServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what a test does ------------------------------------------------------------------

    def push_message(self, chat_id: int, text: str, *, username: str | None = None,
                     chat_type: str | None = None, date: float | None = None) -> int:
        """Queue a text message from ``chat_id`` (a user's private chat; a negative id is a
        group); returns its update_id."""
        with self._changed:
            update_id = self._next_update_id
            self._next_update_id += 1
            sender = {"id": abs(chat_id) if chat_id > 0 else 4242, "is_bot": False,
                      "first_name": username or "someone"}
            if username:
                sender["username"] = username
            chat = {"id": chat_id, "type": chat_type or ("private" if chat_id > 0 else
                                                         "supergroup")}
            if chat["type"] != "private":
                chat["title"] = "a group"
            message = {"message_id": self._message_id(), "from": sender, "chat": chat,
                       "date": int(time.time() if date is None else date), "text": text}
            if text.startswith("/"):
                message["entities"] = [{"type": "bot_command", "offset": 0,
                                        "length": len(text.split()[0])}]
            self.updates.append({"update_id": update_id, "message": message})
            self._changed.notify_all()
        return update_id

    def fail_next(self, count: int, status: int = 502, *, method: str | None = None,
                  retry_after: int | None = None) -> None:
        """Answer the next ``count`` requests (of ``method``, or any) with HTTP ``status``:
        502, a gateway error (the library raises NetworkError), or 429 with
        ``retry_after`` seconds, the API's flood control (RetryAfter)."""
        with self._changed:
            self._failures += [(status, method, retry_after)] * count

    def replies_to(self, chat_id: int) -> list[str]:
        with self._changed:
            return [m["text"] for m in self.sent if m["chat_id"] == chat_id]

    def wait_for_replies(self, count: int, timeout_s: float = 30.0) -> list[dict]:
        """The messages sent once there are ``count`` (or all there are after
        ``timeout_s``: the test's assert then says what is missing)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while len(self.sent) < count and time.monotonic() < deadline:
                self._changed.wait(deadline - time.monotonic())
            return list(self.sent)

    # -- the methods -------------------------------------------------------------------------

    def _message_id(self) -> int:
        self._next_message_id += 1
        return self._next_message_id

    def answer(self, method: str, fields: dict) -> tuple[int, dict]:
        with self._changed:
            failure = next((f for f in self._failures if f[1] in (None, method)), None)
            if failure is not None:
                self._failures.remove(failure)
                status, _, retry_after = failure
                if retry_after is not None:
                    return status, {"ok": False, "error_code": status,
                                    "description": f"Too Many Requests: retry after "
                                                   f"{retry_after}",
                                    "parameters": {"retry_after": retry_after}}
                return status, {"ok": False, "error_code": status,
                                "description": "Bad Gateway"}
        if method == "getMe":
            return 200, {"ok": True, "result": BOT_USER}
        if method == "getUpdates":
            return 200, {"ok": True, "result": self._get_updates(fields)}
        if method == "sendMessage":
            return self._send_message(fields)
        return 404, {"ok": False, "error_code": 404, "description": "Not Found"}

    def _get_updates(self, fields: dict) -> list[dict]:
        offset = _int(fields.get("offset"))
        limit = _int(fields.get("limit")) or 100
        deadline = time.monotonic() + float(fields.get("timeout") or 0)
        with self._changed:
            if offset is not None and offset < 0:
                self.updates = self.updates[offset:]
            elif offset is not None:
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
            while not self.updates and not self._closing and time.monotonic() < deadline:
                self._changed.wait(deadline - time.monotonic())
            return self.updates[:limit]

    def _send_message(self, fields: dict) -> tuple[int, dict]:
        chat_id, text = _int(fields.get("chat_id")), fields.get("text")
        if chat_id is None or not text:
            return 400, {"ok": False, "error_code": 400,
                         "description": "Bad Request: message text is empty"}
        if len(text) > 4096:
            return 400, {"ok": False, "error_code": 400,
                         "description": "Bad Request: message is too long"}
        with self._changed:
            self.sent.append({"chat_id": chat_id, "text": text})
            self._changed.notify_all()
            message_id = self._message_id()
        chat = {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"}
        return 200, {"ok": True, "result": {
            "message_id": message_id, "from": BOT_USER, "chat": chat,
            "date": int(time.time()), "text": text}}


def _int(value):
    if value is None or value == "":
        return None
    return int(value)


def _handler(server: BotApiServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = urllib.parse.urlsplit(self.path).path
            prefix, _, method = path.rpartition("/")
            server.calls.append(method)
            if prefix != f"/bot{server.token}":
                self._reply(401, {"ok": False, "error_code": 401,
                                  "description": "Unauthorized"})
                return
            self._reply(*server.answer(method, self._fields(body)))

        do_GET = do_POST  # noqa: N815 - the Bot API takes both

        def _fields(self, body: bytes) -> dict:
            kind = self.headers.get("Content-Type", "")
            if kind.startswith("application/json"):
                return json.loads(body or b"{}")
            fields = dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
            fields.update(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
            return fields

        def _reply(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up on a long poll

        def log_message(self, *args):  # the path holds the token: keep it out of stderr
            pass

    return Handler
