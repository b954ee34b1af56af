"""The Telegram bot: /status, /positions, /pause, /resume, /close and /kill from a phone.

examples:
  mmats keys set telegram                               # the token BotFather gave you
  mmats telegram --config configs/paper_multi_market.yaml   # answers until Ctrl-C
  mmats telegram --config FILE --once --json            # answer what is pending, exit (cron)
  mmats telegram --config FILE --api-url http://127.0.0.1:8081   # another Bot API server

Only the chats listed in the configuration's telegram: block are answered:

  telegram: {chat_ids: [123456789, -100987654321], confirm_timeout_s: 60}

(a private chat's id is the user's; a group's is negative). Messages from any other chat
get no reply and are journaled as a telegram_refused risk event. /kill answers with a
one-time code; /confirm CODE within confirm_timeout_s then kills, as `mmats live kill`
does. Every action is journaled with the user telegram:<username>. The token is read from
the secrets store (OS keyring, or the encrypted file of MMATS_SECRETS_FILE) and never
printed. The same bot can run inside the dashboard: `mmats dashboard --telegram`.

exit codes: 0 done (stopped by Ctrl-C or SIGTERM, or --once answered what was pending); 1
the Bot API refused the token or could not be reached; 2 usage or input error (a bad
option, a missing or bad configuration, no telegram: block, no token stored).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading

from mmats.cli import EXIT_NO, add_json_option, command_parser, fail, print_json
from mmats.errors import MMATSError


def main(argv=None, prog="mmats telegram") -> int:
    parser = command_parser(prog, __doc__)
    parser.add_argument("--config", required=True, help="runner configuration (YAML)")
    parser.add_argument("--mode", choices=["advisory", "paper", "operator"],
                        help="the mode the runner runs in, if not the configuration's (a "
                        "kill acts at the venues in operator mode)")
    parser.add_argument("--api-url", metavar="URL",
                        help="the Bot API server (default https://api.telegram.org)")
    parser.add_argument("--once", action="store_true",
                        help="answer the pending messages, then exit (for cron)")
    parser.add_argument("--cash", type=float, default=10_000.0,
                        help="starting cash of each paper account, as the runner's (10000)")
    parser.add_argument("--i-understand-live-trading", action="store_true",
                        help="let /resume restart trading on a real venue (operator mode)")
    add_json_option(parser)
    args = parser.parse_args(argv)
    args.stdout = sys.stdout  # with --json, only the JSON object goes here
    try:
        if not args.json:
            return _run(args)
        with contextlib.redirect_stdout(sys.stderr):  # the console notifier's lines
            return _run(args)
    except MMATSError as error:
        from mmats.console.telegram import BotError

        return fail(error, EXIT_NO if isinstance(error, BotError) else 2)


def _run(args) -> int:
    from mmats.console.telegram import TelegramControl
    from mmats.live.config import load_config

    config = load_config(args.config)
    bot = TelegramControl.from_config(config, mode=args.mode, api_url=args.api_url,
                                      cash=args.cash,
                                      live_trading_allowed=args.i_understand_live_trading)
    _log_to_stderr(quiet=args.once)
    if args.once:
        handled = bot.run_once()
    else:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        if not args.json:
            print(f"MMATS Telegram bot for {config.source} (chats "
                  f"{', '.join(map(str, sorted(bot.chat_ids)))}); Ctrl-C stops it",
                  file=sys.stderr, flush=True)
        try:
            bot.run(stop)
        except KeyboardInterrupt:
            pass
        handled = bot.handled
    if args.json:
        print_json({"updates": handled, "bot": bot.username, "mode": bot.mode},
                   file=args.stdout)
    elif args.once:
        print(f"answered {handled} message(s)" + (f" as @{bot.username}" if bot.username
                                                  else ""))
    return 0


def _log_to_stderr(quiet: bool) -> None:
    """The bot's warnings (and, running on, its start) on stderr; httpx's line per request
    only when asked for by the environment's own logging setup."""
    if logging.getLogger().handlers:
        return
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
