#!/usr/bin/env python
"""`mmats fetch`, kept under its old name: `python scripts/fetch_data.py --help` tells all."""

import sys

from mmats.cli.fetch_data import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/fetch_data.py"))
