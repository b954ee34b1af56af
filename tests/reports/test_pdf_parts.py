"""The report's PDF drawn in two parts (two processes in the PDF worker) and joined
(mmats.reports.pdf_join): the same pages as drawing it whole, the same file either way."""

import io
import os
import re

import pandas as pd
import pypdf  # a dev dependency
import pytest
from matplotlib.figure import Figure

from mmats.reports.cache import is_cached
from mmats.reports.pdf_join import join_pdfs
from mmats.reports.pdf_worker import PdfWorker
from mmats.reports.render import (
    Chart,
    Document,
    Heading,
    Section,
    Table,
    Text,
    draw_part,
    draw_pdf_part,
    part_key,
    pdf_parts,
    share_parts,
    write_pdf,
)

fork_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="the PDF worker and its helper are forked processes; without os.fork (Windows) the PDF is drawn in the caller and these checks do not apply")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test starts with an empty cache of rendered parts of its own."""
    monkeypatch.setenv("MMATS_CACHE_DIR", str(tmp_path / "cache"))


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
    assert pdf_parts(doc) == [range(0, 1), range(1, 2), range(2, 3)]
    longer = Document(title="t", subtitle="s", footer="f",
                      sections=[*doc.sections, *doc.sections[1:], *doc.sections[1:]])
    parts = pdf_parts(longer)  # title part, the middle in two, footer part
    assert len(parts) == 4 and parts[0] == range(1) and parts[-1] == range(6, 7)
    assert [i for part in parts for i in part] == list(range(7))
    single = Document(title="t", subtitle="s", sections=[doc.sections[0]])
    assert pdf_parts(single) == [range(1)]
    assert pdf_parts(Document(title="t", subtitle="s", sections=[])) == [range(0)]


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


def test_a_part_key_follows_the_content_and_leaves_out_title_and_footer():
    doc = document()
    assert part_key(doc, range(0, 1)) is None  # the title block: drawn every time
    assert part_key(doc, range(2, 3)) is None  # the footer: drawn every time
    key = part_key(doc, range(1, 2))
    assert key == part_key(document(), range(1, 2))  # equal content, equal key
    other_chart = document()
    other_chart.sections[1].blocks[0] = chart([1, 3, 3])
    renamed = document()
    renamed.sections[1].title = "Second, renamed"
    reworded = document()
    reworded.sections[1].blocks[1] = Text("between", emphasis=True)
    keys = {part_key(d, range(1, 2)) for d in (other_chart, renamed, reworded)}
    assert key not in keys and len(keys) == 3
    cell = Document(title="t", subtitle="s", footer="f", sections=[
        doc.sections[0], doc.sections[0], doc.sections[0]])
    changed = Document(title="t", subtitle="s", footer="f", sections=[
        doc.sections[0], Section("one", "First", [
            Table(doc.sections[0].blocks[2].frame.replace("1.25", "1.26"), "folds")]),
        doc.sections[0]])
    assert part_key(cell, range(1, 2)) != part_key(changed, range(1, 2))


def test_a_part_key_follows_the_drawing_code(tmp_path):
    """The key digests this module's source: a copy of it keys alike, an edited copy
    does not (so editing how a part is drawn draws it again)."""
    import importlib.util
    import inspect
    import sys

    from mmats.reports import render

    def load(name, source):
        path = tmp_path / f"{name}.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    def key(module):
        table = module.Table(pd.DataFrame({"a": ["1"]}))
        doc = module.Document(title="t", subtitle="s", sections=[
            module.Section(str(i), str(i), [module.Text("x"), table]) for i in range(3)])
        return module.part_key(doc, range(1, 2))

    source = inspect.getsource(render)
    try:
        same = load("mmats_render_copy", source)
        edited = load("mmats_render_edited", source.replace("MARGIN = 0.55", "MARGIN = 0.6"))
        assert key(same) == key(render)
        assert key(edited) != key(render)
    finally:
        sys.modules.pop("mmats_render_copy", None)
        sys.modules.pop("mmats_render_edited", None)


def test_cached_parts_give_the_file_drawn_afresh(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    doc = document()
    middle = part_key(doc, range(1, 2))
    assert not is_cached(middle)
    first = write_pdf(doc, tmp_path / "first.pdf").read_bytes()  # draws, stores the middle
    assert is_cached(middle)
    here, there = share_parts(doc, pdf_parts(doc))
    assert 1 in here and len(there) == 1  # the two to draw, one in each process
    assert sorted(i for side in share_parts(doc, pdf_parts(doc), cache=False)
                  for i in side) == [0, 1, 2]
    again = write_pdf(doc, tmp_path / "again.pdf").read_bytes()  # reads the middle
    fresh = write_pdf(doc, tmp_path / "fresh.pdf", cache=False).read_bytes()
    assert first == again == fresh
    assert draw_part(doc, range(1, 2)) == draw_pdf_part(doc, range(1, 2))


@fork_only
def test_the_worker_with_cached_parts_writes_the_file_drawn_afresh(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    doc = document()
    fresh = write_pdf(doc, tmp_path / "fresh.pdf", cache=False).read_bytes()
    for name, share in (("cold", True), ("warm", True), ("alone", False)):
        worker = PdfWorker()  # cold stores the middle part, the others read it
        worker.write(doc, tmp_path / f"{name}.pdf", share=share)  # alone: no helper
        worker.wait()
        assert (tmp_path / f"{name}.pdf").read_bytes() == fresh
