"""Structure-aware chunking: sections first, then paragraphs, lines, sentences and words.

Every chunk lies inside one section of one page, and `page_text[chunk.start:chunk.end]`
is exactly `chunk.text`. A section's first chunk starts with its heading line, and headings
with no text of their own ("PHASE 3", then "Week 6", then "Goal: ...") stay with the next
section that has some: in the guides the heading often carries the meaning ("Practical
takeaway") while the bullets under it carry the evidence, and a passage needs both. The full
heading path is also metadata (`Chunk.section`). Markdown and HTML sections come from ATX
headings; PDF sections from the numbered headings that `clean_pdf_pages` leaves on lines of
their own, carried from page to page.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from ingest.cleaning import match_pdf_heading
from ingest.loaders import LoadedDocument, Page
from rag.index.documents import Chunk

# Fences nested in list items are indented further than CommonMark's three spaces.
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
# Longer "headings" are bold paragraphs formatted as headings: content, not structure.
_MAX_HEADING_CHARS = 120
_SUBTITLE = re.compile(r"\s+[–—-]\s+.*$")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_HEADING_NOISE = re.compile(r"\*\*|__|`")
# Emoji, their joiners, variation selectors and skin tones, private-use leftovers.
_DROP_CATEGORIES = frozenset({"So", "Cf", "Co", "Cn", "Cs"})
_EMOJI_MODIFIERS = re.compile("[\ufe00-\ufe0f\U0001f3fb-\U0001f3ff]")
_SECTION_SEPARATOR = " > "

_PARAGRAPH_BREAK = re.compile(r"(\n[ \t]*\n\s*)")
_LINE_BREAK = re.compile(r"(\n\s*)")
# The break is group 1: closing quotes and brackets stay with their sentence.
_SENTENCE_BREAK = re.compile(r"[.!?][\"')\]]*(\s+)(?=[\"'(\[]?[A-Z0-9])")
_WORD_BREAK = re.compile(r"(\s+)")
_SEPARATORS = (_PARAGRAPH_BREAK, _LINE_BREAK, _SENTENCE_BREAK, _WORD_BREAK)
_ABBREVIATION = re.compile(r"(?:\be\.g|\bi\.e|\bet al|\bvs|\bcf|\bFig|\bEq|\bSec|\bNo)\.$")
_RULE = re.compile(r"[ \t]*([-*_])[ \t]*(?:\1[ \t]*){2,}$")  # used with pos: no "^"
_URL = re.compile(r"\]\([^)]*\)|<?https?://\S+")
_MARKUP = re.compile(r"[\s#*_>`|~\-\[\]()!:]+")


@dataclass(frozen=True, slots=True)
class _Body:
    """The text of one section on one page, as offsets into the page text."""

    page: Page
    start: int
    end: int
    section: str


def chunk_document(
    doc: LoadedDocument, chunk_chars: int = 1200, overlap: int = 150, min_chars: int = 40
) -> list[Chunk]:
    """Split a loaded document into section-aware chunks with exact page offsets."""
    if chunk_chars <= 0 or not 0 <= overlap < chunk_chars or min_chars < 0:
        raise ValueError("need chunk_chars > 0, 0 <= overlap < chunk_chars and min_chars >= 0")
    bodies = list(_bodies(doc))
    fenced = doc.kind in ("markdown", "html")
    chunks = [
        chunk
        for body in bodies
        for chunk in _body_chunks(doc.source, body, fenced, chunk_chars, overlap, min_chars)
    ]
    return chunks or _whole_document_chunk(doc, bodies)


def _body_chunks(
    source: str, body: _Body, fenced: bool, limit: int, overlap: int, min_chars: int
) -> list[Chunk]:
    """The chunks of one body; with `fenced`, each knows the code block it starts inside."""
    text = body.page.text
    spans = _chunk_spans(text, body.start, body.end, limit, overlap, min_chars)
    starts = [s for s, _ in spans]
    fences = _open_fences(text, body.start, starts) if fenced else [""] * len(spans)
    return [
        Chunk(text[s:e], source, body.page.number, body.section, s, e, fence=fence)
        for (s, e), fence in zip(spans, fences, strict=True)
    ]


def _bodies(doc: LoadedDocument) -> Iterator[_Body]:
    """The sections of every page, in reading order."""
    if doc.kind == "pdf":
        yield from _pdf_bodies(doc.pages)
    elif doc.kind in ("markdown", "html"):
        for page in doc.pages:
            yield from _markdown_bodies(page)
    else:
        for page in doc.pages:
            yield _Body(page, 0, len(page.text), "")


def _whole_document_chunk(doc: LoadedDocument, bodies: list[_Body]) -> list[Chunk]:
    """A document too short to chunk still gets one chunk: its most substantial body."""
    candidates = [b for b in bodies if b.page.text[b.start : b.end].strip()]
    if not candidates:
        candidates = [_Body(p, 0, len(p.text), "") for p in doc.pages if p.text.strip()]
    if not candidates:
        return []
    best = max(candidates, key=lambda b: _visible_len(b.page.text[b.start : b.end]))
    start, end = _trim(best.page.text, best.start, best.end)
    return [
        Chunk(best.page.text[start:end], doc.source, best.page.number, best.section, start, end)
    ]


# --- Markdown sections -------------------------------------------------------------------


def _markdown_bodies(page: Page) -> Iterator[_Body]:
    """Split Markdown at ATX headings outside fenced code; each body starts at its heading
    (or at the first of several headings with nothing between them) and gets its path."""
    text = page.text
    path: list[tuple[int, str]] = []
    body_start = pos = 0
    fence = ""
    content = False
    for line in text.split("\n"):
        line_end = pos + len(line) + 1
        heading = None if fence else _markdown_heading(line)
        fence = _next_fence(fence, line)
        if heading is not None:
            if content:
                yield _Body(page, body_start, pos, _SECTION_SEPARATOR.join(t for _, t in path))
                body_start, content = pos, False
            level, title = heading
            path = [(lvl, t) for lvl, t in path if lvl < level]
            if title:
                path.append((level, title))
        elif not content and _visible_len(line) and not _RULE.match(line):
            content = True
        pos = line_end
    yield _Body(page, body_start, len(text), _SECTION_SEPARATOR.join(t for _, t in path))


def _next_fence(fence: str, line: str) -> str:
    """The open code fence after `line`: opened, closed by the same marker, or unchanged."""
    m = _FENCE.match(line)
    if not m:
        return fence
    marker = m.group(1)
    if not fence:
        return marker
    closes = marker[0] == fence[0] and len(marker) >= len(fence) and not line[m.end() :].strip()
    return "" if closes else fence


def _open_fences(text: str, start: int, positions: list[int]) -> list[str]:
    """For each of the ascending `positions`, the line that opened the code block it lies
    inside ("```python", stripped), or "" outside code. `start` is outside code (a body's)."""
    out: list[str] = []
    fence = opener = ""
    pos = start
    for position in positions:
        while pos < position:  # every line that starts before it
            line_end = text.find("\n", pos)
            line = text[pos:] if line_end < 0 else text[pos:line_end]
            after = _next_fence(fence, line)
            if not after:
                opener = ""
            elif not fence:
                opener = line.strip()
            fence = after
            pos = len(text) if line_end < 0 else line_end + 1
        out.append(opener)
    return out


def _markdown_heading(line: str) -> tuple[int, str] | None:
    """(level, clean title) of an ATX heading line, or None."""
    m = _ATX.match(line)
    if not m:
        return None
    title = _clean_heading(m.group(2) or "")
    if len(title) > _MAX_HEADING_CHARS:
        return None
    level = len(m.group(1))
    if level == 1:
        # "Week 2 Support Guide – Understanding LLMs": the document title, not its subtitle.
        title = _SUBTITLE.sub("", title) or title
    return level, title


def _clean_heading(raw: str) -> str:
    """Heading text without links, bold markers and emoji decoration."""
    text = _HEADING_NOISE.sub("", _LINK.sub(r"\1", raw))
    text = _EMOJI_MODIFIERS.sub("", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in _DROP_CATEGORIES)
    return " ".join(text.split()).strip(" *_")


# --- PDF sections ------------------------------------------------------------------------


class _PaperOutline:
    """The section a paper is in, updated by each plausible heading in reading order."""

    def __init__(self) -> None:
        self.section = ""
        self.number: tuple[int, ...] = ()
        self.letter: tuple[int, ...] = ()
        self.back_matter = False

    def accept(self, line: str) -> bool:
        """Move to the section `line` opens if it is a plausible next heading."""
        key = match_pdf_heading(line)
        if key is None:
            return False
        if key and key[0].isalpha():
            ok = self._accept_appendix(key)
        elif key:
            ok = not self.letter and self._accept_numbered(key)
        else:
            ok = True
            self.back_matter |= line.lower().startswith(("references", "bibliography", "app"))
        if ok:
            self.section = " ".join(line.split())
        return ok

    def _accept_numbered(self, key: tuple[str, ...]) -> bool:
        """Accept "3.2 Title" if it can follow the last numbered heading."""
        number = tuple(int(part) for part in key)
        if not _follows(self.number, number):
            return False
        self.number = number
        return True

    def _accept_appendix(self, key: tuple[str, ...]) -> bool:
        """Accept "B.1 Title" after the references, if it can follow the last appendix."""
        # "A Transformer ..." opening a body line is far more common than appendix A.
        if not (self.back_matter or self.letter):
            return False
        letter = (ord(key[0]) - ord("A") + 1, *(int(part) for part in key[1:]))
        if not _follows(self.letter, letter):
            return False
        self.letter = letter
        return True


def _follows(previous: tuple[int, ...], number: tuple[int, ...]) -> bool:
    """Section numbers only grow, and by small steps: 2.3 -> 3 or 2.4, not 2.3 -> 7."""
    if number <= previous:
        return False
    for i, part in enumerate(number):
        before = previous[i] if i < len(previous) else 0
        if part != before:
            return part - before <= 2 and all(p <= 2 for p in number[i + 1 :])
    return True


def _pdf_bodies(pages: tuple[Page, ...]) -> Iterator[_Body]:
    """Split each page at accepted headings, each body starting with its heading line; the
    current section carries across pages."""
    outline = _PaperOutline()
    for page in pages:
        body_start = 0
        # Cleaned PDF text has one paragraph per line; headings are paragraphs of their own.
        for m in re.finditer(r"[^\n]+", page.text):
            section = outline.section
            if outline.accept(m.group()):
                yield _Body(page, body_start, m.start(), section)
                body_start = m.start()
        yield _Body(page, body_start, len(page.text), outline.section)


# --- Packing -----------------------------------------------------------------------------


def _chunk_spans(
    text: str, start: int, end: int, limit: int, overlap: int, min_chars: int
) -> list[tuple[int, int]]:
    """Pack the pieces of text[start:end] into spans of at most `limit` chars."""
    pieces = [p for p in _pieces(text, start, end, limit, 0) if not _is_noise(text, *p)]
    spans: list[tuple[int, int]] = []
    cur_start = cur_end = -1
    for s, e in pieces:
        if cur_start < 0:
            cur_start, cur_end = s, e
        elif e - cur_start <= limit:
            cur_end = e
        else:
            spans.append((cur_start, cur_end))
            resume = _overlap_start(text, cur_start, cur_end, overlap)
            cur_start = resume if resume is not None and e - resume <= limit else s
            cur_end = e
    if cur_start >= 0:
        spans.append((cur_start, cur_end))
    return _absorb_small(text, spans, limit, min_chars)


def _pieces(text: str, start: int, end: int, limit: int, level: int) -> list[tuple[int, int]]:
    """Trimmed spans no longer than `limit`, split at the coarsest separator that works."""
    start, end = _trim_rules(text, start, end)
    if start >= end:
        return []
    if end - start <= limit:
        return [(start, end)]
    if level == len(_SEPARATORS):
        return [(s, min(s + limit, end)) for s in range(start, end, limit)]
    out: list[tuple[int, int]] = []
    for s, e in _split_at(text, start, end, _SEPARATORS[level]):
        out.extend(_pieces(text, s, e, limit, level + 1))
    return out


def _split_at(
    text: str, start: int, end: int, separator: re.Pattern[str]
) -> Iterator[tuple[int, int]]:
    """Spans of text[start:end] between separator matches (group 1), abbreviations excepted."""
    pos = start
    for m in _breaks(text, start, end, separator):
        yield pos, m.start(1)
        pos = m.end(1)
    yield pos, end


def _breaks(text: str, start: int, end: int, separator: re.Pattern[str]) -> Iterator[re.Match]:
    """Separator matches in text[start:end]; "e.g." and "et al." do not end sentences."""
    for m in separator.finditer(text, start, end):
        if separator is _SENTENCE_BREAK and _ABBREVIATION.search(
            text, max(0, m.start() - 8), m.start() + 1
        ):
            continue
        yield m


def _overlap_start(text: str, start: int, end: int, overlap: int) -> int | None:
    """Where the next chunk may start to repeat the last <= `overlap` chars: a line or sentence."""
    if overlap <= 0:
        return None
    lo = max(start + 1, end - overlap)
    for separator in (_LINE_BREAK, _SENTENCE_BREAK):
        for m in _breaks(text, lo, end, separator):
            resume = _trim_rules(text, m.end(1), end)[0]
            if resume < end:
                return resume
    return None


def _absorb_small(
    text: str, spans: list[tuple[int, int]], limit: int, min_chars: int
) -> list[tuple[int, int]]:
    """Merge spans adding fewer than `min_chars` visible chars into a neighbour, or drop them."""
    out: list[tuple[int, int]] = []
    pending = -1  # start of a small leading span waiting for the next one
    for s, e in spans:
        if pending >= 0 and e - pending <= limit + min_chars:
            s = pending
        pending = -1
        fresh_from = max(s, out[-1][1]) if out else s
        if _visible_len(text[fresh_from:e]) >= min_chars:
            out.append((s, e))
        elif out and e - out[-1][0] <= limit + min_chars:
            out[-1] = (out[-1][0], e)
        elif not out:
            pending = s
        # else: a link-only or tiny tail that no longer fits: dropped.
    return out


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink a span past surrounding whitespace."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _trim_rules(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink a span past surrounding whitespace and horizontal rules ("---")."""
    while True:
        start, end = _trim(text, start, end)
        first_end = text.find("\n", start, end)
        last_start = text.rfind("\n", start, end) + 1 or start
        if _RULE.match(text, start, end if first_end < 0 else first_end):
            start = end if first_end < 0 else first_end
        elif _RULE.match(text, last_start, end):
            end = last_start
        else:
            return start, end


def _visible_len(text: str) -> int:
    """Characters a reader would see: no URLs, Markdown markup or whitespace."""
    return len(_MARKUP.sub("", _URL.sub("", text)))


def _is_noise(text: str, start: int, end: int) -> bool:
    """Horizontal rules and pieces with nothing visible never make chunks."""
    piece = text[start:end]
    return _RULE.match(piece) is not None or _visible_len(piece) == 0
