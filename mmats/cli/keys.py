"""Store, list and delete venue API keys (OS keyring, or an encrypted file without one).

examples:
  mmats keys set binance                          # asks for api_key and secret (dev)
  mmats keys set binance --env prod               # the keys prod configurations read
  mmats keys set oanda --env test                 # asks for token and account_id
  mmats keys set telegram                         # asks for the chat bot's token
  mmats keys set kraken --fields api_key,secret,otp
  printf 'api_key=%s\\nsecret=%s\\n' "$KEY" "$SECRET" | mmats keys set binance --stdin
  mmats keys list --env prod --json
  mmats keys delete binance --env prod

Values are never echoed or printed: set asks with a hidden prompt, or reads field=value
lines from stdin with --stdin; list shows venues and field names only.

Environments: keys belong to one environment (--env dev, test or prod; default
$MMATS_ENVIRONMENT, else dev), and a configuration reads only its own environment's
(environment: in the file), so prod keys are never read by a dev configuration, nor the
reverse. Keys stored before environments existed count as dev only: store them again
with --env prod for a prod configuration. The environment variables carry it too:
MMATS_PROD_BINANCE_API_KEY, MMATS_TEST_OANDA_TOKEN; the names without it
(MMATS_BINANCE_API_KEY) count as dev only.

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
import os
import sys

from mmats.cli import (
    EXIT_NO,
    add_json_option,
    add_subcommand,
    command_parser,
    fail,
    print_json,
)
from mmats.secrets import DEFAULT_ENVIRONMENT, ENVIRONMENTS

ENVIRONMENT_ENV = "MMATS_ENVIRONMENT"  # --env's default: a shell or unit of one environment

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
    listing = add_subcommand(parser, commands, "list",
                             "venues and their field names (never values)")
    delete = add_subcommand(parser, commands, "delete", "forget a venue's keys")
    delete.add_argument("venue", metavar="VENUE")
    for command in (store, listing, delete):
        command.add_argument("--env", choices=ENVIRONMENTS, default=None,
                             dest="environment",
                             help=f"the environment whose keys these are (default: "
                                  f"${ENVIRONMENT_ENV}, else dev, which also holds the keys "
                                  "stored before environments)")
        add_json_option(command)
    return parser.parse_args(argv)


def main(argv=None, prog="mmats keys") -> int:
    args = parse_args(argv, prog)
    from mmats import secrets

    try:
        environment = args.environment or _default_environment()
        named = f"{args.venue}{_in(environment)}" if args.command != "list" else ""
        if args.command == "set":
            fields = _read_stdin(args) if args.stdin else _prompt(args)
            secrets.set_secret(args.venue, fields, environment)
            done = {"stored": args.venue, "fields": list(fields), "environment": environment,
                    "backend": secrets.describe_backend()}
            _say(done, f"stored {', '.join(fields)} for {named} in {done['backend']}",
                 args.json)
        elif args.command == "list":
            _list(secrets, environment, as_json=args.json)
        else:
            if not secrets.delete_secret(args.venue, environment):
                print(f"error: nothing is stored for {named} in "
                      f"{secrets.describe_backend()}", file=sys.stderr)
                return EXIT_NO
            where = secrets.describe_backend()
            _say({"deleted": args.venue, "environment": environment, "backend": where},
                 f"deleted {named} from {where}", args.json)
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


def _default_environment() -> str:
    """``$MMATS_ENVIRONMENT`` (checked), else dev."""
    from mmats.secrets import SecretsError

    environment = os.environ.get(ENVIRONMENT_ENV) or DEFAULT_ENVIRONMENT
    if environment not in ENVIRONMENTS:
        raise SecretsError(f"{ENVIRONMENT_ENV}={environment!r} is not one of "
                           f"{', '.join(ENVIRONMENTS)}; nothing was done")
    return environment


def _in(environment: str) -> str:
    """How a venue's environment is named in a message: nothing for dev (as before
    environments), `` (environment prod)`` for the others."""
    return "" if environment == DEFAULT_ENVIRONMENT else f" (environment {environment})"


def _list(secrets, environment: str, as_json: bool) -> None:
    """One environment's venues and field names on stdout; on stderr, which environment
    that is and which others hold keys (names only)."""
    venues = secrets.list_fields(environment)
    where = secrets.describe_backend()
    others = {name: listed for name, listed in secrets.list_environments().items()
              if name != environment and listed}
    note = (f"environment {environment}"
            + (" (it holds the keys stored before environments existed: they count as dev "
               "only)" if environment == DEFAULT_ENVIRONMENT else "")
            + "; " + ("; ".join(f"{name} holds {', '.join(listed)}"
                                for name, listed in others.items()) or "no other holds keys")
            + (" (list with --env)" if others else ""))
    if as_json:
        print(json.dumps({"backend": where, "environment": environment, "venues": venues,
                          "other_environments": others, "note": note}, indent=2))
        return
    print(f"{len(venues)} venue(s){_in(environment)} in {where}")
    for venue, names in venues.items():
        print(f"  {venue}: {', '.join(names)}")
    print(f"note: {note}", file=sys.stderr)

