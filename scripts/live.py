#!/usr/bin/env python
"""`mmats live`, kept under its old name: `python scripts/live.py --help` tells all."""

import sys

from mmats.cli.live import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/live.py"))
