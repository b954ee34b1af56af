"""Add, list, remove dashboard accounts and change their passwords.

examples:
  mmats dashboard user add alice --role operator     # asks for the password twice
  mmats dashboard user add rita --role viewer
  printf '%s\\n' "$PASSWORD" | mmats dashboard user add ci --role viewer --password-stdin
  mmats dashboard user list --json
  mmats dashboard user passwd alice
  mmats dashboard user remove rita

A viewer reads every view; an operator may also act (pause, resume, close, manual orders,
the emergency stop). Passwords have at least 12 characters; they are read without echo
from the terminal (or, with --password-stdin, as one line from stdin) and never printed.
They are kept hashed with scrypt in $MMATS_USERS_FILE, default dashboard_users.json beside
the secrets file (~/.config/mmats/), mode 0600, never in the configuration. A running
dashboard reads the accounts at every login.

exit codes: 0 done; 1 remove found no such account; 2 usage or input error (a bad name,
role or password, passwords that differ, an unknown account for passwd, a damaged
accounts file).
"""

from __future__ import annotations

import argparse
import json
import sys

from mmats.errors import MMATSError

# The exit codes of every mmats command (mmats.cli, a layer above this one, names them).
EXIT_OK, EXIT_NO, EXIT_INPUT = 0, 1, 2


def main(argv=None, prog="mmats dashboard user") -> int:
    """``mmats dashboard user ...``: parse ``argv`` and run the command."""
    head, _, rest = __doc__.strip().partition("\n\n")
    parser = argparse.ArgumentParser(prog=prog, description=head, epilog=rest,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_actions(parser, parser.add_subparsers(dest="user_command", required=True,
                                               metavar="{add,list,remove,passwd}"))
    return run_user_command(parser.parse_args(argv))


def add_user_commands(subparsers) -> argparse.ArgumentParser:
    """Add ``user`` with its ``add``, ``list``, ``remove`` and ``passwd`` to a parser's
    ``subparsers``; :func:`run_user_command` runs what was parsed. Returns the ``user``
    parser.

    >>> parser = argparse.ArgumentParser(prog="mmats dashboard")
    >>> _ = add_user_commands(parser.add_subparsers(dest="command"))
    >>> parser.parse_args(["user", "list", "--json"]).user_command
    'list'
    """
    head, _, rest = __doc__.strip().partition("\n\n")
    user = subparsers.add_parser("user", help="dashboard accounts", description=head,
                                 epilog=rest,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_actions(user, user.add_subparsers(dest="user_command", required=True,
                                           metavar="{add,list,remove,passwd}"))
    return user


def run_user_command(args: argparse.Namespace) -> int:
    """Run a parsed ``user`` command; errors print one line on stderr and return 2 (no
    traceback)."""
    from mmats.console import users

    try:
        if args.user_command == "add":
            return _add(users, args)
        if args.user_command == "list":
            return _list(users, args)
        if args.user_command == "passwd":
            return _passwd(users, args)
        return _remove(users, args)
    except MMATSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT


def _add_actions(parser: argparse.ArgumentParser, commands) -> None:
    def action(name: str, text: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=text, description=text, epilog=parser.epilog,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
        command.add_argument("--json", action="store_true",
                             help="print one JSON object on stdout (never a password or hash)")
        return command

    add = action("add", "create an account")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--role", required=True, choices=("viewer", "operator"),
                     help="viewer: reads everything; operator: may also act")
    add.add_argument("--replace", action="store_true",
                     help="replace an existing account of that name (new role and password)")
    _password_option(add)
    action("list", "the accounts: name, role, created, disabled (never a hash)")
    remove = action("remove", "delete an account")
    remove.add_argument("name", metavar="NAME")
    passwd = action("passwd", "change an account's password")
    passwd.add_argument("name", metavar="NAME")
    _password_option(passwd)


def _password_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password as one line from stdin instead of asking "
                        "twice on the terminal (for scripts)")


def _add(users, args) -> int:
    users.check_name(args.name)
    if not args.replace and any(user["name"] == args.name for user in users.list_users()):
        raise users.UsersError(f"{users.users_file()}: an account {args.name!r} exists "
                               "already; pass --replace, or use 'user passwd' to change its "
                               "password")
    password = _password(users, args, f"Password for {args.name}: ")
    user = users.add_user(args.name, args.role, password, replace=args.replace)
    _say(args, {"added": user.name, "role": user.role, "file": str(users.users_file())},
         f"added {user.role} {user.name} to {users.users_file()}")
    return EXIT_OK


def _passwd(users, args) -> int:
    users.check_name(args.name)
    if not any(user["name"] == args.name for user in users.list_users()):
        raise users.UsersError(f"{users.users_file()}: there is no account {args.name!r}; "
                               "add it with 'user add'")
    password = _password(users, args, f"New password for {args.name}: ")
    users.set_password(args.name, password)
    _say(args, {"changed": args.name, "file": str(users.users_file())},
         f"changed the password of {args.name} in {users.users_file()}")
    return EXIT_OK


def _remove(users, args) -> int:
    if not users.remove_user(args.name):
        print(f"error: there is no account {args.name!r} in {users.users_file()}",
              file=sys.stderr)
        return EXIT_NO
    _say(args, {"removed": args.name, "file": str(users.users_file())},
         f"removed {args.name} from {users.users_file()}")
    return EXIT_OK


def _list(users, args) -> int:
    accounts = users.list_users()
    where = str(users.users_file())
    if args.json:
        print(json.dumps({"file": where, "users": accounts}, indent=2))
        return EXIT_OK
    print(f"{len(accounts)} account(s) in {where}")
    width = max([len(account["name"]) for account in accounts] + [4])
    for account in accounts:
        state = "  disabled" if account["disabled"] else ""
        print(f"  {account['name']:<{width}}  {account['role']:<8}  created "
              f"{account['created']}{state}")
    return EXIT_OK


def _password(users, args, prompt: str) -> str:
    """The new password: one line of stdin with --password-stdin, else asked twice on the
    terminal without echo. Checked against the rules before anything is written."""
    if args.password_stdin:
        lines = sys.stdin.read().splitlines()
        if len(lines) != 1:
            raise users.UsersError("--password-stdin: give the password as exactly one line "
                                   f"on stdin (got {len(lines)}); nothing was changed")
        return users.check_password(lines[0])
    from mmats.secrets import ask_hidden

    hint = "pipe it in with --password-stdin"
    password = users.check_password(ask_hidden(prompt, hint))
    if ask_hidden("Repeat it: ", hint) != password:
        raise users.UsersError("the two passwords differ; nothing was changed")
    return password


def _say(args, value: dict, text: str) -> None:
    print(json.dumps(value) if args.json else text)
