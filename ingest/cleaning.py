"""Text repair for course files: mojibake and control characters, plus PDF page clean-up.

`repair_text` is for any decoded text (Markdown, plain text, HTML, PDF pages). The course
guides were exported with their UTF-8 read as cp1252, cp1254 or MacRoman, sometimes with a
byte lost on the way (cp1252 has no character for 0x9D, the last byte of a closing quote).
ftfy repairs complete sequences; the few damaged ones it cannot are handled here first.

`clean_pdf_pages` turns pypdf's line-per-line page text into paragraphs: ligatures, words
hyphenated at line ends, repeated headers/footers and soft line breaks.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from functools import cache, partial

import ftfy
from ftfy.fixes import uncurl_quotes

# cp1252 has no characters for bytes 0x81, 0x8D, 0x8F, 0x90 and 0x9D, and the exporter
# dropped them, leaving three-byte sequences with two bytes: "â€" + space was a closing
# quote (E2 80 9D), "â€" before an emoji a zero-width joiner (E2 80 8D), and "â†", "â”"
# arrows and box corners (E2 86 90 "←", E2 94 90 "┐"). A sequence followed by a third
# character that can continue it (cp1252 0x80-0xBF) is complete and left to ftfy.
# Only second bytes 0x80-0x9F are considered: they cover punctuation, arrows, box drawing
# and dingbats, and leave "â" before a no-break space or "«" alone.
_CONTINUATION = re.escape(bytes(range(0x80, 0xC0)).decode("sloppy-windows-1252"))
_SECOND_BYTE = re.escape(bytes(range(0x80, 0xA0)).decode("sloppy-windows-1252"))
_LOST_THIRD_BYTE = re.compile(f"â([{_SECOND_BYTE}])(?![{_CONTINUATION}])")
_EMOJI_LEAD = frozenset("ðğ")
# When the dropped byte was the middle 0x9D of the U+274x dingbats (E2 9D 8C is "❌"), the
# two bytes left look the same; for these second bytes the dingbat is far the likelier.
_LOST_MIDDLE_BYTE = {"Œ": "❌", "Ž": "❎", "“": "❓", "—": "❗", "¤": "❤"}
# Codecs the exports were misread with; ftfy registers the "sloppy" ones on import.
_MOJIBAKE_CODECS = ("sloppy-windows-1252", "sloppy-windows-1254", "mac_roman")
# A UTF-8 emoji (F0 9F ..) or variation selector (EF B8 ..) that lost a byte is unrepairable
# decoration: it is dropped rather than left as mojibake.
_DROPPABLE_PREFIXES = (b"\xf0\x9f", b"\xef\xb8")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u00ad\u200b]")
# HTML entities stay (in Markdown they are literal syntax the author wrote); quotes are
# uncurled after the fallback below, which needs the curly ones to find MacRoman mojibake.
_FTFY_CONFIG = ftfy.TextFixerConfig(unescape_html=False, uncurl_quotes=False, explain=False)

_LIGATURES = str.maketrans(
    {"ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "ft", "ﬆ": "st"}
)
_PDF_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Boilerplate that marks a page edge wherever it appears, even on one page only.
_STAMP = re.compile(
    r"^(?:arXiv:\d{4}\.\d{4,5}(?:v\d+)?\s*\[[\w.\-]+\]\s*\d{1,2}\s+\w{3}\s+\d{4}"
    r"|continued on (?:the )?next page)$",
    re.IGNORECASE,
)
_EDGE_LINES = 2
# A page's last paragraph that may stop mid-sentence, and what may follow it on the next page.
_CUT_OFF_WORDS = 6
_OPEN_END = re.compile(r"(?:[^\W\d_]|[^\W\d_][,;]|[^\W\d_]-)$")
# A list of cited things cut after one of them: "... PIQA (Bisk et al., 2020), SIQA (Sap et al.,
# 2019)," goes on with the next, "HellaSwag (Zellers et al., 2019), ...".
_CITED_END = re.compile(r"[)\]][,;]$")
_CITED_ITEM = re.compile(r"[^\W\d_][\w-]*(?:\s+[\w-]+){0,2}\s*[(\[][^)\]]*\d")
_ADDRESS_END = re.compile(r"(?:https?://|www\.)\S*$")
_CAPTION = re.compile(r"^(?:Figure|Fig\.|Table|Algorithm)\s*\d+")
_FLOATS_FIRST = 2
_SENTENCE_BREAK = re.compile(r"[.!?][\"'”’)\]]*(?=\s+[\"“(\[]?[A-Z])")
_ABBREVIATION_END = re.compile(r"(?:\bal|\be\.g|\bi\.e|\bFig|\bEq|\bvs|\bcf|\bSec|\b[A-Z])\.$")
# Words a sentence does not end with: articles, prepositions, conjunctions, auxiliaries.
_NO_SENTENCE_ENDS = frozenset({
    "a", "an", "the", "of", "to", "in", "for", "with", "by", "as", "at", "on", "from", "into",
    "than", "that", "which", "and", "or", "nor", "but", "such", "is", "are", "was", "were",
    "be", "been", "being", "has", "have", "had", "can", "could", "will", "would", "may",
    "might", "our", "their", "its", "his", "her", "this", "these", "those",
})
_SENTENCE_END = re.compile(r"(?:[.!?:][\"'”’)\]]*|(?<=[a-z)])[.!?]\d{1,2})$")
# Lines that open a paragraph: bullets and footnote marks, footnotes ("1While GPT-3 ..."),
# enumerations ("(2) ..."), captions.
_PARAGRAPH_START = re.compile(
    r"^(?:[•◦▪●∗†‡]|\d{1,2}[A-Z][a-z]|\((?:\d{1,2}|[a-z]|[ivx]+)\)\s"
    r"|(?:Figure|Table|Algorithm)\s+\d+[:.])"
)
_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")
_HYPHEN_BREAK = re.compile(r"([^\W\d_]+)-$")
_LEADING_WORD = re.compile(r"^([^\W\d_]+)")
_SUFFIXES = (
    *("able", "ible", "ness", "ment", "ments", "tion", "tions", "sion", "sions", "ance"),
    *("ances", "ence", "ences", "less", "ful", "ally", "ably", "ities", "ity", "ings"),
    *("ology", "ologies"),
)
# A line-end hyphen before these is a suspended compound ("storage- and compute-efficient").
_SUSPENDED = frozenset({"and", "or", "nor"})

_NUMBERED_HEADING = re.compile(
    r"^(?P<num>\d{1,2}(?:\.\d{1,2}){0,3}|[A-H](?:\.\d{1,2}){0,3})\s+(?P<title>[A-Z].{1,90})$"
)
_NAMED_HEADING = re.compile(
    r"^(?:abstract|introduction|references|bibliography|acknowledge?ments?|conclusions?"
    r"|appendix(?:\s+[A-Z0-9].{0,80})?|appendices)$",
    re.IGNORECASE,
)
_TITLE_STOPWORDS = frozenset(
    {"a", "an", "and", "as", "at", "by", "for", "from", "in", "of", "on", "or", "the", "to", "with"}
)


def repair_text(text: str) -> str:
    """Repair mojibake, newlines and control characters; Markdown syntax is left as it is."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _LOST_THIRD_BYTE.sub(_restore_third_byte, text)
    for codec in _MOJIBAKE_CODECS:
        text = _mojibake_run(codec).sub(partial(_redecode, codec=codec), text)
    text = ftfy.fix_text(text, _FTFY_CONFIG)
    # Straight quotes make "you'll" match however a student types it.
    text = uncurl_quotes(text)
    text = _CONTROL.sub("", text)
    return unicodedata.normalize("NFC", text)


def _restore_third_byte(match: re.Match[str]) -> str:
    """Complete a three-byte sequence whose last byte the cp1252 export dropped."""
    if match.group(1) in _LOST_MIDDLE_BYTE:
        return _LOST_MIDDLE_BYTE[match.group(1)]
    second = match.group(1).encode("sloppy-windows-1252")
    if second != b"\x80":
        return (b"\xe2" + second + b"\x90").decode("utf-8")
    following = match.string[match.end() : match.end() + 1]
    return "\u200d" if following in _EMOJI_LEAD else "\u201d"


@cache
def _mojibake_run(codec: str) -> re.Pattern[str]:
    """UTF-8 multi-byte sequences (3- and 4-byte leads) as they read in `codec`."""
    high = bytes(range(0x80, 0x100)).decode(codec)
    cont = re.escape(high[:0x40])
    lead3, lead4 = re.escape(high[0x62:0x70]), re.escape(high[0x70:0x75])
    return re.compile(f"[{lead4}][{cont}]{{1,3}}|[{lead3}][{cont}]{{1,2}}")


def _redecode(match: re.Match[str], codec: str) -> str:
    """Decode one misread run back to UTF-8; drop it if it was emoji noise that lost a byte."""
    run = match.group()
    raw = run.encode(codec)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "" if raw.startswith(_DROPPABLE_PREFIXES) else run


def match_pdf_heading(line: str) -> tuple[str, ...] | None:
    """The numbering of a line that looks like a paper's section heading, else None.

    Returns () for named headings (Abstract, References, Appendix ...), ("3", "1") for
    "3.1 Title" and ("A", "2") for "A.2 Title". Callers decide whether the numbering
    fits the headings seen so far.
    """
    line = line.strip()
    if len(line) > 100:
        return None
    if _NAMED_HEADING.match(line):
        return ()
    m = _NUMBERED_HEADING.match(line)
    if not m or not _looks_like_title(m.group("title")):
        return None
    return tuple(m.group("num").split("."))


def _looks_like_title(title: str) -> bool:
    """Reject body lines that happen to start with a number and a capital letter."""
    words = title.split()
    if len(words) > 14 or title[-1] in ".,;:-" or words[-1].lower() in _TITLE_STOPWORDS:
        return False
    digits = sum(ch.isdigit() for ch in title)
    letters = sum(ch.isalpha() for ch in title)
    return letters >= 3 and digits * 2 <= letters


def clean_pdf_pages(pages: list[str]) -> list[str]:
    """Clean the extracted texts of one PDF's pages into paragraph text, page by page."""
    page_lines = [_page_lines(page) for page in pages]
    repeated = _repeated_edge_lines(page_lines)
    page_lines = [_strip_edges(lines, repeated) for lines in page_lines]
    vocabulary = _Vocabulary.build(line for lines in page_lines for line in lines)
    width = _typical_width(page_lines)
    return _mend_page_breaks([_reflow(lines, vocabulary, width) for lines in page_lines],
                             vocabulary)


def _mend_page_breaks(pages: list[str], vocabulary: _Vocabulary) -> list[str]:
    """Pages with each sentence a page break cuts joined on the page where it starts.

    A page that ends mid-sentence ("... under a preference model such as the") continues on
    the next, after any table or caption printed first ("Bradley-Terry model [5], then ...").
    Left apart, the next page's piece reads as a sentence of its own, and quoted alone it
    says something the paper does not. The sentence's rest moves to the end of the page
    before, so it is cited at the page where it begins; the paragraph's next sentences stay."""
    paragraphs = [[p for p in page.split("\n\n") if p.strip()] for page in pages]
    for before, after in zip(paragraphs, paragraphs[1:], strict=False):
        if not before or not _cut_off(before[-1]):
            continue
        j = _continuation(before[-1], after, vocabulary)
        if j is None:
            continue
        end = _first_sentence_end(after[j])
        before[-1] = _join_lines(before[-1], before[-1], after[j][:end].rstrip(), vocabulary)
        rest = after[j][end:].strip()
        if rest:
            after[j] = rest
        else:
            del after[j]
    return ["\n\n".join(page) for page in paragraphs]


def _first_sentence_end(paragraph: str) -> int:
    """Where the paragraph's first sentence ends (its length when it never does): at a full
    stop, question or exclamation mark before a capital, not after "et al.", "e.g.", "Fig."."""
    for m in _SENTENCE_BREAK.finditer(paragraph):
        if not _ABBREVIATION_END.search(paragraph, 0, m.start() + 1):
            return m.end()
    return len(paragraph)


def _cut_off(paragraph: str) -> bool:
    """Whether a page's last paragraph stops mid-sentence: prose (mostly words, not a table
    row; a word in brackets or before a comma counts) ending on a word, comma or hyphen, or
    on a citation and a comma, and neither a heading nor a footnote's address."""
    words = paragraph.split()
    return (
        len(words) >= _CUT_OFF_WORDS
        and match_pdf_heading(paragraph) is None
        and (_OPEN_END.search(paragraph) is not None or _CITED_END.search(paragraph) is not None)
        and not _ADDRESS_END.search(paragraph)
        and sum(w.strip("()[],.;:").isalpha() for w in words) >= 0.6 * len(words)
    )


def _continuation(cut: str, page: list[str], vocabulary: _Vocabulary) -> int | None:
    """Which of a page's first paragraphs goes on with the `cut` sentence: the first that is
    not a caption or a table (at most `_FLOATS_FIRST` of those are passed over), when it
    starts in lower case, or when the cut ends on a comma, hyphen or a word no sentence ends
    with ("such as the" + "Bradley-Terry model"); after a citation and a comma, only when it
    opens on the next cited thing ("HellaSwag (Zellers et al., 2019)"; not the run-in heading
    "Chatbots Many instruction following models ..."). None at a heading."""
    last = cut.rstrip().rsplit(None, 1)[-1].lower()
    open_end = last[-1] in ",-" or last in _NO_SENTENCE_ENDS
    cited = _CITED_END.search(cut.rstrip()) is not None
    for j, paragraph in enumerate(page[: _FLOATS_FIRST + 1]):
        if match_pdf_heading(paragraph.split("\n", 1)[0]) is not None:
            return None
        if _is_float(paragraph):
            continue
        words = paragraph.split()
        if len(words) < _CUT_OFF_WORDS:
            return None
        if cited:
            return j if _CITED_ITEM.match(paragraph) else None
        joined = words[0][0].islower() or (open_end and _names_first(words, vocabulary))
        return j if joined else None
    return None


def _names_first(words: list[str], vocabulary: _Vocabulary) -> bool:
    """Whether a paragraph opens on a name, which may go on a sentence ("Bradley-Terry model",
    "Parameter Efficient Finetuning"): a capitalised word the document never writes in lower
    case, or two capitalised words. "In this work, ..." opens a sentence of its own."""
    first, second = (w.strip("()[],.;:") for w in words[:2])
    if not first[:1].isupper():
        return False
    return first.lower() not in vocabulary.words or second[:1].isupper()


def _is_float(paragraph: str) -> bool:
    """A caption, or a table's text: mostly numbers and short tokens."""
    if _CAPTION.match(paragraph):
        return True
    words = paragraph.split()
    return sum(any(c.isdigit() for c in w) for w in words) >= 0.3 * len(words)


def _page_lines(page: str) -> list[str]:
    """Repaired, ligature-free, stripped lines of one page."""
    # Math fonts often map symbols to control codes; a space keeps the words apart.
    page = _PDF_CONTROL.sub(" ", page.translate(_LIGATURES))
    return [line.strip() for line in repair_text(page).split("\n")]


def _edge_key(line: str) -> str:
    """Compare lines with digits masked: running titles carry page numbers and dates."""
    return re.sub(r"\d+", "#", " ".join(line.lower().split()))


def _edges(lines: list[str]) -> list[str]:
    """The first and last few non-empty lines of a page."""
    filled = [line for line in lines if line]
    if len(filled) <= 2 * _EDGE_LINES:
        return filled
    return filled[:_EDGE_LINES] + filled[-_EDGE_LINES:]


def _repeated_edge_lines(page_lines: list[list[str]]) -> frozenset[str]:
    """Keys of lines found at the top or bottom of at least 40% of the pages (3 or more)."""
    counts: Counter[str] = Counter()
    for lines in page_lines:
        counts.update({_edge_key(line) for line in _edges(lines)})
    threshold = max(3, -(-len(page_lines) * 2 // 5))
    return frozenset(key for key, n in counts.items() if n >= threshold)


def _strip_edges(lines: list[str], repeated: frozenset[str]) -> list[str]:
    """Drop repeated header/footer lines and known stamps from the edges of a page."""
    filled = [i for i, line in enumerate(lines) if line]
    top, bottom = 0, len(filled)
    while top < bottom and _is_boilerplate(lines[filled[top]], repeated):
        top += 1
    while bottom > top and _is_boilerplate(lines[filled[bottom - 1]], repeated):
        bottom -= 1
    if top == bottom:
        return []
    body = lines[filled[top] : filled[bottom - 1] + 1]
    # A stamp (the arXiv margin note) can land anywhere in the extraction order.
    return [line for line in body if not _STAMP.match(line)]


def _is_boilerplate(line: str, repeated: frozenset[str]) -> bool:
    """A known stamp, or a line repeated at the edges of many pages."""
    return _edge_key(line) in repeated or _STAMP.match(line) is not None


def _typical_width(page_lines: list[list[str]]) -> int:
    """The 80th-percentile line length of the document: what a full line looks like."""
    lengths = sorted(len(line) for lines in page_lines for line in lines if line)
    return lengths[int(len(lengths) * 0.8)] if lengths else 0


class _Vocabulary:
    """Words and hyphenated pairs the document uses within lines, to settle line-end hyphens."""

    def __init__(self, words: set[str], pairs: set[str]) -> None:
        self.words = words
        self.pairs = pairs

    @classmethod
    def build(cls, lines: Iterable[str]) -> _Vocabulary:
        """Collect lowercase stand-alone words and "left-right" pairs from all lines."""
        words: set[str] = set()
        pairs: set[str] = set()
        broken = False  # the previous line ended in a hyphen: this one starts with a fragment
        for line in lines:
            tokens = _WORD.findall(line.lower())
            ends_broken = line.endswith("-")
            # Fragments of words split at line ends would pass for words of their own.
            for token in tokens[int(broken) : len(tokens) - int(ends_broken)]:
                parts = token.split("-")
                if len(parts) == 1:
                    words.add(token)
                pairs.update(f"{a}-{b}" for a, b in zip(parts, parts[1:], strict=False))
            broken = ends_broken
        return cls(words, pairs)

    def keeps_hyphen(self, left: str, right: str) -> bool:
        """Whether "left-" + "right" at a line break is a compound rather than a split word.

        The document decides: a word it writes whole elsewhere is joined; a pair it writes
        hyphenated elsewhere keeps the hyphen; so does a word of its own followed by a
        word-sized part that is no suffix. Anything else is a syllable break and is joined.
        """
        left, right = left.lower(), right.lower()
        if left + right in self.words:
            return False
        if f"{left}-{right}" in self.pairs:
            return True
        # A whole word, then something word-sized that is not a suffix: "sequence-aligned",
        # "human-annotated"; but "adapt-ing", "train-able", "pre-trained" are split words.
        return (
            len(left) >= 4
            and left in self.words
            and len(right) >= 4
            and not right.endswith(_SUFFIXES)
        )


def _join_lines(paragraph: str, prev: str, line: str, vocabulary: _Vocabulary) -> str:
    """Join a soft-wrapped `line` onto the paragraph, whose last line was `prev`."""
    if not prev.endswith("-") or prev.endswith(" -"):
        return f"{paragraph} {line}"
    head = _HYPHEN_BREAK.search(prev)
    tail = _LEADING_WORD.match(line)
    if not (head and tail and _same_word_case(head.group(1), tail.group(1))):
        return paragraph + line  # "GPT-" + "3", "4-" + "bit", "Bradley-" + "Terry"
    if tail.group(1) in _SUSPENDED:
        return f"{paragraph} {line}"
    if vocabulary.keeps_hyphen(head.group(1), tail.group(1)):
        return paragraph + line
    return paragraph[:-1] + line


def _same_word_case(left: str, right: str) -> bool:
    """A word can continue on the next line in lower case, or in capitals after capitals."""
    return right[0].islower() or (len(left) > 1 and left.isupper() and right.isupper())


def _reflow(lines: list[str], vocabulary: _Vocabulary, width: int) -> str:
    """Join soft line breaks into paragraphs separated by blank lines; headings stand alone."""
    paragraphs: list[str] = []
    current, prev = "", ""
    for line in lines:
        heading = bool(line) and match_pdf_heading(line) is not None
        if current and (not line or heading or _PARAGRAPH_START.match(line)):
            paragraphs.append(current)
            current = ""
        if not line:
            continue
        current = _join_lines(current, prev, line, vocabulary) if current else line
        prev = line
        if heading or (_SENTENCE_END.search(line) and len(line) < 0.8 * width):
            paragraphs.append(current)
            current = ""
    if current:
        paragraphs.append(current)
    return "\n\n".join(paragraphs)
