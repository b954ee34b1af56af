#!/usr/bin/env python
"""Store, list and delete venue API keys (OS keyring, or an encrypted file without one).

    python scripts/keys.py set binance                  # asks for api_key and secret
    python scripts/keys.py set oanda                    # asks for token and account_id
    python scripts/keys.py set kraken --fields api_key,secret,otp
    printf 'api_key=%s\\nsecret=%s\\n' "$KEY" "$SECRET" | python scripts/keys.py set binance --stdin
    python scripts/keys.py list
    python scripts/keys.py delete binance

Values are never echoed or printed: set asks with a hidden prompt, or reads field=value
lines from stdin with --stdin; list shows venues and field names only.

Where keys live: the OS keyring (service "mmats"); on a machine without a working keyring
(a headless server), or when MMATS_SECRETS_FILE names a file, an AES-GCM encrypted file
(default ~/.config/mmats/secrets.enc, mode 0600) whose passphrase comes from
MMATS_SECRETS_PASSPHRASE or a prompt. See mmats/secrets.py.

This script is keys.py, not secrets.py: a scripts/secrets.py would be imported in place of
Python's own secrets module (which numpy imports) by every script in this folder.

Exit codes: 0 done, 1 error (wrong passphrase, damaged file, unknown venue), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Fields asked for when --fields is not given; venue differences are data.
DEFAULT_FIELDS = {"oanda": ("token", "account_id")}
GENERIC_FIELDS = ("api_key", "secret")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    store = commands.add_parser("set", help="store or replace a venue's keys")
    store.add_argument("venue", metavar="VENUE")
    store.add_argument("--fields", default=None, metavar="NAME[,NAME...]",
                       help="field names to ask for (default: token,account_id for oanda, "
                            "api_key,secret otherwise)")
    store.add_argument("--stdin", action="store_true",
                       help="read field=value lines from stdin instead of asking")
    listing = commands.add_parser("list", help="venues and their field names (never values)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    delete = commands.add_parser("delete", help="forget a venue's keys")
    delete.add_argument("venue", metavar="VENUE")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmats import secrets

    try:
        if args.command == "set":
            fields = _read_stdin(args) if args.stdin else _prompt(args)
            secrets.set_secret(args.venue, fields)
            print(f"stored {', '.join(fields)} for {args.venue} in "
                  f"{secrets.describe_backend()}")
        elif args.command == "list":
            _list(secrets, as_json=args.json)
        else:
            if not secrets.delete_secret(args.venue):
                print(f"error: nothing is stored for {args.venue} in "
                      f"{secrets.describe_backend()}", file=sys.stderr)
                return 1
            print(f"deleted {args.venue} from {secrets.describe_backend()}")
    except secrets.SecretsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
