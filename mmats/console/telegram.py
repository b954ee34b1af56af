"""Chat control over Telegram: the operator's commands from a phone, for allowed chats only.

The bot answers ``/status``, ``/positions``, ``/pause MODEL``, ``/resume MODEL``,
``/close SYMBOL`` and ``/kill`` (confirmed by a one-time ``/confirm CODE``) through the
same functions as ``mmats live``: :mod:`mmats.live.control`, which journals every action
with its user (``telegram:<username or chat id>``). Messages from a chat that is not on
the configuration's allow-list (``telegram: {chat_ids: [...]}``) get no reply and are
journaled as a ``telegram_refused`` risk event.

It drives its own ``getUpdates`` / ``sendMessage`` loop on python-telegram-bot's
:class:`telegram.Bot` rather than ``Application.run_polling``, so it runs alone
(:func:`run_bot`, ``mmats telegram``), once per cron run (``--once``), or in a background
thread of another process (:meth:`TelegramControl.start`, as ``mmats dashboard
--telegram`` does). Network errors are retried with back-off; one bad update never stops
the loop. The token comes from the secrets store (``mmats keys set telegram --fields
token``) and never reaches a log line or a reply: the Bot API puts it in every URL, so the
loggers of python-telegram-bot and httpx are filtered while a bot runs.

Example::

    control = TelegramControl.from_config(load_config("configs/paper_multi_market.yaml"))
    control.start()        # answers in a background thread
    ...
    control.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import threading
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from secrets import randbelow

from mmats.errors import ConfigError, MMATSError
from mmats.files import write_durably
from mmats.live import control
from mmats.live.config import RunnerConfig, check_can_trade
from mmats.live.sleeves import sleeves
from mmats.live.wiring import RunnerBusy, open_journal
from mmats.redact import redact
from mmats.secrets import RedactingFilter, SecretsError, get_secret

log = logging.getLogger(__name__)

SECRET_NAME = "telegram"  # the secrets store's entry: mmats keys set telegram --fields token
HOW_TO_STORE = ("store it with: mmats keys set telegram --fields token --env ENV (the "
                "token BotFather gave you, for the configuration's environment)")
DEFAULT_API_URL = "https://api.telegram.org"
MAX_MESSAGE_CHARS = 4096  # the Bot API's limit on one message's text
REFUSAL_EVERY_S = 60.0  # one telegram_refused event per stranger's chat per minute at most
HELP = """MMATS commands:
/status - trading state, equity and drawdown of every sleeve; the kill switch
/positions - open positions: symbol, quantity, last price, equity
/pause MODEL - stop a model opening anything (positions kept)
/resume MODEL - let a model trade again (/resume all: every model, lifts the kill switch)
/close SYMBOL - flatten every sleeve trading SYMBOL at the next bar's open
/kill - emergency stop: flatten everything and halt (asks for /confirm CODE)
/help - this list"""


class BotError(MMATSError):
    """The bot cannot run: the Bot API refused the token, or stayed unreachable."""


class TelegramControl:
    """A Telegram bot answering the operator's commands for one runner configuration.

    ``token`` is the bot's (see :meth:`from_config` for the secrets store); ``api_url`` the
    Bot API server (default Telegram's; the tests' local server); ``mode`` the runner's
    mode, if not the configuration's (a kill acts at the venues in operator mode).
    ``chat_ids`` and ``confirm_timeout_s`` default to the configuration's ``telegram:``
    block. Commands sent more than ``max_age_s`` before the bot reads them (it was down)
    are not carried out. ``backoff_s`` is the first and the longest wait between retries
    of a failed request; ``clock`` is the wall clock in seconds (a test passes its own).
    """

    def __init__(self, config: RunnerConfig, *, token: str, api_url: str | None = None,
                 mode: str | None = None, chat_ids: Iterable[int] | None = None,
                 confirm_timeout_s: float | None = None, poll_timeout_s: float = 25.0,
                 max_age_s: float = 600.0, backoff_s: tuple[float, float] = (1.0, 60.0),
                 cash: float = 10_000.0, live_trading_allowed: bool = False,
                 clock=time.time):
        if not token:
            raise SecretsError(f"the Telegram bot token is empty; {HOW_TO_STORE}")
        block = config.telegram
        if chat_ids is None:
            _check_allow_list(config)
        self.config = config
        self.mode = mode or config.mode
        self.chat_ids = frozenset(block.chat_ids if chat_ids is None else chat_ids)
        if confirm_timeout_s is None:
            confirm_timeout_s = 60.0 if block is None else block.confirm_timeout_s
        self.confirm_timeout_s = confirm_timeout_s
        self.base_url = _base_url(api_url or DEFAULT_API_URL)
        self.poll_timeout_s = poll_timeout_s
        self.max_age_s = max_age_s
        self.backoff_s = backoff_s
        self.cash = cash
        self.live_trading_allowed = live_trading_allowed
        self.clock = clock
        self.username: str | None = None  # the bot's, once getMe answered
        self.handled = 0  # updates read so far
        self.error: BaseException | None = None  # why a background bot stopped, if it did
        self._token = token
        self._codes = _Codes(config.journal.with_name(config.journal.name + ".telegram"))
        self._refused: dict[int, tuple[float, int]] = {}  # chat -> (last journaled, since)
        self._offset: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, config: RunnerConfig, *, mode: str | None = None,
                    api_url: str | None = None, **options) -> TelegramControl:
        """The bot of ``config``, its token read from the secrets store."""
        if options.get("chat_ids") is None:
            _check_allow_list(config)
        return cls(config, token=bot_token(config.environment), api_url=api_url, mode=mode,
                   **options)

    def __repr__(self) -> str:  # never the token
        return f"TelegramControl({self.config.source!r}, chats={sorted(self.chat_ids)})"

    # -- running -------------------------------------------------------------------------

    def start(self) -> None:
        """Answer in a background thread (its own event loop) until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run_in_thread, name="mmats-telegram",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the background bot: its long poll is abandoned (Telegram keeps the updates
        it did not confirm) and the thread ends within about ``timeout_s``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self, stop: threading.Event | None = None) -> None:
        """Answer until ``stop`` is set (or forever); blocks. :class:`BotError` when the
        token is refused."""
        _run_coroutine(self.serve(stop or self._stop))

    def run_once(self, attempts: int = 4) -> int:
        """Answer every pending update, confirm them to the Bot API and return how many
        there were (``mmats telegram --once``). :class:`BotError` when the token is refused
        or the API stays unreachable after ``attempts`` tries."""
        return _run_coroutine(self.poll_once(attempts))

    async def serve(self, stop: threading.Event) -> None:
        """The bot's loop, for a caller's event loop: long polls until ``stop`` is set."""
        with self._logs_without_token():
            async with self._session(stop, attempts=None) as bot:
                while bot is not None and not stop.is_set():
                    updates = await self._until_stopped(stop, self._fetch(
                        bot, stop, timeout_s=self.poll_timeout_s, attempts=None))
                    for update in updates or ():
                        await self._handle(bot, update)

    async def poll_once(self, attempts: int = 4) -> int:
        """One pass over the pending updates (short polls until none is left); returns
        how many there were."""
        before = self.handled
        with self._logs_without_token():
            async with self._session(self._stop, attempts=attempts) as bot:
                while bot is not None:
                    updates = await self._fetch(bot, self._stop, timeout_s=0,
                                                attempts=attempts)
                    if not updates:
                        break  # this empty answer's offset confirmed the rest
                    for update in updates:
                        await self._handle(bot, update)
        return self.handled - before

    def _run_in_thread(self) -> None:
        try:
            self.run(self._stop)
        except BaseException as error:  # noqa: BLE001 - a background thread: keep and log it
            self.error = error
            log.error("the Telegram bot stopped: %s", self._redact(str(error)))

    # -- the Bot API ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _session(self, stop, attempts):
        """A :class:`telegram.Bot` whose token the API accepted (getMe), shut down after;
        None if ``stop`` came first."""
        import telegram

        bot = telegram.Bot(self._token, base_url=self.base_url)
        try:
            me = await self._retrying(lambda: bot.get_me(), stop, attempts, "getMe")
            if me is None:
                yield None
                return
            self.username = me.username
            log.info("Telegram bot @%s answers chats %s", me.username, sorted(self.chat_ids))
            yield bot
        finally:
            with contextlib.suppress(Exception):
                await bot.shutdown()

    async def _fetch(self, bot, stop, *, timeout_s: float, attempts):
        """The updates after the last one handled (which this call confirms)."""
        updates = await self._retrying(
            lambda: bot.get_updates(offset=self._offset, timeout=int(timeout_s),
                                    allowed_updates=["message"]),
            stop, attempts, "getUpdates")
        return updates or ()

    async def _retrying(self, call, stop, attempts, what: str, give_up=()):
        """``await call()``, retried after errors with exponential back-off (and after the
        API's flood control, as long as it asks), ``attempts`` times at most (None: until
        ``stop``); None once ``stop`` is set. A refused token ends it, as do the
        ``give_up`` errors (raised as they are)."""
        from telegram import error as api

        delay, longest = self.backoff_s
        tries = 0
        while not stop.is_set():
            tries += 1
            try:
                return await call()
            except api.InvalidToken:
                raise BotError(f"the Bot API refused the Telegram token ({what}); "
                               f"{HOW_TO_STORE}") from None
            except give_up:
                raise
            except api.RetryAfter as error:
                with warnings.catch_warnings():  # its int/timedelta deprecation notice
                    warnings.simplefilter("ignore")
                    wait = error.retry_after
                wait = wait.total_seconds() if isinstance(wait, dt.timedelta) else float(wait)
            except Exception as error:  # noqa: BLE001 - the network, the API, a bad answer
                problem = self._redact(f"{type(error).__name__}: {error}")
                if attempts is not None and tries >= attempts:
                    raise BotError(f"the Bot API at {self._redact(self.base_url)} did not "
                                   f"answer {what} after {tries} tries: {problem}") from None
                log.warning("Telegram %s failed (%s); retrying in %.3g s", what, problem,
                            delay)
                wait, delay = delay, min(delay * 2, longest)
            await self._sleep(wait, stop)
        return None

    async def _send(self, bot, chat_id: int, text: str) -> None:
        """Send ``text`` (split at the API's length limit), even while the bot stops: the
        command was carried out. A reply that cannot be sent after a few tries is logged
        and dropped."""
        from telegram import error as api

        for part in _parts(self._redact(text)):
            try:
                await self._retrying(lambda part=part: bot.send_message(chat_id, part),
                                     threading.Event(), 4, "sendMessage",
                                     give_up=(api.BadRequest, api.Forbidden))
            except (BotError, api.TelegramError) as error:
                log.warning("could not answer chat %s: %s", chat_id,
                            self._redact(str(error)))
                return

    async def _handle(self, bot, update) -> None:
        """Answer one update; whatever goes wrong, its offset moves on."""
        self._offset = update.update_id + 1
        self.handled += 1
        message = update.message
        if message is None or not message.text:
            return
        user = message.from_user
        try:
            reply = await asyncio.to_thread(
                self.answer, message.chat.id, message.text,
                user.username if user is not None else None, sent_at=message.date)
        except Exception as error:  # noqa: BLE001 - a bug must not stop the bot
            log.exception("the Telegram command %r failed", message.text[:40])
            reply = f"internal error: {type(error).__name__}: {error}; see the bot's log"
        if reply:
            await self._send(bot, message.chat.id, reply)

    async def _until_stopped(self, stop, awaitable):
        """``awaitable``'s result, or None as soon as ``stop`` is set (it is cancelled)."""
        task = asyncio.ensure_future(awaitable)
        while not task.done():
            if stop.is_set():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                return None
            await asyncio.wait({task}, timeout=0.2)
        return task.result()

    async def _sleep(self, seconds: float, stop) -> None:
        deadline = time.monotonic() + seconds
        while not stop.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(min(0.2, deadline - time.monotonic()))

    def _redact(self, text: str) -> str:
        return redact(text, {"token": self._token})

    @contextlib.contextmanager
    def _logs_without_token(self):
        """Mask the token in every record of the loggers that may see it: the library's
        and httpx's (which log the request URL, token and all) and this module's."""
        import httpx  # noqa: F401 - their loggers exist once imported
        import telegram  # noqa: F401

        guard = RedactingFilter({"token": self._token})
        names = [name for name in list(logging.root.manager.loggerDict)
                 if name.split(".")[0] in ("telegram", "httpx", "httpcore")]
        loggers = [logging.getLogger(name) for name in (*names, __name__)]
        for logger in loggers:
            logger.addFilter(guard)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(guard)

    # -- the commands --------------------------------------------------------------------

    def answer(self, chat_id: int, text: str, username: str | None = None, *,
               sent_at: dt.datetime | None = None) -> str | None:
        """The reply to ``text`` from ``chat_id``, or None (a chat not allowed: journaled,
        no reply). Errors a user can fix (an unknown model or symbol, a running tick) are
        answered with their message."""
        if chat_id not in self.chat_ids:
            self._refuse(chat_id, username, text)
            return None
        words = text.split()
        if not words or not words[0].startswith("/"):
            return "Commands start with /.\n" + HELP
        command, _, addressee = words[0][1:].partition("@")
        if addressee and self.username and addressee.lower() != self.username.lower():
            return None  # a group's command for another bot
        command, args = command.lower(), words[1:]
        age_s = None if sent_at is None else self.clock() - sent_at.timestamp()
        if age_s is not None and age_s > self.max_age_s and command not in ("help", "start"):
            return (f"not done: /{command} was sent {age_s / 60:.0f} min ago, while the bot "
                    "was not running; send it again if you still mean it")
        user = f"telegram:{username or chat_id}"
        try:
            return self._command(command, args, chat_id, user)
        except RunnerBusy:
            return f"/{command}: a tick is running right now; send it again in a few seconds"
        except MMATSError as error:
            return f"/{command}: {error}"

    def _command(self, command: str, args: list[str], chat_id: int, user: str) -> str:
        reason = "telegram"
        if command in ("help", "start"):
            return HELP
        if command == "status":
            return self._status()
        if command == "positions":
            return self._positions()
        if command in ("pause", "resume"):
            if len(args) != 1:
                return f"usage: /{command} MODEL (models: {self._models()})"
            if command == "pause":
                changed = control.pause(self.config, args[0], user=user, reason=reason)
                return (f"paused {args[0]}: {', '.join(changed) or 'no sleeve has a state yet'}"
                        " (HALTED; positions kept)")
            if self.mode == "operator":  # trading again: the same guard as `mmats live resume`
                check_can_trade(self.config, self.live_trading_allowed, self.mode)
            model = None if args[0].lower() == "all" else args[0]
            changed = control.resume_models(self.config, model, user=user, reason=reason)
            return f"resumed {args[0]}: {', '.join(changed) or 'no sleeve has a state yet'}"
        if command == "close":
            if len(args) != 1:
                return f"usage: /close SYMBOL (symbols: {', '.join(self._symbols())})"
            symbol = self._symbol(args[0])
            changed = control.close_symbol(self.config, symbol, user=user, reason=reason)
            if not changed:
                return f"closing {symbol}: no sleeve has a state yet, nothing to flatten"
            return f"closing {symbol}: {', '.join(changed)} go flat at the next bar's open"
        if command == "kill":
            code = self._codes.issue(chat_id, self.clock() + self.confirm_timeout_s)
            return ("EMERGENCY STOP: flattens every position and halts every model. To go "
                    f"ahead, within {self.confirm_timeout_s:g} s send:\n/confirm {code}")
        if command == "confirm":
            verdict = self._codes.take(chat_id, args[0] if len(args) == 1 else "",
                                       self.clock())
            if verdict != "ok":
                return verdict
            outcome = control.kill(self.config, user=user, reason=reason, mode=self.mode,
                                   cash=self.cash,
                                   live_trading_allowed=self.live_trading_allowed)
            return f"KILL: {outcome}"
        return f"unknown command /{command}.\n{HELP}"

    def _status(self) -> str:
        state = control.status(self.config)
        kill, environment = state.pop("kill_switch"), state.pop("environment")
        lines = [f"MMATS {self.mode}, {len(state)} sleeve(s), environment {environment}",
                 "kill switch: off" if kill is None else
                 f"kill switch: ON by {kill['user']} ({kill['reason'] or 'no reason'}) at "
                 f"{_when(kill['ts_ns'])}"]
        for sleeve_id, sleeve in state.items():
            if sleeve is None:
                lines.append(f"{sleeve_id}: no state yet")
                continue
            lines.append(f"{sleeve_id}: {sleeve['trading_state']}, equity "
                         f"{sleeve['equity']:,.2f}, drawdown {sleeve['drawdown_pct']:.2f}%")
        return "\n".join(lines)

    def _positions(self) -> str:
        lines, flat = [], []
        with open_journal(self.config) as journal:
            for sleeve in sleeves(self.config, 1.0):
                state = journal.load_state(sleeve.id)
                record = None if state is None else state[0]
                if record is None or record["position"] == 0:
                    flat.append(sleeve.id)
                    continue
                lines.append(f"{sleeve.id}: {sleeve.symbol} qty {record['position']:.8g} "
                             f"last {record['last_close']:.8g} equity "
                             f"{record['equity']:,.2f}")
        head = f"{len(lines)} open position(s)" + (":" if lines else "")
        tail = [f"flat: {', '.join(flat)}"] if flat else []
        return "\n".join([head, *lines, *tail])

    def _models(self) -> str:
        return ", ".join(model.id for model in self.config.models)

    def _symbols(self) -> list[str]:
        return [symbol for market in self.config.markets for symbol in market.symbols]

    def _symbol(self, text: str) -> str:
        """The configured symbol ``text`` names; a phone's lower case is forgiven."""
        matches = [s for s in self._symbols() if s.lower() == text.lower()]
        if len(matches) == 1:
            return matches[0]
        raise ConfigError(f"no market trades {text!r}; symbols: {', '.join(self._symbols())}")

    def _refuse(self, chat_id: int, username: str | None, text: str) -> None:
        """Journal a stranger's message (at most once a minute per chat, counting the
        rest); never answer it."""
        now = self.clock()
        last, quiet = self._refused.get(chat_id, (None, 0))
        if last is not None and now - last < REFUSAL_EVERY_S:
            self._refused[chat_id] = (last, quiet + 1)
            return
        self._refused[chat_id] = (now, 0)
        log.warning("refused a Telegram message from chat %s: not on the allow-list", chat_id)
        try:
            with open_journal(self.config) as journal:
                journal.append_risk_event(
                    "WARNING", "telegram", "telegram_refused",
                    f"a message from Telegram chat {chat_id} (@{username or '?'}) was refused: "
                    "the chat is not in telegram.chat_ids",
                    {"chat_id": chat_id, "username": username, "text": text[:64],
                     "refused_since_last": quiet})
        except MMATSError as error:
            log.error("could not journal the refused chat %s: %s", chat_id, error)


def run_bot(config: RunnerConfig, *, token: str, api_url: str | None = None,
            stop_event: threading.Event | None = None, once: bool = False,
            **options) -> int:
    """Run the bot of ``config`` until ``stop_event`` is set (or forever); with ``once``,
    answer the pending updates and return how many there were. ``options`` go to
    :class:`TelegramControl`.

    >>> run_bot(config, token=bot_token(config.environment), once=True)  # doctest: +SKIP
    2
    """
    bot = TelegramControl(config, token=token, api_url=api_url, **options)
    if once:
        return bot.run_once()
    bot.run(stop_event)
    return 0


def _check_allow_list(config: RunnerConfig) -> None:
    if config.telegram is None:
        raise ConfigError(f"{config.source}: telegram: is missing; add the chats allowed to "
                          "command the bot, e.g. telegram: {chat_ids: [123456789]}")


def bot_token(environment: str = "dev") -> str:
    """The bot's token from ``environment``'s namespace of the secrets store (a prod bot
    never uses a dev token); :class:`SecretsError` saying how to store it when it is not
    there."""
    fields = get_secret(SECRET_NAME, environment)
    if not fields or not fields.get("token"):
        raise SecretsError(f"no Telegram bot token for environment {environment} in the "
                           f"secrets store; {HOW_TO_STORE}")
    return fields["token"]


class _Codes:
    """The pending /kill confirmations, one per chat: a random four-digit code and when
    it expires (wall clock). Kept in a file beside the journal (mode 0600), so a /kill and
    its /confirm may come to two cron runs of ``--once``. Three wrong codes void it."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()

    def issue(self, chat_id: int, expires: float) -> str:
        code = f"{1000 + randbelow(9000)}"
        with self.lock:
            pending = self._read()
            pending[str(chat_id)] = {"code": code, "expires": expires, "wrong": 0}
            self._write(pending)
        return code

    def take(self, chat_id: int, code: str, now: float) -> str:
        """``"ok"`` (and the code is spent), else what to tell the operator; nothing done."""
        with self.lock:
            pending = self._read()
            entry = pending.get(str(chat_id))
            if entry is None:
                return "nothing to confirm: send /kill first; nothing done"
            if now > entry["expires"]:
                del pending[str(chat_id)]
                self._write(pending)
                return "that code expired; nothing done. Send /kill again"
            if code != entry["code"]:
                entry["wrong"] += 1
                if entry["wrong"] >= 3:
                    del pending[str(chat_id)]
                    self._write(pending)
                    return "wrong code, the third: it is void; nothing done. Send /kill again"
                self._write(pending)
                return "wrong code; nothing done (send /confirm with the code /kill gave)"
            del pending[str(chat_id)]
            self._write(pending)
            return "ok"

    def _read(self) -> dict:
        try:
            pending = json.loads(self.path.read_text())
            return pending if isinstance(pending, dict) else {}
        except (OSError, ValueError):
            return {}

    def _write(self, pending: dict) -> None:
        data = json.dumps(pending).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_durably(self.path, lambda handle: handle.write(data), prefix=".telegram.",
                      mode=0o600)


def _base_url(api_url: str) -> str:
    """python-telegram-bot's ``base_url`` for a Bot API server: ``<server>/bot`` (the
    library appends the token), unless it already says where the token goes."""
    if not api_url.startswith(("http://", "https://")):
        raise ConfigError(f"--api-url {api_url!r}: give the Bot API server as an http(s) URL, "
                          "e.g. https://api.telegram.org")
    if "{token}" in api_url or api_url.rstrip("/").endswith("/bot"):
        return api_url.rstrip("/") if "{token}" not in api_url else api_url
    return api_url.rstrip("/") + "/bot"


def _parts(text: str) -> list[str]:
    """``text`` in pieces the Bot API accepts, cut at line ends where possible."""
    parts = []
    while len(text) > MAX_MESSAGE_CHARS:
        cut = text.rfind("\n", 0, MAX_MESSAGE_CHARS)
        cut = cut if cut > 0 else MAX_MESSAGE_CHARS
        parts.append(text[:cut])
        text = text[cut:].lstrip("\n")
    return [*parts, text] if text else parts


def _when(ts_ns) -> str:
    if not ts_ns:
        return "?"
    return dt.datetime.fromtimestamp(ts_ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _run_coroutine(coroutine):
    """``asyncio.run`` of ``coroutine``, in a thread of its own when this thread already
    runs an event loop (Jupyter, or a host program's loop), where asyncio.run refuses."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    outcome = {}

    def run() -> None:
        try:
            outcome["value"] = asyncio.run(coroutine)
        except BaseException as error:  # noqa: BLE001 - raised again in the caller
            outcome["error"] = error

    worker = threading.Thread(target=run, name="mmats-telegram-once")
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")
