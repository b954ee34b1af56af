#!/usr/bin/env python
"""`mmats models` as a script: `python scripts/models.py add FILE.zip`, `--help` tells all."""

import sys

from mmats.cli.models import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/models.py"))
