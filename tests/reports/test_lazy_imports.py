"""matplotlib stays out of the walk-forward's own process when every chart is cached: the
report modules import it only to draw, and the PDF is drawn by the forked worker."""

import json
import os
import re
import subprocess

import numpy as np
import pytest

from mmats.reports import charts
from mmats.reports.render import Chart

QUICK = ["--data", "nasdaq:GOOG:1d", "--grid", "fast=5|10|20,slow=30|60", "--mc-runs", "50"]
STAMPS = re.compile(r"\d{8}T\d{6}Z|\d{4}-\d\d-\d\d \d\d:\d\d UTC")
PROBE = ("import json, sys\n"
         "from mmats.cli.walkforward import main\n"
         "code = main(sys.argv[1:])\n"
         "loaded = sorted(m for m in ('matplotlib', 'quantstats') if m in sys.modules)\n"
         "print(json.dumps({'code': code, 'loaded': loaded}), file=sys.stderr)\n")


def run_walkforward(python, cache, out, *flags) -> dict:
    """One fresh process of the command; what it loaded (not its workers)."""
    env = {**os.environ, "MMATS_CACHE_DIR": str(cache)}
    done = subprocess.run([python, "-c", PROBE, *QUICK, "--json", "--reports", str(out),
                           *flags], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stderr.strip().splitlines()[-1])
    assert found["code"] == 0
    found["reports"] = json.loads(done.stdout)["reports"]
    return found


@pytest.fixture(scope="module")
def cache(python, tmp_path_factory):
    """A cache of this module's own, warmed by a first run (which drew the charts and the
    tearsheet here, so it loaded matplotlib)."""
    folder = tmp_path_factory.mktemp("cache")
    first = run_walkforward(python, folder, tmp_path_factory.mktemp("first"))
    assert "matplotlib" in first["loaded"]
    return folder


def same_text(path) -> str:
    """A report's text without what differs from run to run: the time it was generated
    and the time in the files' names."""
    with open(path, encoding="utf-8") as file:
        return STAMPS.sub("<stamp>", file.read())


def pdf_pages(path) -> list[str]:
    import pypdf  # a dev dependency

    return [STAMPS.sub("<stamp>", page.extract_text()) for page in pypdf.PdfReader(path).pages]


def test_report_modules_import_no_matplotlib(python):
    probe = ("import sys, mmats.plots, mmats.reports.charts, mmats.reports.render, "
             "mmats.reports.research_report, mmats.reports.tearsheet, "
             "mmats.reports.pdf_worker, mmats.cli.walkforward; "
             "print('matplotlib' in sys.modules)")
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_warm_walkforward_leaves_matplotlib_to_the_pdf_worker(python, cache, tmp_path):
    second = run_walkforward(python, cache, tmp_path)
    assert sorted(second["reports"]) == ["html", "pdf", "tearsheet"]
    assert second["loaded"] == []  # the PDF was still written, by the worker
    pdf = second["reports"]["pdf"]
    with open(pdf, "rb") as file:
        assert file.read(5) == b"%PDF-"
    fresh = run_walkforward(python, cache, tmp_path / "fresh", "--no-cache")  # drawn here
    assert "matplotlib" in fresh["loaded"]
    for kind in ("html", "tearsheet"):  # the cached parts are what drawing afresh gives
        assert same_text(second["reports"][kind]) == same_text(fresh["reports"][kind])
    assert pdf_pages(second["reports"]["pdf"]) == pdf_pages(fresh["reports"]["pdf"])


def test_without_a_worker_the_pdf_is_drawn_here(python, cache, tmp_path):
    here = run_walkforward(python, cache, tmp_path, "--jobs", "1")
    assert "matplotlib" in here["loaded"]  # --jobs 1: no worker, the PDF is drawn here


def test_a_chart_draws_after_a_lazy_import(tmp_path, monkeypatch):
    monkeypatch.setenv("MMATS_CACHE_DIR", str(tmp_path))
    chart = Chart.drawn_by(charts.histogram, np.linspace(0.0, 1.0, 20), title="t",
                           xlabel="x")
    assert chart.render(cache=False).startswith(b"\x89PNG")
