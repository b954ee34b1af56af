#!/usr/bin/env python
"""`mmats check-data`, kept under its old name: `python scripts/check_data.py --help` tells all."""

import sys

from mmats.cli.check_data import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/check_data.py"))
