"""Store, list and delete venue API keys (OS keyring, or an encrypted file without one).

examples:
  mmats keys set binance                          # asks for api_key and secret
  mmats keys set oanda                            # asks for token and account_id
  mmats keys set telegram                         # asks for the chat bot's token
  mmats keys set kraken --fields api_key,secret,otp
  printf 'api_key=%s\\nsecret=%s\\n' "$KEY" "$SECRET" | mmats keys set binance --stdin
  mmats keys list --json
  mmats keys delete binance

Values are never echoed or printed: set asks with a hidden prompt, or reads field=value
lines from stdin with --stdin; list shows venues and field names only.

Where keys live: the OS keyring (service "mmats"); on a machine without a working keyring
(a headless server), or when MMATS_SECRETS_FILE names a file, an AES-GCM encrypted file
(default ~/.config/mmats/secrets.enc, mode 0600) whose passphrase comes from
MMATS_SECRETS_PASSPHRASE or a prompt. See mmats/secrets.py.

exit codes: 0 done; 1 delete found nothing stored for the venue; 2 usage or input error (a
bad option, bad stdin lines, a wrong passphrase, a damaged secrets file).
"""

from __future__ import annotations

import argparse
import json
import sys

from mmats.cli import (
    EXIT_NO,
    add_json_option,
    add_subcommand,
    command_parser,
    fail,
    print_json,
)

# Fields asked for when --fields is not given; venue differences are data.
DEFAULT_FIELDS = {"oanda": ("token", "account_id"), "telegram": ("token",)}
GENERIC_FIELDS = ("api_key", "secret")


def parse_args(argv=None, prog="mmats keys") -> argparse.Namespace:
    parser = command_parser(prog, __doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    store = add_subcommand(parser, commands, "set", "store or replace a venue's keys")
    store.add_argument("venue", metavar="VENUE")
    store.add_argument("--fields", default=None, metavar="NAME[,NAME...]",
                       help="field names to ask for (default: token,account_id for oanda, "
                            "token for telegram, api_key,secret otherwise)")
    store.add_argument("--stdin", action="store_true",
                       help="read field=value lines from stdin instead of asking")
    add_json_option(store)
    listing = add_subcommand(parser, commands, "list",
                             "venues and their field names (never values)")
    add_json_option(listing)
    delete = add_subcommand(parser, commands, "delete", "forget a venue's keys")
    delete.add_argument("venue", metavar="VENUE")
    add_json_option(delete)
    return parser.parse_args(argv)


def main(argv=None, prog="mmats keys") -> int:
    args = parse_args(argv, prog)
    from mmats import secrets

    try:
        if args.command == "set":
            fields = _read_stdin(args) if args.stdin else _prompt(args)
            secrets.set_secret(args.venue, fields)
            done = {"stored": args.venue, "fields": list(fields),
                    "backend": secrets.describe_backend()}
            _say(done, f"stored {', '.join(fields)} for {args.venue} in {done['backend']}",
                 args.json)
        elif args.command == "list":
            _list(secrets, as_json=args.json)
        else:
            if not secrets.delete_secret(args.venue):
                print(f"error: nothing is stored for {args.venue} in "
                      f"{secrets.describe_backend()}", file=sys.stderr)
                return EXIT_NO
            where = secrets.describe_backend()
            _say({"deleted": args.venue, "backend": where},
                 f"deleted {args.venue} from {where}", args.json)
    except secrets.SecretsError as exc:
        return fail(exc)
    return 0


def _say(value: dict, text: str, as_json: bool) -> None:
    if as_json:
        print_json(value)
    else:
        print(text)


def _wanted(args) -> list[str]:
    if args.fields:
        return [name.strip() for name in args.fields.split(",") if name.strip()]
    return list(DEFAULT_FIELDS.get(args.venue.lower(), GENERIC_FIELDS))


def _prompt(args) -> dict[str, str]:
    from mmats.secrets import ask_hidden

    hint = "pipe field=value lines in with --stdin"
    return {name: ask_hidden(f"{args.venue} {name}: ", hint).strip() for name in _wanted(args)}


def _read_stdin(args) -> dict[str, str]:
    """``field=value`` lines; blank lines and ``#`` comments skipped. Errors name the line
    number and the field, never the value."""
    from mmats.secrets import SecretsError

    fields = {}
    for number, line in enumerate(sys.stdin.read().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, equals, value = text.partition("=")
        if not equals or not name.strip():
            raise SecretsError(f"stdin line {number} is not field=value; nothing was stored")
        if name.strip() in fields:
            raise SecretsError(f"stdin gives field {name.strip()!r} twice; nothing was stored")
        fields[name.strip()] = value.strip()
    if args.fields:
        missing = [name for name in _wanted(args) if name not in fields]
        extra = [name for name in fields if name not in _wanted(args)]
        if missing or extra:
            raise SecretsError(f"stdin fields do not match --fields (missing: "
                               f"{', '.join(missing) or 'none'}; unexpected: "
                               f"{', '.join(extra) or 'none'}); nothing was stored")
    if not fields:
        raise SecretsError("stdin held no field=value lines; nothing was stored")
    return fields


def _list(secrets, as_json: bool) -> None:
    venues = secrets.list_fields()
    where = secrets.describe_backend()
    if as_json:
        print(json.dumps({"backend": where, "venues": venues}, indent=2))
        return
    print(f"{len(venues)} venue(s) in {where}")
    for venue, names in venues.items():
        print(f"  {venue}: {', '.join(names)}")

