#!/usr/bin/env python
"""`mmats walkforward`, kept under its old name: `python scripts/walkforward.py --help` tells all."""

import sys

from mmats.cli.walkforward import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/walkforward.py"))
