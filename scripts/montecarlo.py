#!/usr/bin/env python
"""`mmats montecarlo`, kept under its old name: `python scripts/montecarlo.py --help` tells all."""

import sys

from mmats.cli.montecarlo import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/montecarlo.py"))
