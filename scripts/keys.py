#!/usr/bin/env python
"""`mmats keys`, kept under its old name: `python scripts/keys.py --help` tells all."""

import sys

from mmats.cli.keys import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/keys.py"))
