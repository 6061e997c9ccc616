"""Read one course file into cleaned text pages, or say in one line why it cannot be read.

`load_document` never raises anything but `SkipFile`: the pipeline records the reason and
moves on to the next file.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import re
import stat
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, BinaryIO

from pypdf import PageObject, PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError
from pypdf.generic import ArrayObject, IndirectObject

from ingest.cleaning import clean_pdf_pages, repair_text

_KINDS = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".pdf": "pdf",
    ".html": "html",
    ".htm": "html",
}
_MB = 1024 * 1024
_SNIFF_BYTES = 64 * 1024
# Text files have a few tabs and form feeds; binaries are full of other control bytes.
_MAX_CONTROL_RATIO = 0.05
_TEXT_CONTROLS = frozenset(b"\t\n\r\f\x1b")
_MAX_REASON_CHARS = 160
# A form XObject with a content stream this large is a vector figure (a plot or heatmap drawn
# with tens of thousands of path operators). Its text is axis labels and tick numbers, noise
# for retrieval, and parsing it is most of pypdf's time on such papers (LoRA: 7 s of 8 s).
_FIGURE_STREAM_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class PdfLimits:
    """Bounds on what one PDF may cost: pages, and characters of extracted text."""

    max_pages: int = 1000
    max_chars: int = 5_000_000


@dataclass(frozen=True, slots=True)
class Page:
    """Cleaned text of one page; `number` is 1-based for PDFs and None for other formats."""

    text: str
    number: int | None


@dataclass(frozen=True, slots=True)
class LoadedDocument:
    """A readable course file: its source path under the root, its kind and its pages."""

    source: str
    kind: str
    pages: tuple[Page, ...]


class SkipFile(Exception):
    """Raised with a one-line human reason when a file cannot be ingested."""


def load_document(
    path: Path, root: Path, max_bytes: int, limits: PdfLimits | None = None
) -> LoadedDocument:
    """Read and clean one file under `root`; raise SkipFile with a reason if it cannot be."""
    try:
        return _load(path, root, max_bytes, limits or PdfLimits())
    except SkipFile:
        raise
    except MemoryError as exc:
        raise SkipFile("needs more memory than the parser is allowed") from exc
    except Exception as exc:  # the contract: a one-line reason, never a traceback
        raise SkipFile(_one_line(f"unreadable file: {type(exc).__name__}: {exc}")) from exc


def _load(path: Path, root: Path, max_bytes: int, limits: PdfLimits) -> LoadedDocument:
    """The checks cheapest first, then the reader for the file's kind."""
    source = _source_path(path, root)
    kind = _KINDS.get(path.suffix.lower())
    if kind is None:
        raise SkipFile(f"unsupported file type '{printable(path.suffix or path.name)}'")
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > max_bytes:
            raise SkipFile(f"{_human_size(size)} exceeds the {_human_size(max_bytes)} limit")
        data = fh.read()
    if not data.strip():
        raise SkipFile("empty file")
    if kind == "pdf":
        pages = _read_pdf(data, limits)
    else:
        text = repair_text(decode_text(data))
        if kind == "html":
            text = html_to_markdown(text)
        if not text.strip():
            raise SkipFile("no visible text" if kind == "html" else "empty file")
        pages = (Page(text, None),)
    return LoadedDocument(source, kind, pages)


@contextmanager
def open_regular(path: Path) -> Iterator[BinaryIO]:
    """Open a regular file for reading, or raise SkipFile saying why it cannot be.

    Opening never blocks (a FIFO would wait for a writer forever), and the check is made on
    the opened descriptor, so a file swapped for a FIFO after a scan is still refused.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise SkipFile(_open_failure(path, exc)) from exc
    with os.fdopen(fd, "rb") as fh:
        kind = _special_kind(os.fstat(fd).st_mode)
        if kind:
            raise SkipFile(f"not a regular file ({kind})")
        os.set_blocking(fd, True)
        yield fh


def _special_kind(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a folder" if stat.S_ISDIR(mode) else "not a file"


def _open_failure(path: Path, exc: OSError) -> str:
    """The reason a file could not be opened, in words."""
    if isinstance(exc, FileNotFoundError):
        return "broken link" if path.is_symlink() else "deleted before it could be read"
    if isinstance(exc, PermissionError):
        return "unreadable: permission denied"
    if exc.errno == errno.ENXIO:  # a socket, or a FIFO with no reader
        return "not a regular file (a socket)"
    return _one_line(f"unreadable: {exc.strerror or type(exc).__name__}")


def printable(text: str) -> str:
    """`text` with control characters (a newline in a file name…) shown as escapes."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _source_path(path: Path, root: Path) -> str:
    """The POSIX path under `root`; symlinks must not lead outside it."""
    real_root = root.resolve()
    if not path.resolve().is_relative_to(real_root):
        raise SkipFile("outside the materials root")
    absolute = path.absolute()
    for base in (root.absolute(), real_root):
        if absolute.is_relative_to(base):
            return absolute.relative_to(base).as_posix()
    return path.resolve().relative_to(real_root).as_posix()


def decode_text(data: bytes) -> str:
    """Decode text bytes: UTF-16 by its BOM, else UTF-8, then cp1252, then latin-1."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    sample = data[:_SNIFF_BYTES]
    controls = sum(1 for b in sample if b < 0x20 and b not in _TEXT_CONTROLS)
    if b"\x00" in sample or controls > _MAX_CONTROL_RATIO * len(sample):
        raise SkipFile("binary content in a text file")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")  # every byte is a latin-1 character


# --- PDF ---------------------------------------------------------------------------------


@contextmanager
def _quiet_pypdf() -> Iterator[None]:
    """Silence pypdf's warnings about malformed but readable PDFs, for this call only."""
    logger = logging.getLogger("pypdf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _read_pdf(data: bytes, limits: PdfLimits) -> tuple[Page, ...]:
    """Extract and clean every page of a PDF, within the page and text limits."""
    try:
        with _quiet_pypdf():
            reader = _open_pdf(data)
            pages = len(reader.pages)
            if pages > limits.max_pages:
                raise SkipFile(f"{pages:,} pages exceeds the {limits.max_pages:,}-page limit")
            raw = _pages_text(reader.pages, limits.max_chars)
    except (SkipFile, MemoryError):
        raise
    except Exception as exc:  # pypdf raises many exception types for broken files
        raise SkipFile(_one_line(f"corrupt PDF: {str(exc) or type(exc).__name__}")) from exc
    if not any(text.strip() for text in raw):
        raise SkipFile("PDF has no extractable text (scanned?)")
    return tuple(Page(text, i) for i, text in enumerate(clean_pdf_pages(raw), start=1))


def _open_pdf(data: bytes) -> PdfReader:
    """Open a PDF, decrypting it with the empty password many 'protected' PDFs use."""
    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("")
        except (FileNotDecryptedError, DependencyError) as exc:
            raise SkipFile(_one_line(f"encrypted PDF ({exc})")) from exc
        if not opened:
            raise SkipFile("encrypted PDF")
    return reader


def _pages_text(pages: Sequence[PageObject], max_chars: int) -> list[str]:
    """The raw text of each page; a page whose content an earlier page had reads as empty.

    A crafted file can point thousands of pages at one expensive content stream: each
    stream is extracted once, whatever the number of pages that share it.
    """
    seen_forms: set[int] = set()
    seen_contents: set[Any] = set()
    texts: list[str] = []
    total = 0
    for page in pages:
        key = _contents_key(page)
        if key is not None and key in seen_contents:
            texts.append("")
            continue
        if key is not None:
            seen_contents.add(key)
        texts.append(_page_text(page, seen_forms))
        total += len(texts[-1])
        if total > max_chars:
            raise SkipFile(f"more than {max_chars:,} characters of text (the limit)")
    return texts


def _contents_key(page: PageObject) -> Any:
    """The object numbers of a page's content streams, or None if they are inline."""
    raw = page.raw_get("/Contents") if "/Contents" in page else None
    refs = list(raw) if isinstance(raw, ArrayObject) else [raw]
    keys = [(ref.idnum, ref.generation) for ref in refs if isinstance(ref, IndirectObject)]
    return tuple(keys) if keys and len(keys) == len(refs) else None


def _page_text(page: PageObject, seen: set[int]) -> str:
    """One page's text; a page pypdf cannot parse reads as empty rather than sinking the file."""
    try:
        _blank_vector_figures(page.get("/Resources"), seen)
        return page.extract_text() or ""
    except MemoryError:
        raise
    except Exception:  # one bad content stream should not lose the whole paper
        return ""


def _blank_vector_figures(resources: Any, seen: set[int]) -> None:
    """Empty, in memory only, the content of form XObjects too large to be anything but figures.

    Forms are shared between pages and nest; `seen` (object ids) visits each one once.
    """
    if resources is None:
        return
    xobjects = resources.get_object().get("/XObject")
    if xobjects is None:
        return
    for ref in xobjects.get_object().values():
        form = ref.get_object()
        if id(form) in seen or form.get("/Subtype") != "/Form":
            continue
        seen.add(id(form))
        if len(form.get_data()) > _FIGURE_STREAM_BYTES:
            form.set_data(b"")
        else:
            _blank_vector_figures(form.get("/Resources"), seen)


# --- HTML --------------------------------------------------------------------------------

_BLOCK_TAGS = frozenset(
    {"address", "article", "aside", "blockquote", "dd", "div", "dl", "dt", "figcaption"}
    | {"figure", "footer", "form", "header", "hr", "main", "nav", "ol", "p", "pre"}
    | {"section", "table", "tbody", "thead", "tfoot", "tr", "ul"}
)
_SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template", "head", "svg"})
_HEADING_TAGS = {f"h{n}": n for n in range(1, 7)}


class _MarkdownWriter(HTMLParser):
    """Collects the visible text of an HTML page, with headings as Markdown '#' lines."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Open a block, heading, list item or skipped element."""
        if tag in _SKIPPED_TAGS:
            self.skipping += 1
        elif tag in _HEADING_TAGS:
            self.parts.append("\n\n" + "#" * _HEADING_TAGS[tag] + " ")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag == "br":
            self.parts.append("\n")
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")
        if tag == "pre":
            self.pre += 1

    def handle_endtag(self, tag: str) -> None:
        """Close whatever handle_starttag opened."""
        if tag in _SKIPPED_TAGS:
            self.skipping = max(0, self.skipping - 1)
        elif tag in _HEADING_TAGS or tag in _BLOCK_TAGS:
            self.parts.append("\n\n")
        elif tag in ("td", "th"):
            self.parts.append(" ")
        if tag == "pre":
            self.pre = max(0, self.pre - 1)

    def handle_data(self, data: str) -> None:
        """Keep visible text; outside <pre> whitespace runs become one space."""
        if self.skipping:
            return
        if not self.pre:
            data = re.sub(r"\s+", " ", data)
            if not self.parts or self.parts[-1].endswith(("\n", " ")):
                data = data.lstrip()
        self.parts.append(data)


def html_to_markdown(html: str) -> str:
    """Visible text of an HTML page with h1-h6 as Markdown headings and blank-line paragraphs."""
    writer = _MarkdownWriter()
    writer.feed(html)
    writer.close()
    text = "".join(writer.parts)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def _human_size(n: int) -> str:
    """'12.3 MB', '4.9 KB' or '512 bytes' (binary units, as the settings count them)."""
    if n >= _MB:
        return f"{n / _MB:.1f} MB"
    return f"{n / 1024:.1f} KB" if n >= 1024 else f"{n} bytes"


def _one_line(reason: str) -> str:
    """Collapse a reason to one short line."""
    reason = " ".join(reason.split())
    return reason if len(reason) <= _MAX_REASON_CHARS else reason[: _MAX_REASON_CHARS - 1] + "…"
