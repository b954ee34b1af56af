#!/usr/bin/env python
"""`mmats dashboard` under a script's name: `python scripts/dashboard.py --help` tells all."""

import sys

from mmats.cli.dashboard import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/dashboard.py"))
