"""The report's PDF, written by a process forked when the command starts.

Writing the PDF is the report's longest step, and importing matplotlib's PDF backend
the longest import; neither depends on the research until the document is ready. A
:class:`PdfWorker` forks before the research (or before it is read from the cache), imports
the PDF writer while the caller works, then forks a helper (which shares those imports).
The document it is sent is drawn in the two parts :func:`~mmats.reports.render.pdf_parts`
chooses, one by each process at once, while the caller writes the HTML page and the
tearsheet; the parts are joined into one file. The PDF is
:func:`mmats.reports.render.write_pdf`'s (which draws the same parts in order), byte for
byte up to its creation date.

Only where ``os.fork`` exists and there are two cores or more; elsewhere
:func:`start_pdf_worker` returns None and the PDF is written in the caller's process.

Example::

    worker = start_pdf_worker()          # first thing, before the heavy work
    ...
    worker.write(document, "reports/x.pdf")
    write_html(document, "reports/x.html")
    worker.wait()                        # raises what writing the PDF raised
"""

from __future__ import annotations

import os
import pickle
import sys


def start_pdf_worker() -> PdfWorker | None:
    """A forked process waiting to write one PDF, or None where it cannot help (no fork,
    one core)."""
    if not hasattr(os, "fork") or (os.cpu_count() or 1) < 2:
        return None
    return PdfWorker()


class _Forked:
    """A forked process that answers one request sent over a pipe: ``serve(requests,
    replies)`` runs in the child, on the two pipe ends it reads and writes
    (:func:`_answer_one` does the reading and writing); ``inherited`` are other pipe ends
    of the parent's that the child closes. A child sent nothing (:meth:`close`, or the
    parent exiting) ends without answering."""

    def __init__(self, serve, inherited: tuple[int, ...] = ()):
        requests, self._send = os.pipe()
        self._replies, replies = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns to the caller's code
            for fd in (self._send, self._replies, *inherited):
                os.close(fd)
            code = 1
            try:
                serve(requests, replies)
                code = 0
            finally:
                os._exit(code)
        os.close(requests)
        os.close(replies)

    def _request(self, data: bytes) -> None:
        try:
            with os.fdopen(self._send, "wb") as pipe:
                pipe.write(data)
        finally:
            self._send = None

    def _reply(self) -> bytes:
        """The child's reply (empty if it ended without one), the child reaped."""
        try:
            with os.fdopen(self._replies, "rb") as pipe:
                return pipe.read()
        finally:
            self._replies = None
            self._reap()

    def close(self) -> None:
        """End the child without an answer (after an error in the caller)."""
        for name in ("_send", "_replies"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)
        self._reap()

    def _reap(self) -> None:
        if self.pid:
            os.waitpid(self.pid, 0)
            self.pid = 0


def _answer_one(requests: int, replies: int, answer) -> None:
    """In a child: read the one request; unless there is none, write ``answer(request)``."""
    with os.fdopen(requests, "rb") as pipe:
        request = pipe.read()
    if not request:
        os.close(replies)
        return
    reply = answer(request)
    with os.fdopen(replies, "wb") as pipe:
        pipe.write(reply)


class PdfWorker(_Forked):
    """One forked process that writes one PDF (:meth:`write`, then :meth:`wait`); a worker
    sent nothing (:meth:`close`, or the caller exiting) ends without writing."""

    def __init__(self):
        super().__init__(_serve)

    def write(self, document, path, cache: bool = True, share: bool = True) -> None:
        """Send ``document`` (its charts rendered) to be written to ``path``; ``cache``
        takes parts drawn before from the cache of rendered parts; ``share`` False draws
        every part in the worker, its helper left idle (when another process already
        keeps the second core busy, e.g. drawing the tearsheet)."""
        self._request(pickle.dumps((document, os.fspath(path), cache, share),
                                   protocol=pickle.HIGHEST_PROTOCOL))

    def wait(self) -> None:
        """Wait for the PDF; raise the error writing it raised (an OSError naming the
        file, say) or RuntimeError if the worker died."""
        reply = self._reply()
        if reply == b"ok":
            return
        if not reply:
            raise RuntimeError("the process writing the PDF report ended without writing it")
        raise pickle.loads(reply)


def _serve(requests: int, replies: int) -> None:
    """In the worker: import the writer, fork a helper (which shares the imports), read
    one request, write the PDF, reply."""
    from mmats.reports.render import prepare_pdf

    prepare_pdf()  # matplotlib, while the caller works
    helper = _PartDrawer(inherited=(requests, replies)) if (os.cpu_count() or 1) >= 2 \
        else None

    def write(request: bytes) -> bytes:
        try:
            document, path, cache, share = pickle.loads(request)
            _write(document, path, cache, helper if share else None)
            return b"ok"
        except Exception as error:  # noqa: BLE001 - sent back and raised by the caller
            return _pickled_error(error)

    try:
        _answer_one(requests, replies, write)
    finally:
        if helper is not None:
            helper.close()


def _write(document, path, cache: bool, helper: _PartDrawer | None) -> None:
    """Write the PDF of ``document``: the parts the helper is given drawn there while the
    others are drawn (or read from the cache) here, then joined; the same file as
    :func:`~mmats.reports.render.write_pdf`."""
    from mmats.reports.render import (
        draw_part,
        join_pdfs,
        pdf_parts,
        share_parts,
        write_pdf,
        write_pdf_bytes,
    )

    parts = pdf_parts(document)
    here, there = share_parts(document, parts, cache) if helper is not None else ([], [])
    if not there:
        write_pdf(document, path, cache=cache)
        return
    helper.draw(document, [parts[i] for i in there], cache)
    drawn = {i: draw_part(document, parts[i], cache) for i in here}
    drawn.update(zip(there, helper.result(), strict=True))
    write_pdf_bytes(join_pdfs([drawn[i] for i in range(len(parts))]), path)


class _PartDrawer(_Forked):
    """A process forked from the worker (so with matplotlib imported) that draws the
    parts of a PDF it is sent and sends their bytes back; one sent nothing just ends."""

    def __init__(self, inherited: tuple[int, ...] = ()):
        super().__init__(lambda requests, replies: _answer_one(requests, replies, _draw),
                         inherited)

    def draw(self, document, parts, cache: bool) -> None:
        self._request(pickle.dumps((document, list(parts), cache),
                                   protocol=pickle.HIGHEST_PROTOCOL))

    def result(self) -> list[bytes]:
        """The parts' PDF bytes; raises what drawing them raised."""
        reply = self._reply()
        if not reply:
            raise RuntimeError("the process drawing part of the PDF report ended without "
                               "drawing it")
        kind, value = pickle.loads(reply)
        if kind == "error":
            raise value
        return value


def _draw(request: bytes) -> bytes:
    """In the helper: the parts asked for, drawn, or the error drawing them raised."""
    from mmats.reports.render import draw_part

    try:
        document, parts, cache = pickle.loads(request)
        return pickle.dumps(("ok", [draw_part(document, part, cache) for part in parts]),
                            protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:  # noqa: BLE001 - sent back and raised by the worker
        return pickle.dumps(("error", pickle.loads(_pickled_error(error))))


def _pickled_error(error: Exception) -> bytes:
    try:
        return pickle.dumps(error)
    except Exception:  # noqa: BLE001 - an error that does not pickle: its text
        return pickle.dumps(RuntimeError(f"writing the PDF report: {error!r}"))
