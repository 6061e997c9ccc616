"""Cut passages into quotable pieces: whole sentences, list items, table rows and short code
blocks.

A quote keeps the materials' own words in their order; only Markdown markup is removed
(emphasis, code ticks, link targets, images), and a paper's numbered references to its
bibliography ("long short-term memory [13] and", "weights[28, 37]"), which a reader would take
for the answer's own citations [n]. So `plain(quote)` is always a substring of
`plain(passage)` up to whitespace and those references (`without_references`). Code is kept
as written (only its common indentation is removed). A passage that starts mid-sentence loses
its first fragment and one that was cut loses its last; a sentence a PDF's figure or table
interrupts loses both halves, and a sentence glued to the middle of another is dropped, so no
quote ends or starts mid-way. A PDF's run-in heading glued to a paragraph's first sentence ("Double
Quantization We introduce ...") is left out of the quote, and a table it flattened into the
start of a sentence is a piece of its own.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

QuoteKind = Literal["sentence", "item", "row", "code"]

_FENCE = re.compile(r"^\s*(```|~~~)")
_ITEM = re.compile(r"^\s*(?:[-*+•]|(?P<number>\d{1,2})[.)])\s+(?:\[[ xX]\]\s+)?(?P<text>.*)$")
# A line a check mark, arrow or emoji opens, as a guide sets them before each line of a list
# of points ("✅ Short prompts cost fewer tokens"): a whole point without an end
# mark. (In a PDF's text such a sign is as often maths: "✓ log ...".)
_SIGNED = re.compile(r"^[\u2190-\u21ff\u2600-\u27bf\u2b00-\u2bff\U0001f300-\U0001faff]\ufe0f?\s+\S")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_RULE = re.compile(r"^\s*([-*_])(\s*\1){2,}\s*$")
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)|<img\b[^>]*>", re.IGNORECASE)
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_EMPHASIS = re.compile(r"\*\*|__|(?<![\w*])\*(?=\S)|(?<=\S)\*(?![\w*])|`|"
                       r"(?<![\w_])_(?=[^\s_])|(?<=[^\s_])_(?![\w_])")
_ABBREVIATION = re.compile(
    r"\b(e\.g|i\.e|et al|etc|vs|cf|fig|eq|approx|resp|no|sec)\.", re.IGNORECASE
)
# A sentence ends at an end mark and a space before a capital; or glued to the next one
# without the space, as a damaged PDF has it ("...the DPO update do?For a mechanistic ...").
_SENTENCE_END = re.compile(
    r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])|(?<=[a-z)][.!?])(?=[A-Z][a-z])")
# A display formula's number, with the sentence a PDF glued after it: "... (3) This ...".
_NUMBERED_FORMULA = re.compile(r"\s\(\d{1,3}\)\s+(?=[A-Z][a-z]+\s)")
_SNAKE_CASE = re.compile(r"\b[a-z]+_[a-z_]+\b")
CODE_NAMES = 3
_TICK = re.compile(r"(\d+(?:\.\d+)?)%?")
AXIS_TICKS = 4
# A sentence that ends by pointing to a figure or table, as a PDF leaves it before the
# figure's labels ("... as can be seen in Figure 4"): whole, though it has no end mark.
_POINTER_AT_END = re.compile(r"\b(?:Figure|Fig\.|Table)\s+\d+$")
FIGURE_SENTENCE_WORDS = 8
_WORD_START = re.compile(r"[^\W\d_][\w'-]*")
_TERMINAL = re.compile(r"[.!?][\"')\]]*$")
_LETTER = re.compile(r"[^\W\d_]")
# Text from a PDF figure rather than prose: words glued together ("Fourscoreandsevenyearsago")
# or special-token markup ("<eos>", "<resv>"); or a formula whose math font the PDF maps to
# the wrong characters ("⇡✓(yw | x)" for π_θ(y_w | x): dashed arrows, private-use code
# points, "◆", "⌘", a check mark glued to what precedes it).
_DEBRIS = re.compile(
    r"[^\W\d_]{22,}|<[a-z/_|]{2,12}>|[\u21e0-\u21e4\ue000-\uf8ff\u25c6\u2318]|\S\u2713",
    re.IGNORECASE)
# A PDF footnote's mark, glued to its first word ("4To illustrate why the dot products get
# large, ..."): the footnote is quoted without it.
_FOOTNOTE_MARK = re.compile(r"^\d{1,2}(?=[A-Z][a-z]+\b)")
# A paragraph that may start in the middle of a sentence: an all-lower-case word ("steps,
# and ..."), unlike a name such as "vLLM".
_MID_SENTENCE = re.compile(r"[a-z][a-z'-]*\b")
# Words that only go on a sentence begun before: the rest of one after a display formula
# ("where z_i is the logit of token i"), in any format.
_REST = re.compile(r"(?:where|whereas|which|and|but|or)\b")
# Two pieces a PDF glued at an end mark: a sentence's end, then the lower-case middle of
# another ("... 95% confidence intervals. used for many recent large LMs ..."); abbreviations
# ("e.g. the") are taken out before this is searched.
_GLUED = re.compile(r"\b[a-z]{3,}\.\s+[a-z]{2,}\b")
# A PDF section heading left in the text as its own line ("4 Why Self-Attention", "C.4 Details
# of RLHF training"): a section number, then a capital, and no end mark.
_NUMBERED_HEADING = re.compile(r"^(?:\d+(?:\.\d+)*\.?|[A-Z](?:\.\d+)*\.?)\s+[A-Z]")
# A sentence that ends by announcing what comes next ("... the following three steps
# (Figure 2).", "... is as follows.", or only counting it: "It has three steps."): quoted
# only with what follows it.
ANNOUNCES = re.compile(
    r"\b(?:the following|as follows)\b[^:.]{0,40}[.:]?$|"
    r"^(?:[\w'-]+\s+){0,5}?(?:has|have|had|are|were|is|consists? of|involves?|comprises?|"
    r"takes?|follows?)\s+(?:two|three|four|five|six|seven|eight|nine|ten)\s+"
    r"(?:main\s+|key\s+|basic\s+|major\s+|distinct\s+)?(?:steps|stages|phases|parts|"
    r"components|types|kinds|ways|categories|forms|ideas|reasons|pillars|principles|"
    r"techniques|methods|approaches|changes|innovations|elements|levels|ingredients|pieces|"
    r"rules|tricks)\s*[.:]$", re.IGNORECASE)
HEADING_WORDS = 12
# A PDF's run-in heading glued to its paragraph's first sentence ("Double Quantization We
# introduce ...", "Terminologies and Conventions We make ..."): up to six capitalised words
# (small words between), then a capitalised word that starts sentences and a lower-case one.
_RUN_IN_HEADING = re.compile(
    r"^[A-Z][\w&/'-]*(?:\s+(?:[A-Z][\w&/'-]*|and|of|for|the|in|on|with|to|a|an|from|by)){0,5}"
    r"\s+(?=(?:We|Our|In|The|This|These|To|For|As|It|Each|While|When|Given|Since|Unlike|"
    r"Following|Here|Using|Most|All|Many|One|After|Although|With|During)\s+[a-z])")


def run_in_heading(paragraph: str) -> str:
    """The run-in heading a PDF glued to a paragraph ("Double Quantization" of "Double
    Quantization We introduce ..."), "" when it has none."""
    match = _RUN_IN_HEADING.match(paragraph)
    return match.group(0).strip() if match else ""


# A table a PDF flattened into the text before a paragraph, read as the start of its first
# sentence ("... Transformer (big) 28.4 41.8 2.3 · 1019 Label Smoothing During training, we
# employed ..."): at least this many words, this share of them with a digit, then, after a
# number, prose: a capitalised word and a lower-case one (or a run-in heading), no digit in
# its first words, at most this share in all.
TABLE_WORDS = 8
TABLE_DIGITS = 0.35
PROSE_WORDS = 6
PROSE_DIGITS = 0.2
REST_VALUES = 3
_DIGIT = re.compile(r"\d")
_CAPITALISED = re.compile(r"[A-Z][a-z]")


def after_table(sentence: str) -> list[str]:
    """A sentence a PDF glued to the end of a flattened table as two pieces, the table's
    text and the sentence ("... 2.3 · 1019" and "Label Smoothing During training, we employed
    label smoothing of value ϵls = 0.1."); any other sentence as it is. The sentence may be
    the rest of one the table cut in two ("... 55.3 60.9 possible, but leads to performance
    degradation relative to 16-bit."): it starts in lower case, and is no sentence to quote."""
    words = sentence.split()
    digits = [bool(_DIGIT.search(w)) for w in words]
    for i in range(TABLE_WORDS, len(words) - PROSE_WORDS + 1):
        if not digits[i - 1] or any(digits[i:i + PROSE_WORDS]):
            continue
        prose = " ".join(words[i:])
        # A rest follows a row's values ("47.7 55.3 60.9"), not a number of prose ("took
        # about 21 days to ...").
        rest = words[i][:1].islower() and all(
            digits[j] and not words[j].endswith(",") for j in range(i - REST_VALUES, i))
        if not rest and not (_CAPITALISED.match(words[i])
                             and (words[i + 1][:1].islower() or run_in_heading(prose))):
            continue
        if (sum(digits[:i]) >= TABLE_DIGITS * i
                and sum(digits[i:]) <= PROSE_DIGITS * (len(words) - i)
                and _TERMINAL.search(sentence) and not sentence.endswith("?")):
            return [" ".join(words[:i]), prose]
    return [sentence]


# A table a PDF flattened into one run of text ("Data type Mean PPL Int4 34.34 Float4 (E2M1)
# 31.07 ... NFloat4 + DQ 27.41"): at least `TABLE_WORDS` words, `TABLE_DIGITS` of them with a
# digit, no end mark. Its rows start where a name follows a value: a word after a number, not
# a unit of the number ("3.3 TB", "175B", "45%") nor a name that is only a letter ("r = 2").
_VALUE = re.compile(r"^[(\[]?[-+±~≈<>]?\d[\d.,:/%×x]*[)\]%]?$")
_UNIT = re.compile(
    r"^(?:[KMGTP]i?B|[KMBT]|k|ms|s|sec|h|hrs?|hours?|days?|min|GPUs?|tokens?|steps?|epochs?|"
    r"FLOPs|params?|x|×|%)[,;]?$")
ROW_WORDS = 2
_SCRAP_END = re.compile(r"[,:;(]$")
_FRACTION = re.compile(r"\d[.%]")
_CAPTION = re.compile(r"Table \d+[.:]")


def table_rows(text: str) -> list[str]:
    """The rows of a table a PDF flattened into one run of text, in order ("Transformer (base
    model) 27.3 38.1 3.3 · 1018"; the first holds the header too); [] for any other text."""
    words = text.split()
    if (len(words) < TABLE_WORDS or _TERMINAL.search(text) or _is_figure_or_code_text(text)
            or sum(bool(_DIGIT.search(w)) for w in words) < TABLE_DIGITS * len(words)):
        return []
    rows: list[list[str]] = [[]]
    for i, word in enumerate(words):
        after_value = i > 0 and (_VALUE.match(words[i - 1]) is not None or (
            i > 1 and _UNIT.match(words[i - 1]) is not None
            and _VALUE.match(words[i - 2]) is not None))
        starts = (after_value and _LETTER.match(word) is not None and not _UNIT.match(word)
                  and len(word) > 1 and any(_VALUE.match(w) for w in rows[-1]))
        if starts and len(rows[-1]) >= ROW_WORDS:
            rows.append([])
        rows[-1].append(word)
    if len(rows) < 2:
        return []
    # A scrap a figure left between rows ("Ar = 8,", "Figure 31:") is no row, nor a figure's
    # label ("Block 1").
    return [" ".join(row) for row in rows
            if any(_VALUE.match(w) for w in row) and not _SCRAP_END.search(row[-1])
            and (len(row) > ROW_WORDS or any(_FRACTION.search(w) for w in row))]


# At most this many paragraphs (a figure's caption) between the halves of a cut sentence.
INTERRUPTING_PARAGRAPHS = 2
FRAGMENT_WORDS = 3
_PROTECTED = "\u2024"
# A fenced code block this small is quoted whole (a command, a short snippet); longer ones
# are not quotable.
CODE_LINES = 16
CODE_CHARS = 700


@dataclass(frozen=True, slots=True)
class Quote:
    """One quotable piece of passage `passage` (0-based): a sentence, list item or table row.

    Pieces of one paragraph, list or table share a `group`; a table row carries its header
    row, and a list item or row the lead-in line before its list ("Typical forms:"). `heading`
    is the last Markdown heading above the piece inside its passage ("" when the passage has
    none above it: the chunk's section then names where it sits). `step`: the number of an item
    of a numbered list as written ("1. Start with ..."), 0 for other pieces. `table`: for a row
    of a table a PDF flattened (each row a group of its own), the table's number in its passage
    (from 1); 0 for other pieces.
    """

    text: str
    kind: QuoteKind
    passage: int
    position: int
    group: int
    header: str = ""
    lead: str = ""
    heading: str = ""
    step: int = 0
    table: int = 0

    @property
    def words(self) -> int:
        """Its length in words."""
        return len(self.text.split())


def plain(text: str) -> str:
    """Text without Markdown markup (emphasis, code ticks, links, images), whitespace collapsed."""
    text = _LINK.sub(r"\1", _IMAGE.sub(" ", text))
    text = " | ".join(c.strip() for c in text.split("|")) if "|" in text else text
    return " ".join(_EMPHASIS.sub("", text).split())


# A paper's reference to its bibliography: one to three numbers from 1 in brackets, after a
# word, a closing parenthesis, a per cent sign or an abbreviation's dot and a space ("memory
# [13] and", "et al. [10]", "(RLHF/RLAIF; [12,2])"), or glued to a word of two letters or more
# ("Unlikelihood[44]", "GPT-J[43]").
# Not an index ("outputs[0]", "C[1]"), an interval ("[0, 1]") or a list of token ids.
_REFERENCE = re.compile(
    r"(?:(?<=[\w).%])(?:\s*[;,])?\s+|(?<=[^\W\d_]{2}|-[A-Z])|(?<=\)))"
    r"\[[1-9]\d{0,2}(?:\s*[,\u2013-]\s*[1-9]\d{0,2})*\](?=[\s.,;:)!?\u2013\u2014]|$)")


# A reference that is what a phrase names ("models such as [38, 2, 9].", "similar to [30].",
# "as in [47]."): without it the sentence reads cut ("... such as."), and as it is "[30]" reads
# as one of the answer's own citations; quoted, it says what it is ("similar to [ref 30].").
_NAMED_BY_REFERENCE = re.compile(
    r"(?<![\w-])(?:as|in|from|to|of|by|and|or|with|see|including|like|than|following)\s*$",
    re.IGNORECASE)


def without_references(text: str, keep_named: bool = False) -> str:
    """Prose without a paper's numbered references to its bibliography; with `keep_named`, a
    reference that a phrase names (`_NAMED_BY_REFERENCE`) is kept as "[ref 30]"."""
    def replaced(m: re.Match[str]) -> str:
        if keep_named and _NAMED_BY_REFERENCE.search(text, max(0, m.start() - 24), m.start()):
            return m.group(0).replace("[", "[ref ", 1)
        return ""
    return _REFERENCE.sub(replaced, text)


def _cells(line: str) -> str:
    return " | ".join(plain(c) for c in line.strip().strip("|").split("|"))


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of one paragraph (abbreviations such as `e.g.` and `et al.` protected). A
    PDF's numbered display formula is no sentence, and the sentence glued after its number
    is one of its own: "lrate = d−0.5 model · min(...) (3) This corresponds to increasing
    the learning rate ..." gives "This corresponds to ..."."""
    protected = _ABBREVIATION.sub(
        lambda m: m.group(1).replace(".", _PROTECTED) + _PROTECTED, paragraph
    )
    pieces = []
    for piece in _SENTENCE_END.split(protected):
        formula = _NUMBERED_FORMULA.search(piece)
        if formula is not None and "=" in piece[:formula.start()]:
            piece = piece[formula.end():]
        pieces.append(piece)
    return [p.replace(_PROTECTED, ".").strip() for p in pieces if p.strip()]


# A block of a passage: its kind, its text and, for an item of a numbered list, its number.
Block = tuple[str, str, int]


def _blocks(text: str, fence: str = "") -> list[Block]:
    """(kind, text, number) blocks: paragraphs joined from wrapped lines, list items (with
    their number in a numbered list, else 0), table rows, short fenced code blocks and the
    short parts of long ones (their lines as written), headings (their text). The rest of a
    long code block, a code block the passage cuts and rules become breaks. A passage that
    starts inside a code block (`fence`: the line that opened it) starts inside what holds
    it, as one that starts mid-sentence does: the block, and what follows it up to a blank
    line or a heading (the rest of the list item or list it sits in, whose lead-in is in the
    passage before), are a break."""
    blocks: list[Block] = []
    code: list[str] | None = [] if fence else None
    cut = bool(fence)  # still inside what the passage cut at its start
    for line in text.splitlines():
        if _FENCE.match(line):
            if code is None:
                code = []
            else:
                blocks += [("break", "", 0)] if cut else _code_blocks(code)
                code = None
            continue
        if code is not None:
            code.append(line.rstrip())
            continue
        if cut and line.strip() and not _HEADING.match(line):
            continue
        cut = False
        stripped = line.strip()
        if _HEADING.match(line):
            blocks.append(("heading", plain(_HEADING.sub("", line).strip("# \t")), 0))
        elif not stripped or _TABLE_RULE.match(line) or _RULE.match(line):
            blocks.append(("break", "", 0))
        elif stripped.startswith("|"):
            blocks.append(("row", stripped, 0))
        elif item := _ITEM.match(line):
            blocks.append(("item", item["text"], int(item["number"] or 0)))
        elif blocks and blocks[-1][0] in ("para", "item"):
            kind, body, number = blocks[-1]
            blocks[-1] = (kind, f"{body} {stripped}", number)
        else:
            blocks.append(("para", stripped, 0))
    return blocks


def _code_blocks(lines: list[str]) -> list[Block]:
    """A fenced block's lines as code blocks: the whole block when it is short; a long one by
    its parts between blank lines (a diagram's stages, a script's steps), each part that is
    short, as written; what is still too long is a break."""
    whole = _short_code(lines)
    if whole or not any(line.strip() for line in lines):
        return [("code", whole, 0)] if whole else [("break", "", 0)]
    parts: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            parts[-1].append(line)
        elif parts[-1]:
            parts.append([])
    blocks: list[Block] = []
    for part in parts:
        if body := _short_code(part):
            blocks.append(("code", body, 0))
        elif not blocks or blocks[-1][0] != "break":
            blocks.append(("break", "", 0))
    return blocks


def _short_code(lines: list[str]) -> str:
    """The lines as one quotable code block, dedented; "" when empty or too long to quote."""
    body = textwrap.dedent("\n".join(c for c in lines if c.strip())).strip()
    short = body and body.count("\n") < CODE_LINES and len(body) <= CODE_CHARS
    return body if short else ""


def quotes_of(text: str, passage: int, fence: str = "", *, pdf: bool = False) -> list[Quote]:
    """The quotable pieces of a passage, in order, without fragments or questions; `fence`
    is the line that opened the code block the passage starts inside (`Chunk.fence`). `pdf`
    says the passage is a PDF's text, where a paragraph in lower case is a sentence's rest."""
    out: list[Quote] = []
    group, header, lead, last, heading = 0, "", "", "", ""
    tables = 0
    for kind, body, number in _blocks(text, fence):
        if kind == "heading":
            heading, lead, last = body, "", ""
            continue
        if kind == "break":
            continue
        if kind != last or kind in ("para", "code"):
            group += 1
        header = header if kind == "row" else ""
        previous, last = last, kind
        if kind == "code":
            # Its lead-in only when the paragraph right before it ends with a colon.
            out.append(Quote(body, "code", passage, len(out), group,
                             lead=lead if previous == "para" else "", heading=heading))
            lead = ""  # the lead-in introduced the code, not a list after it
        elif kind == "row":
            if not header:
                header = _cells(body)
            else:
                out.append(Quote(_cells(body), "row", passage, len(out), group, header, lead,
                                 heading))
        elif kind == "item":
            item = without_references(plain(body), keep_named=True)
            if item.endswith(":"):
                lead = item
            elif item:
                out.append(Quote(item, "item", passage, len(out), group, lead=lead,
                                 heading=heading, step=number))
        else:
            sentences = split_sentences(without_references(plain(body), keep_named=True))
            if pdf and sentences:
                sentences[0] = _FOOTNOTE_MARK.sub("", sentences[0])
            glued = run_in_heading(sentences[0]) if sentences else ""
            if glued:
                sentences[0] = sentences[0][len(glued):].lstrip()
            # A sentence after a flattened table loses the table, and its run-in heading.
            # A sentence's rest after a table (in lower case) goes: its first half is elsewhere.
            sentences = [
                part if k == 0 else part[len(run_in_heading(part)):].lstrip()
                for sentence in sentences for k, part in enumerate(after_table(sentence))
                if k == 0 or not part[:1].islower()]
            sentences = [before_figure(sentence) for sentence in sentences]
            lead = sentences.pop() if sentences and sentences[-1].endswith(":") else ""
            # A PDF's run-in heading that is a sentence of its own ("... by score. Tokenizer.
            # We tokenize ...") heads the sentences after it, a paragraph of their own; it is
            # not a sentence to quote. (One glued to its sentence is only cut off: as the
            # paragraph's heading it cost key facts, see docs/benchmarks.md run 34.)
            own = ""
            for k, sentence in enumerate(sentences):
                if k + 1 < len(sentences) and _is_run_in_title(sentence):
                    own = sentence.rstrip(".")
                    group += k > 0
                    continue
                rows = table_rows(sentence) if pdf else []
                # The table's caption, when it is the sentence right before, leads each row in.
                caption = out[-1].text if rows and out and _CAPTION.match(out[-1].text) else ""
                tables += bool(rows)
                for row in rows:
                    # Each row of a flattened table is quoted alone, as a table of its own.
                    group += 1
                    out.append(Quote(row, "row", passage, len(out), group, lead=caption,
                                     heading=own or heading, table=tables))
                if rows:
                    group += 1
                    continue
                out.append(Quote(sentence, "sentence", passage, len(out), group,
                                 heading=own or heading))
    return _without_fragments(out, pdf)


def _without_fragments(quotes: list[Quote], pdf: bool = False) -> list[Quote]:
    """Drop a first sentence that starts mid-way (lower case), a last one that was cut (no
    end mark, unless it is a point a sign opens in Markdown) or announces what the passage no
    longer holds, the two halves of a sentence a PDF's figure or table interrupts, sentences
    glued to a fragment, questions, pieces without a letter, figure debris, PDF section
    headings and scraps of a few words with no end mark ("Abstract", "Also,")."""
    if quotes and quotes[0].kind == "sentence" and quotes[0].text[0].islower():
        quotes = quotes[1:]
    if quotes and quotes[-1].kind == "sentence" and (
            not (_ends(quotes[-1].text) or not pdf and _SIGNED.match(quotes[-1].text))
            or ANNOUNCES.search(quotes[-1].text)):
        quotes = quotes[:-1]
    halves = _interrupted(quotes, pdf)
    return [q for i, q in enumerate(quotes) if q.kind == "code" or (
        i not in halves and _LETTER.search(q.text) and not _asks(q)
        and not _DEBRIS.search(q.text) and not _GLUED.search(_ABBREVIATION.sub("", q.text))
        and not _is_label(q) and not _is_figure_or_code_text(q.text))]


# A list item that names an entry and then describes it as a question ("Abstention quality:
# on questions the corpus does not cover, how often does the system correctly decline?"): a
# label of a few words before a colon.
_LABELLED = re.compile(r"^[^:?]{1,40}:\s+\S")


def _asks(quote: Quote) -> bool:
    """Whether a piece is a question to the reader, not a statement to quote. A list's entry
    that is a label and the question it stands for is one of the list's entries: quoting the
    list without it would leave it short."""
    if not quote.text.endswith("?"):
        return False
    return not (quote.kind == "item" and _LABELLED.match(quote.text))


def _ends(text: str) -> bool:
    """Whether a sentence ends: an end mark, or a pointer to the figure a PDF put after it."""
    return bool(_TERMINAL.search(text)) or _points_at_its_end(text)


def _interrupted(quotes: list[Quote], pdf: bool = False) -> set[int]:
    """The pieces of a sentence that a figure caption or a table cuts in two, as PDFs lay them
    out: a paragraph that starts in lower case ("steps, and vary the learning rate ...") after
    a paragraph that ended without an end mark ("We use 2, 000 warmup"). Neither half is a
    sentence to quote. In a PDF such a paragraph is a sentence's rest even when its first half
    is not in the passage (on the page before, or above a figure the passage starts after)."""
    halves: set[int] = set()
    for i, q in enumerate(quotes):
        starts_group = i == 0 or quotes[i - 1].group != q.group
        if q.kind != "sentence" or not starts_group or not _MID_SENTENCE.match(q.text):
            continue
        # The first half ends the nearest paragraph before (captions between) left open;
        # without one, a Markdown paragraph in lower case may be a sentence about a lower-case
        # name ("transformers serve starts a server.") and is kept; a PDF's is not.
        ends = [j for j in range(i - 1, -1, -1) if quotes[j].kind == "sentence"
                and quotes[j + 1].group != quotes[j].group][:INTERRUPTING_PARAGRAPHS + 1]
        first_half = next((j for j in ends if not _TERMINAL.search(quotes[j].text)), None)
        if first_half is not None:
            halves.update((first_half, i))
        elif pdf or _REST.match(q.text):
            halves.add(i)
    return halves


def _is_run_in_title(sentence: str) -> bool:
    """Whether a sentence is a few capitalised words and a full stop: a PDF's run-in heading
    ("Tokenizer.", "Paged Optimizers.")."""
    return len(sentence.split()) <= FRAGMENT_WORDS and sentence.endswith(".") and _is_title(
        sentence)


def _is_label(quote: Quote) -> bool:
    """Whether a sentence without an end mark is a heading, a figure's labels or a scrap rather
    than a statement; with one, whether it is a few capitalised words: a PDF's run-in heading
    ending in a full stop ("QLORA. Using the components described above, ...")."""
    if quote.kind != "sentence":
        return False
    if _TERMINAL.search(quote.text):
        return _is_run_in_title(quote.text)
    heading = quote.words <= HEADING_WORDS and (
        _NUMBERED_HEADING.match(quote.text) is not None or _is_title(quote.text))
    return heading or quote.words <= FRAGMENT_WORDS


def _is_figure_or_code_text(text: str) -> bool:
    """A plot's axis read into the text ("LLaMA model size 0% 25% 50% 75% 100% 7B ...": four
    or more numbers from 0 in equal steps, or down to 0, five from anywhere, "0.55 0.60 0.65
    0.70 0.75", or four that double, a log axis: "... as can be seen in Figure 4 8 16 32 64
    LoRA r"), or code a PDF flattened into a sentence ("pi_logratios = pi_yw_logps -
    pi_yl_logps ...": three snake_case names and two `=` or a docstring's quotes).
    A table's flattened row ("36.2 33.7 38.1 42.0") is neither."""
    if len(_SNAKE_CASE.findall(text)) >= CODE_NAMES and (
            text.count("=") >= 2 or '"""' in text):
        return True
    return _axis_start(text.split()) is not None


def _axis_start(tokens: Sequence[str]) -> int | None:
    """Where the first plot axis among the tokens starts, None without one: `AXIS_TICKS`
    numbers from 0 in even steps (or down to 0, a vertical axis read from its top: "0.3 0.2
    0.1 0"), one more in even steps from anywhere, or (after another number) `AXIS_TICKS`
    that double."""
    run: list[float] = []
    for j, token in enumerate(tokens):
        tick = _TICK.fullmatch(token)
        run = [*run, float(tick.group(1))][-(AXIS_TICKS + 1):] if tick else []
        last = run[-AXIS_TICKS:]
        if len(last) == AXIS_TICKS and (last[0] == 0 and _even(last)
                                        or last[-1] == 0 and _even(last[::-1])):
            return j + 1 - AXIS_TICKS
        if len(run) > AXIS_TICKS and _even(run):
            return j + 1 - len(run)
        if len(run) > AXIS_TICKS and _doubles(last):
            return j + 1 - AXIS_TICKS
    return None


def _even(ticks: list[float]) -> bool:
    step = ticks[1] - ticks[0]
    return step > 0 and all(abs(b - a - step) < 1e-9 for a, b in pairwise(ticks))


def _doubles(ticks: list[float]) -> bool:
    return ticks[0] > 0 and all(b == 2 * a for a, b in pairwise(ticks))


def before_figure(sentence: str) -> str:
    """A sentence whose end a PDF ran into the figure it points to ("We find LoRA r is
    unrelated to final performance ... as can be seen in Figure 4 8 16 32 64 LoRA r 64.0
    ..."): the sentence up to its pointer ("... in Figure 4"); else the sentence as it is."""
    tokens = sentence.split()
    start = _axis_start(tokens)
    if start is None or start < FIGURE_SENTENCE_WORDS:
        return sentence
    head = " ".join(tokens[:start])
    return head if _points_at_its_end(head) else sentence


def _points_at_its_end(sentence: str) -> bool:
    """Whether a sentence without an end mark is whole, as a PDF leaves one before the figure
    it points to: prose from its first words (not a caption, "Figure 29: ..."), its brackets
    closed, ending in "Figure 4" or "Table 2"."""
    return bool(_POINTER_AT_END.search(sentence)) and not any(
        c.isdigit() for c in " ".join(sentence.split()[:6])) and sentence.count(
        "(") == sentence.count(")")


def _is_title(text: str) -> bool:
    """Title case with no digits ("Scaled Dot-Product Attention Multi-Head Attention": a
    figure's labels): every word capitalised. Digits are left to tables' flattened rows
    ("DPO 0.36 0.31 PPO 0.26 0.23"), which can hold an answer."""
    words = _WORD_START.findall(text)
    return bool(words) and not any(c.isdigit() for c in text) and all(
        w[0].isupper() for w in words)
