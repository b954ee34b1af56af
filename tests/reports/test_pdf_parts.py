"""The report's PDF drawn in two parts (two processes in the PDF worker) and joined
(mmats.reports.pdf_join): the same pages as drawing it whole, the same file either way."""

import io
import os
import re

import pandas as pd
import pypdf  # a dev dependency
import pytest
from matplotlib.figure import Figure

from mmats.reports.pdf_join import join_pdfs
from mmats.reports.pdf_worker import PdfWorker
from mmats.reports.render import (
    Chart,
    Document,
    Heading,
    Section,
    Table,
    Text,
    draw_pdf_part,
    pdf_parts,
    write_pdf,
)

fork_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="the worker forks")


def chart(values) -> Chart:
    figure = Figure(figsize=(4, 2))
    figure.add_subplot().plot(values)
    drawn = Chart(figure, caption=f"a line through {values}")
    drawn.render()
    return drawn


def document() -> Document:
    table = Table(pd.DataFrame({"fold": [str(i) for i in range(30)],
                                "sharpe (a parenthesis: \\)": ["1.25"] * 30}), "folds")
    return Document(title="A report (with 3 0 R in its title)", subtitle="three sections",
                    footer="the end", sections=[
                        Section("one", "First", [Heading("numbers"),
                                                 Text("some words", emphasis=True), table]),
                        Section("two", "Second", [chart([1, 3, 2]), Text("between")]),
                        Section("three", "Third", [chart([3, 1, 2]), table])])


def pages(data: bytes) -> list[str]:
    return [page.extract_text() for page in pypdf.PdfReader(io.BytesIO(data)).pages]


def images(data: bytes) -> list[list[bytes]]:
    """The image data each page draws (its content's ``Do`` operators), page by page."""
    drawn = []
    for page in pypdf.PdfReader(io.BytesIO(data)).pages:
        names = re.findall(rb"/(\S+) Do", page.get_contents().get_data())
        objects = page["/Resources"].get("/XObject", {})
        drawn.append([objects["/" + n.decode()].get_object().get_data() for n in names])
    return drawn


def test_the_parts_cover_every_section_in_order():
    doc = document()
    parts = pdf_parts(doc)
    assert len(parts) == 2
    assert [i for part in parts for i in part] == [0, 1, 2]
    single = Document(title="t", subtitle="s", sections=[doc.sections[0]])
    assert pdf_parts(single) == [range(1)]


def test_joined_parts_have_the_pages_of_the_whole_drawing(tmp_path):
    doc = document()
    whole = draw_pdf_part(doc, range(len(doc.sections)))
    parts = [draw_pdf_part(doc, part) for part in pdf_parts(doc)]
    joined = join_pdfs(parts)
    assert len(pages(whole)) == sum(len(pages(part)) for part in parts) >= 3
    assert pages(joined) == pages(whole)
    assert "A report (with 3 0 R in its title)" in pages(joined)[0]  # a string, not a link
    assert pages(joined)[-1].rstrip().endswith("the end")  # the footer, once, at the end
    assert images(joined) == images(whole)
    assert sum(len(on_page) for on_page in images(joined)) == 2
    reader = pypdf.PdfReader(io.BytesIO(joined))
    assert reader.metadata.title == doc.title
    written = write_pdf(doc, tmp_path / "r.pdf").read_bytes()
    assert pages(written) == pages(whole)


def test_join_refuses_what_is_not_a_simple_pdf():
    with pytest.raises(ValueError, match="cross-reference"):
        join_pdfs([b"not a pdf", b"%PDF-1.4\n%%EOF\n"])
    with pytest.raises(ValueError, match="no PDF"):
        join_pdfs([])
    assert join_pdfs([b"anything"]) == b"anything"  # one part: as it is


@fork_only
def test_the_worker_draws_the_parts_in_two_processes_into_the_same_file(
        tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # the PDF's creation date
    doc = document()
    write_pdf(doc, tmp_path / "here.pdf")
    worker = PdfWorker()
    worker.write(doc, tmp_path / "there.pdf")
    worker.wait()
    assert (tmp_path / "there.pdf").read_bytes() == (tmp_path / "here.pdf").read_bytes()


@fork_only
def test_an_error_in_the_second_part_is_raised_by_wait(tmp_path):
    doc = document()
    broken = Chart(build=Figure, key="")
    broken.png = b"not a png"
    doc.sections[-1].blocks.append(broken)  # drawn by the helper process
    assert 2 in pdf_parts(doc)[-1]
    worker = PdfWorker()
    worker.write(doc, tmp_path / "r.pdf")
    with pytest.raises(OSError, match="cannot identify image"):
        worker.wait()
    worker.close()
    assert not (tmp_path / "r.pdf").exists()


def test_chart_pixels_are_imreads_scaled_to_bytes():
    """The PDF embeds a chart's RGB bytes read with Pillow: those matplotlib's imread gives
    (floats in [0, 1]) scaled back, alpha dropped."""
    import numpy as np
    from matplotlib.image import imread

    from mmats.reports.render import _opaque_pixels

    png = chart([1, 3, 2]).png
    expected = (imread(io.BytesIO(png), format="png")[..., :3] * 255).round().astype(np.uint8)
    found = _opaque_pixels(png)
    assert found.dtype == np.uint8 and found.shape == expected.shape
    assert np.array_equal(found, expected)
