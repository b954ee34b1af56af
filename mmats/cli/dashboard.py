"""The operator console: a local web dashboard over a runner's journal, and its accounts.

examples:
  mmats dashboard user add alice --role operator     # asks for a password twice
  mmats dashboard user add risk --role viewer
  mmats dashboard --config configs/paper_multi_market.yaml   # http://127.0.0.1:8050
  mmats dashboard --config FILE --mode operator --telegram   # kills act at the venues; chat control too
  mmats dashboard user list --json
  mmats dashboard --config FILE --port 0 --json           # prints {"url": ...} once it listens

The dashboard reads the configuration's journal (read-only), its candle store and the
research reports (--reports, default ./reports), and updates each open page as the runner
journals new rows. Its views: Portfolio, Positions & orders, Strategies, Risk, Market, Logs,
Research, Settings. Operators may pause, resume and close, place a manual order (through the
runner's own risk gates) and press the emergency stop (the same kill as `mmats live kill`);
viewers only read. Every action and every login is journaled with the user.

It listens on 127.0.0.1 only. To reach it from another machine, do not open it to the
network: use an SSH tunnel (ssh -L 8050:127.0.0.1:8050 mini-pc) or a VPN, or put a TLS
proxy (Caddy, nginx) in front of it. --host with any other address needs --allow-remote,
and then the session cookie is only ever sent over HTTPS (the proxy's).

Accounts are kept hashed (scrypt) in $MMATS_USERS_FILE, default dashboard_users.json beside
the secrets file (~/.config/mmats/), never in the configuration.

exit codes: 0 ok (the dashboard stopped cleanly); 1 the command was refused (no account to
log in with); 2 usage or input error (a bad option, a missing or bad configuration, a port
in use).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmats.cli import EXIT_NO, add_json_option, command_parser, fail, print_json
from mmats.errors import ConfigError, MMATSError

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def main(argv=None, prog="mmats dashboard") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "user":
        from mmats.console.user_cli import main as user_main

        return user_main(argv[1:], prog=f"{prog} user")
    parser = command_parser(prog, __doc__)
    parser.add_argument("--config", required=True, help="runner configuration (YAML)")
    parser.add_argument("--mode", choices=["advisory", "paper", "operator"],
                        help="the mode the runner runs in, if not the configuration's (a "
                        "kill acts at the venues in operator mode)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; anything else needs "
                        "--allow-remote)")
    parser.add_argument("--port", type=_port, default=8050,
                        help="port (default 8050; 0: any free one)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="listen on a non-loopback address: only behind a VPN or a TLS "
                        "proxy (the cookie then needs HTTPS)")
    parser.add_argument("--reports", default="reports",
                        help="folder of the research reports (default ./reports)")
    parser.add_argument("--cash", type=float, default=10_000.0,
                        help="starting cash of each paper account, as the runner's (10000)")
    parser.add_argument("--i-understand-live-trading", action="store_true",
                        help="let manual orders reach a real venue (operator mode, prod)")
    parser.add_argument("--telegram", action="store_true",
                        help="also answer the Telegram bot in this process (token from the "
                        "secrets store, chat ids from the configuration's telegram: block)")
    parser.add_argument("--telegram-api-url", metavar="URL",
                        help="with --telegram: the Bot API's address (default Telegram's; a "
                        "local server for tests)")
    parser.add_argument("--insecure-cookie", action="store_true",
                        help="send the session cookie without the Secure flag (for a browser "
                        "that refuses Secure cookies over http://127.0.0.1)")
    add_json_option(parser)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except MMATSError as error:
        return fail(error)
    except OSError as error:  # the port is taken, the address is not ours
        return fail(ConfigError(f"cannot listen on {args.host}:{args.port}: {error.strerror}"))


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: give 0 to 65535")
    return port


def _run(args) -> int:
    from mmats.console.app import ConsoleSettings, serve
    from mmats.console.users import list_users
    from mmats.live.config import check_can_trade, load_config

    remote = args.host not in LOOPBACK
    if remote and not args.allow_remote:
        raise ConfigError(
            f"--host {args.host} would open the dashboard to the network; it is meant for "
            "this machine only. Reach it through an SSH tunnel or a VPN, or behind a TLS "
            "proxy, and pass --allow-remote if you really mean to listen there")
    config = load_config(args.config)
    mode = args.mode or config.mode
    if args.i_understand_live_trading:
        check_can_trade(config, True, mode)
    if not list_users():
        print("error: no dashboard account yet: create one with "
              "'mmats dashboard user add NAME --role operator'", file=sys.stderr)
        return EXIT_NO
    settings = ConsoleSettings(config=config, mode=mode, reports_dir=Path(args.reports),
                               secure_cookies=remote or not args.insecure_cookie,
                               cash=args.cash,
                               live_trading_allowed=args.i_understand_live_trading)
    extras = []
    if args.telegram:
        from mmats.console.telegram import TelegramControl

        extras.append(TelegramControl.from_config(
            config, mode=mode, api_url=args.telegram_api_url, cash=args.cash,
            live_trading_allowed=args.i_understand_live_trading))

    def ready(url: str) -> None:
        if args.json:
            print_json({"url": url, "journal": str(config.journal), "mode": mode})
            sys.stdout.flush()
        else:
            print(f"MMATS dashboard on {url} (journal {config.journal}); Ctrl-C stops it",
                  flush=True)

    serve(settings, host=args.host, port=args.port, ready=ready, extras=extras)
    return 0


if __name__ == "__main__":
    sys.exit(main())
