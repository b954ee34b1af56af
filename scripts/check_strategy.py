#!/usr/bin/env python
"""`mmats check-strategy`, kept under its old name: `python scripts/check_strategy.py --help` tells all."""

import sys

from mmats.cli.check_strategy import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/check_strategy.py"))
