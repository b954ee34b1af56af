"""The package's layers, as import contracts (pyproject.toml, ``[tool.importlinter]``).

kernel (nb) <- data / strategy <- backtest <- brokers <- live / validate <- reports <- cli;
the kernel imports nothing of MMATS but ``mmats.types`` and ``mmats.units``, and no
pandas; only the broker
adapters import ccxt or oandapyV20. ``lint-imports`` says which import broke which rule.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    assert lint_imports.exists(), (
        f"{lint_imports} is missing: install the dev extra (pip install -e '.[dev]')")
    run = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
