"""Install, list, switch, disable and remove model packages (a zip of model.py + manifest.toml).

examples:
  mmats models add trend_filter-1.2.0.zip        # checked, lookahead-checked, compiled
  mmats models list --json
  mmats models activate trend_filter 1.1.0       # roll back to an installed version
  mmats models disable trend_filter               # runners using it fail their next tick
  mmats models enable trend_filter
  mmats models remove trend_filter --version 1.1.0
  mmats models remove trend_filter

A package's manifest names its id, version, entry point, parameter grid, defaults,
warm-up, author and the SHA-256 of model.py; `add` refuses a package whose model.py does
not match it, a malformed manifest, an unsafe zip, or a model that fails the lookahead
check on the bundled sample, and then nothing changes. A configuration uses a package by
its id (strategy: trend_filter); the next tick loads the active version, and the journal's
configuration snapshot records which version decided.

The models folder is $MMATS_MODELS, else ~/.local/share/mmats/models.

exit codes: 0 done; 2 usage or input error (a refused package: the reason is printed).
"""

from __future__ import annotations

import argparse

from mmats.cli import add_json_option, add_subcommand, command_parser, fail, print_json


def parse_args(argv=None, prog="mmats models") -> argparse.Namespace:
    parser = command_parser(prog, __doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    add = add_subcommand(parser, commands, "add", "check and install a package zip")
    add.add_argument("zip", metavar="FILE.zip")
    add.add_argument("--no-activate", action="store_true",
                     help="install the version without making it the active one")
    listing = add_subcommand(parser, commands, "list", "the installed packages")
    activate = add_subcommand(parser, commands, "activate", "make an installed version active")
    activate.add_argument("id", metavar="ID")
    activate.add_argument("version", metavar="VERSION")
    enable = add_subcommand(parser, commands, "enable", "let runners load the package again")
    disable = add_subcommand(parser, commands, "disable", "stop runners loading the package")
    remove = add_subcommand(parser, commands, "remove", "delete a package or one version")
    remove.add_argument("--version", default=None, help="only this (not active) version")
    for command in (enable, disable, remove):
        command.add_argument("id", metavar="ID")
    for command in (add, listing, activate, enable, disable, remove):
        add_json_option(command)
    return parser.parse_args(argv)


def main(argv=None, prog="mmats models") -> int:
    args = parse_args(argv, prog)
    from mmats import models
    from mmats.errors import MMATSError

    try:
        if args.command == "add":
            done = models.add(args.zip, activate=not args.no_activate)
            text = (f"{done['id']} {done['version']} is already installed" if done["unchanged"]
                    else f"installed {done['id']} {done['version']} (checked: "
                         f"{', '.join(done['checked'])}); active: {done['active']}")
        elif args.command == "list":
            done = models.list_models()
            text = "\n".join(f"{row['id']:<24} {row['active']:<10} "
                             f"{'enabled' if row['enabled'] else 'DISABLED':<9} "
                             f"versions {', '.join(row['versions'])}  {row['author']}"
                             for row in done) or "no model packages installed"
        elif args.command == "activate":
            done = models.activate(args.id, args.version)
            text = f"{args.id}: {args.version} is active"
        elif args.command in ("enable", "disable"):
            done = models.set_enabled(args.id, args.command == "enable")
            text = f"{args.id} {args.command}d"
        else:
            done = models.remove(args.id, args.version)
            text = f"removed {args.id} {args.version or '(every version)'}"
    except MMATSError as error:
        return fail(error)
    if args.json:
        print_json(done)
    else:
        print(text)
    return 0
