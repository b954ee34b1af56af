"""Join PDF files written by matplotlib's ``PdfPages`` into one, pages in order.

The report's PDF is drawn in parts, two processes drawing one part each
(:mod:`mmats.reports.pdf_worker`), then joined here. Only the simple files matplotlib
writes are read: a classic cross-reference table, no object streams, no encryption. Each
part keeps its own objects (fonts, images, resources), renumbered after the first part's;
the parts' page lists become one, under the first part's catalogue and document
information. Anything else is refused with ValueError, never half joined.

Example::

    whole = join_pdfs([first_part_bytes, second_part_bytes])
"""

from __future__ import annotations

import re

_XREF_START = re.compile(rb"startxref\s+(\d+)\s+%%EOF\s*$")
_XREF_HEAD = re.compile(rb"xref\s+0\s+(\d+)\s+")
_ENTRY = re.compile(rb"(\d{10}) (\d{5}) ([nf])\s*")
_TRAILER = re.compile(rb"trailer\s*<<(.*?)>>\s*startxref", re.DOTALL)
_OBJECT_HEAD = re.compile(rb"(\d+) 0 obj\s*")
_STREAM = re.compile(rb">>\s*stream\r?\n")
# a literal string (matplotlib escapes every parenthesis inside one) or a reference
_STRING_OR_REF = re.compile(rb"\((?:\\.|[^\\()])*\)|(\d+) 0 R\b", re.DOTALL)
_KIDS = re.compile(rb"/Kids\s*\[([^\]]*)\]")
_COUNT = re.compile(rb"/Count\s+(\d+)")
_REF = re.compile(rb"(\d+) 0 R\b")


def join_pdfs(parts: list[bytes]) -> bytes:
    """One PDF of ``parts``' pages, in order (a single part is returned as is)."""
    if not parts:
        raise ValueError("no PDF to join")
    if len(parts) == 1:
        return parts[0]
    files = [_PdfFile(data) for data in parts]
    first = files[0]
    objects = dict(first.objects)
    kids = list(first.kids)
    count = first.count
    size = first.size
    for other in files[1:]:
        shift = size - 1  # other's object k (k >= 1) becomes k + shift
        mapping = {number: number + shift for number in other.objects}
        mapping[other.pages] = first.pages  # its pages hang under the first page list
        dropped = {other.root, other.pages, other.info}
        for number, body in other.objects.items():
            if number not in dropped:
                objects[mapping[number]] = _renumber(body, mapping)
        kids += [mapping[kid] for kid in other.kids]
        count += other.count
        size += other.size - 1
    objects[first.pages] = _with_kids(first.objects[first.pages], kids, count)
    return _write(first.header, objects, first.root, first.info)


class _PdfFile:
    """The objects of one PDF, by number, and where its page list is."""

    def __init__(self, data: bytes):
        end = _XREF_START.search(data[-64:])
        if end is None:
            raise ValueError("not a PDF with a cross-reference table at its end")
        xref = int(end[1])
        head = _XREF_HEAD.match(data, xref)
        if head is None:
            raise ValueError("a PDF without a classic cross-reference table")
        self.size = int(head[1])
        offsets, position = {}, head.end()
        for number in range(self.size):
            entry = _ENTRY.match(data, position)
            if entry is None:
                raise ValueError(f"cross-reference entry {number} is unreadable")
            if entry[3] == b"n":
                offsets[number] = int(entry[1])
            position = entry.end()
        trailer = _TRAILER.search(data, position)
        if trailer is None:
            raise ValueError("a PDF without a trailer")
        self.root, self.info = _ref(trailer[1], b"/Root"), _ref(trailer[1], b"/Info")
        self.header = data[:min(offsets.values())]
        self.objects = _objects(data, offsets, xref)
        self.pages = _ref(self.objects[self.root], b"/Pages")
        page_list = self.objects[self.pages]
        kids = _KIDS.search(page_list)
        count = _COUNT.search(page_list)
        if kids is None or count is None:
            raise ValueError("a page list without /Kids or /Count")
        self.kids = [int(n) for n in _REF.findall(kids[1])]
        self.count = int(count[1])


def _objects(data: bytes, offsets: dict[int, int], xref: int) -> dict[int, bytes]:
    """Each object's body (between ``N 0 obj`` and ``endobj``), by number."""
    objects = {}
    ordered = sorted(offsets.items(), key=lambda item: item[1])
    ends = [offset for _, offset in ordered[1:]] + [xref]
    for (number, offset), end in zip(ordered, ends, strict=True):
        head = _OBJECT_HEAD.match(data, offset)
        if head is None or int(head[1]) != number:
            raise ValueError(f"object {number} is not where the table says")
        stop = data.rfind(b"endobj", head.end(), end)
        if stop < 0:
            raise ValueError(f"object {number} has no end")
        objects[number] = data[head.end():stop]
    return objects


def _ref(dictionary: bytes, key: bytes) -> int:
    found = re.search(re.escape(key) + rb"\s+(\d+) 0 R", dictionary)
    if found is None:
        raise ValueError(f"no {key.decode()} reference")
    return int(found[1])


def _renumber(body: bytes, mapping: dict[int, int]) -> bytes:
    """``body`` with its references renumbered; a stream's data is left untouched."""
    stream = _STREAM.search(body)
    head, tail = (body, b"") if stream is None else (body[:stream.start()],
                                                      body[stream.start():])

    def renumber(match) -> bytes:
        if match[1] is None:
            return match[0]  # a string: kept as written
        return b"%d 0 R" % mapping[int(match[1])]

    return _STRING_OR_REF.sub(renumber, head) + tail


def _with_kids(page_list: bytes, kids: list[int], count: int) -> bytes:
    listed = b" ".join(b"%d 0 R" % kid for kid in kids)
    page_list = _KIDS.sub(lambda _: b"/Kids [ " + listed + b" ]", page_list, count=1)
    return _COUNT.sub(lambda _: b"/Count %d" % count, page_list, count=1)


def _write(header: bytes, objects: dict[int, bytes], root: int, info: int) -> bytes:
    size = max(objects) + 1
    out = bytearray(header)
    offsets = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n" % number + objects[number] + b"endobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for number in range(1, size):
        out += (b"%010d 00000 n \n" % offsets[number] if number in offsets
                else b"0000000000 65535 f \n")
    out += (b"trailer\n<< /Size %d /Root %d 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n"
            % (size, root, info, xref))
    return bytes(out)
