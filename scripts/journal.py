#!/usr/bin/env python
"""`mmats journal`, kept under its old name: `python scripts/journal.py --help` tells all."""

import sys

from mmats.cli.journal import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/journal.py"))
