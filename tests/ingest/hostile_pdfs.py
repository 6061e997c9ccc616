"""Small PDFs written byte by byte, built to be expensive for a PDF parser."""

from __future__ import annotations

import random
import zlib

_WORDS = [
    *("attention", "transformer", "layer", "token", "embedding", "gradient", "residual"),
    *("softmax", "query", "key", "value", "head", "decoder", "encoder", "adapter", "rank"),
]


def text_operators(lines: int, seed: int = 0) -> bytes:
    """A content stream that shows `lines` lines of eight words each."""
    rng = random.Random(seed)
    shown = b"".join(
        b"(" + " ".join(rng.choice(_WORDS) for _ in range(8)).encode() + b") Tj 0 -14 Td "
        for _ in range(lines)
    )
    return b"BT /F1 12 Tf 72 700 Td " + shown + b"ET"


def pdf_file(page_streams: list[int], streams: list[bytes]) -> bytes:
    """A PDF whose page i draws the content stream `streams[page_streams[i]]` (compressed)."""
    first_stream, first_page = 4, 4 + len(streams)
    kids = b" ".join(b"%d 0 R" % (first_page + i) for i in range(len(page_streams)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_streams)),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for data in streams:
        packed = zlib.compress(data, 9)
        objects.append(b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream"
                       % (len(packed), packed))
    for index in page_streams:
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R"
            b" /Resources << /Font << /F1 3 0 R >> >> >>" % (first_stream + index)
        )
    return _serialise(objects)


def _serialise(objects: list[bytes]) -> bytes:
    """Numbered objects (1-based, 1 is the catalog) with a cross-reference table."""
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref
    )
    return bytes(out)


def shared_stream_pdf(pages: int, lines: int) -> bytes:
    """Every page draws the same content stream."""
    return pdf_file([0] * pages, [text_operators(lines)])


def many_pages_pdf(pages: int, lines: int = 3) -> bytes:
    """Pages of a few lines each, each with its own stream."""
    return pdf_file(list(range(pages)), [text_operators(lines, seed=i) for i in range(pages)])


def heavy_page_pdf(lines: int) -> bytes:
    """One page with a very long content stream: seconds of parsing for a few kilobytes."""
    return pdf_file([0], [text_operators(lines)])


def padded_pdf(megabytes: int) -> bytes:
    """One line of text, then megabytes of blanks: tiny on disk, large once decompressed."""
    content = b"BT /F1 12 Tf 72 700 Td (attention) Tj ET " + b" " * (megabytes << 20)
    return pdf_file([0], [content])
