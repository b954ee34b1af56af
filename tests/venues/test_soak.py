"""The soak benchmark runs in CI at its shortest (``--quick``, about 75 s): a restarting
service under every fault it injects loses no bar and doubles nothing. Its timings
(availability, recovery) are figures for the README, not asserted here."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_soak_loses_nothing_and_doubles_nothing(tmp_path):
    output = tmp_path / "soak.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "soak_runner.py"),
                          "--quick", "--output", str(output)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(output.read_text())
    assert figures["closes"] >= 10
    assert figures["lost_bars"] == 0 and figures["duplicate_bars"] == 0
    assert figures["duplicate_orders"] == 0
    assert figures["kills"] == 2 and len(figures["recovery_s"]) == 2  # both restarts ticked
    assert figures["acted_within_2s"] >= 1
    events = figures["journal_events"]
    assert events.get("stream_lost", 0) >= 2 and events.get("stream_restored", 0) >= 1
    assert figures["tracebacks"] == 0 and "Traceback" not in run.stderr
