"""The ``mmats`` command: one entry point, a subcommand for each job.

    mmats walkforward                  # the research report on the shipped sample data
    mmats backtest --data bittrex:ETH/BTC:5m --params fast=10,slow=50 --json
    mmats live --config my.yaml --once
    mmats COMMAND --help               # options, examples and exit codes of one command

Each subcommand is a module of :mod:`mmats.cli` with ``main(argv, prog)``; the
``scripts/*.py`` files call the same functions, so ``python scripts/walkforward.py`` and
``mmats walkforward`` are one program.
"""

from __future__ import annotations

import importlib
import sys

from mmats.cli import EXIT_CODES, EXIT_INPUT

# command -> module of mmats.cli, in the order a new user meets them
COMMANDS = {
    "walkforward": "walkforward",
    "backtest": "backtest",
    "sweep": "sweep",
    "montecarlo": "montecarlo",
    "check-strategy": "check_strategy",
    "check-data": "check_data",
    "import": "import_data",
    "fetch": "fetch_data",
    "live": "live",
    "journal": "journal",
    "keys": "keys",
    "dashboard": "dashboard",
    "telegram": "telegram_bot",
    "warmup": "warmup",
    "models": "models",
}


def command_module(name: str):
    """The module behind ``mmats NAME`` (``check_data`` and ``import_data``, the scripts'
    spellings, are accepted too), or None."""
    module = COMMANDS.get(name) or (name if name in COMMANDS.values() else None)
    return None if module is None else importlib.import_module(f"mmats.cli.{module}")


def overview() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: mmats COMMAND [options]      (mmats COMMAND --help for one command)", "",
             "commands:"]
    for name in COMMANDS:
        summary = (command_module(name).__doc__ or "").strip().split("\n")[0]
        lines.append(f"  {name:{width}s}  {summary}")
    lines += ["", "examples:", "  mmats walkforward --json",
              "  mmats backtest --strategy ema_cross --data bittrex:ETH/BTC:5m --plot eq.png",
              "  mmats check-data --data my_candles.csv", "", EXIT_CODES]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(overview(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else EXIT_INPUT
    if argv[0] == "--version":
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"mmats {version('mmats')}")
        except PackageNotFoundError:
            print("mmats (not installed: run from a source folder)")
        return 0
    module = command_module(argv[0])
    if module is None:
        print(f"mmats: unknown command {argv[0]!r}; the commands are "
              f"{', '.join(COMMANDS)} (mmats --help)", file=sys.stderr)
        return EXIT_INPUT
    return module.main(argv[1:], prog=f"mmats {argv[0]}")


if __name__ == "__main__":
    sys.exit(main())
