#!/usr/bin/env python
"""`mmats sweep`, kept under its old name: `python scripts/sweep.py --help` tells all."""

import sys

from mmats.cli.sweep import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/sweep.py"))
