"""The PDF written by a process forked before the research (mmats.reports.pdf_worker)."""

import os
import pickle
import subprocess

import pandas as pd
import pytest
from matplotlib.figure import Figure

from mmats.reports.pdf_worker import PdfWorker, start_pdf_worker
from mmats.reports.render import Chart, Document, Heading, Section, Table, Text, write_pdf

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the worker forks")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """A cache of rendered parts of each test's own (the PDF's parts are cached too)."""
    monkeypatch.setenv("MMATS_CACHE_DIR", str(tmp_path / "cache"))


def small_document() -> Document:
    figure = Figure(figsize=(4, 2))
    figure.add_subplot().plot([1, 3, 2])
    chart = Chart(figure, caption="a line")
    chart.render()
    table = Table(pd.DataFrame({"fold": ["0", "1"], "sharpe": ["1.25", "-0.40"]}), "folds")
    return Document(title="A report", subtitle="two folds", footer="the end", sections=[
        Section("one", "First", [Heading("numbers"), Text("some words", emphasis=True),
                                 table, chart])])


def test_the_worker_writes_the_pdf_written_here(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # the PDF's creation date
    document = small_document()
    write_pdf(document, tmp_path / "here.pdf")
    worker = PdfWorker()
    worker.write(document, tmp_path / "there.pdf")
    worker.wait()
    assert worker.pid == 0  # reaped
    assert (tmp_path / "there.pdf").read_bytes() == (tmp_path / "here.pdf").read_bytes()


def test_an_error_writing_is_raised_by_wait(tmp_path):
    taken = tmp_path / "taken.pdf"  # a folder where the file should go
    taken.mkdir()
    (taken / "inside").write_text("x")
    worker = PdfWorker()
    worker.write(small_document(), taken)
    with pytest.raises(OSError, match="taken.pdf"):
        worker.wait()
    worker.close()


def test_a_worker_sent_nothing_ends_without_writing(tmp_path):
    worker = PdfWorker()
    pid = worker.pid
    worker.close()
    assert worker.pid == 0
    with pytest.raises(ChildProcessError):  # reaped: no zombie left behind
        os.waitpid(pid, 0)
    assert list(tmp_path.iterdir()) == []


def test_only_a_rendered_chart_is_sent():
    chart = Chart(build=lambda: Figure(), key="")
    with pytest.raises(TypeError, match="render a Chart"):
        pickle.dumps(chart)
    chart.render()
    copy = pickle.loads(pickle.dumps(chart))
    assert copy.png == chart.png and copy.render() == chart.png


def test_start_gives_a_worker_with_two_cores():
    worker = start_pdf_worker()
    assert (worker is not None) == ((os.cpu_count() or 1) >= 2)
    if worker is not None:
        worker.close()


def test_the_worker_module_does_not_import_matplotlib(python):
    probe = ("import sys, mmats.reports.pdf_worker, mmats.reports; "
             "print('matplotlib' in sys.modules)")
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
