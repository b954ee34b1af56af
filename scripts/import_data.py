#!/usr/bin/env python
"""`mmats import`, kept under its old name: `python scripts/import_data.py --help` tells all."""

import sys

from mmats.cli.import_data import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/import_data.py"))
