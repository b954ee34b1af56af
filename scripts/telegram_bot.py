#!/usr/bin/env python
"""`mmats telegram`, as a script: `python scripts/telegram_bot.py --help` tells all."""

import sys

from mmats.cli.telegram_bot import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/telegram_bot.py"))
