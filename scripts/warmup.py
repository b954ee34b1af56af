#!/usr/bin/env python
"""`mmats warmup`, also as a script: `python scripts/warmup.py --help` tells all."""

import sys

from mmats.cli.warmup import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/warmup.py"))
