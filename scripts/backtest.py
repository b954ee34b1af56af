#!/usr/bin/env python
"""`mmats backtest`, kept under its old name: `python scripts/backtest.py --help` tells all."""

import sys

from mmats.cli.backtest import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/backtest.py"))
