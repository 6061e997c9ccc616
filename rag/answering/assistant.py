"""The answer pipeline: check → (rewrite follow-up) → retrieve → abstention gate → compose →
citations, where "compose" depends on the answer style (rag/answering/styles.py): quote the
passages (extractive), generate then verify every sentence (verified), or generate (generative).

`Assistant.stream()` yields events as they happen (the passages found, then answer text as
it is generated, then the finished `Answer`), so the CLI and the bot can show progress;
`Assistant.answer()` returns only the finished answer.
"""

from __future__ import annotations

import asyncio
import re
import time
import unicodedata
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace

from rag.answering.extractive import PIECE_POOL, Extract, QuoteSelector, by_nearest_piece
from rag.answering.gate import (
    TERM_SEARCH_K,
    asked_term,
    defines_term,
    evidence_of,
    gate_probability,
    name_found,
    names_term,
    section_named,
    term_in_several_documents,
    term_named,
    term_unused,
    titled_by,
    titled_together,
    topic_unused,
)
from rag.answering.grounding import GroundingChecker, TermWeights, sentences
from rag.answering.injection import only_instructions, skeleton
from rag.answering.leak_guard import LeakGuard, leaks
from rag.answering.prompting import (
    INJECTION_MARKER,
    SYSTEM_PROMPT,
    Citation,
    asks_for_system_prompt,
    build_messages,
    context_blocks,
    describe,
    resolve_citations,
    sources_of,
)
from rag.answering.social import social_reply
from rag.answering.styles import (
    STYLE_LABELS,
    STYLES,
    UNVERIFIED,
    AnswerSentence,
    Style,
    default_style,
)
from rag.answering.verified import FALLBACK_NOTE, verify
from rag.answering.versions import (
    VersionIndex,
    asked_kind,
    asked_names,
    names,
    versioned_names,
)
from rag.config import AnswerSettings
from rag.course.faq import is_faq
from rag.index.documents import Hit
from rag.llm.base import ChatModel
from rag.llm.registry import ModelRegistry
from rag.llm.settings import LLMSettings
from rag.retrieval.followup import (
    acceptable_rewrite,
    asks_anew,
    needs_context,
    standalone_query,
)
from rag.retrieval.query import (
    PART_TERMS,
    asks_for_authors,
    comparison_sides,
    message_parts,
    own_terms,
)
from rag.retrieval.references import asked_topic, asks_for_overview, without_named_documents
from rag.retrieval.retriever import Retriever

NOT_COVERED = "not_covered"
# A comparison's side is searched this deep for a passage that names it.
SIDE_SEARCH_K = 5
# The gate's probability a question that names a course document needs over that document's
# passages, scored without the names. The threshold fitted on questions that name none (0.888)
# refused 17 of the 354 in-scope questions of eval/ and dev v2 that name one; the 35 off-topic
# ones of eval/named_offtopic_questions.jsonl ("Which hotel does the class 2 overview recommend
# in Lisbon?") score at most 0.1 there.
NAMED_DOCUMENT_FLOOR = 0.25
DECLINED = "declined"
SOCIAL = "social"  # a reply to thanks or a greeting (rag/answering/social.py): no search
# A verified answer that fell back to quotes because too little of the draft was supported.
FELL_BACK = "verification_fallback"
# An answer from other materials: the document the question names never discusses its topic.
ELSEWHERE = "not_in_named_document"
NO_QUOTE = (
    "I found passages on this, but no sentence in them answers it directly; see the sources."
)
_CITED = re.compile(r"\[(\d{1,3})\]")
_REWRITE_PROMPT = (
    "Rewrite the student's last question so that it can be understood without the "
    "conversation. Reply with the rewritten question only."
)
_WORD = re.compile(r"[^\W_]", re.UNICODE)


class InvalidQuestion(ValueError):
    """The question cannot be answered as written; the message says why, for the user."""


class UnknownStyle(InvalidQuestion):
    """No answer style of that name."""


@dataclass(frozen=True)
class Answer:
    """A finished answer (or an honest refusal) with its evidence and timings."""

    question: str
    text: str
    refused: bool
    citations: tuple[Citation, ...]
    retrieved: tuple[Hit, ...]
    model: str
    timings: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    search_query: str = ""
    style: str = "generative"
    sentences: tuple[AnswerSentence, ...] = ()
    note: str = ""

    @property
    def made(self) -> str:
        """How the answer was made, for the CLI and the Discord footer."""
        if self.refused:
            if self.reason == SOCIAL:
                return "no search needed"
            return "declined" if self.reason == DECLINED else "not covered by the materials"
        return STYLE_LABELS[self.style]

    def as_json(self) -> dict:
        """The `ask --json` shape."""
        keep = ("retrieve_ms", "generate_ms", "verify_ms", "total_ms")
        return {
            "question": self.question,
            "answer": self.text,
            "refused": self.refused,
            "style": self.style,
            "made": self.made,
            "note": self.note,
            "sentences": [s.as_json() for s in self.sentences],
            "citations": [c.as_json() for c in self.citations],
            "retrieved": [h.as_json() for h in self.retrieved],
            "model": self.model,
            "timings": {k: round(v, 1) for k, v in self.timings.items() if k in keep},
        }


@dataclass(frozen=True)
class Elsewhere:
    """A topic the documents a question names never discuss (`named_without_topic`)."""

    topic: str
    sources: tuple[str, ...]

    @property
    def question(self) -> str:
        """What the other materials are asked: the topic alone, a term question."""
        return f"{self.topic}?"

    def told(self, answer: Answer, asked: str) -> Answer:
        """The other materials' answer to the question as asked, saying where it is from."""
        names = " and ".join(self.sources)
        verb = "doesn't" if len(self.sources) == 1 else "don't"
        note = f"{names} {verb} discuss “{self.topic}”"
        if answer.refused:
            note = f"{note}."
        else:
            made = "quotes" if answer.style == "extractive" else "draws on"
            note = f"{note}, so this answer {made} other course materials."
        # A verified answer's own note (a fallback to quotes) and reason are kept.
        return replace(answer, question=asked, reason=answer.reason or ELSEWHERE,
                       note=f"{note} {answer.note}" if answer.note else note)


@dataclass(frozen=True)
class Retrieved:
    """Event: the passages found for the question."""

    hits: tuple[Hit, ...]
    search_query: str
    style: str = "generative"


@dataclass(frozen=True)
class Token:
    """Event: the next piece of answer text."""

    text: str


@dataclass(frozen=True)
class Finished:
    """Event: the final answer."""

    answer: Answer


AnswerEvent = Retrieved | Token | Finished


def check_question(question: str, max_chars: int) -> str:
    """Normalise a question, or raise InvalidQuestion with a message meant for the student."""
    text = "".join(
        ch if ch in "\n\t" or unicodedata.category(ch)[0] != "C" else " " for ch in question
    )
    text = " ".join(text.split())
    if not text:
        raise InvalidQuestion("Please type a question: that message has no text in it.")
    if not _WORD.search(text):
        raise InvalidQuestion("I can only answer questions written in words, not emoji alone.")
    if len(text) > max_chars:
        raise InvalidQuestion(
            f"That question is {len(text):,} characters long; please keep it under "
            f"{max_chars:,} and ask about one thing at a time."
        )
    return text


def bounded_history(history: Sequence[dict[str, str]], turns: int, chars: int) -> list[dict]:
    """The last `turns` messages, each cut to `chars` characters."""
    kept = [m for m in history if m.get("role") in ("user", "assistant") and m.get("content")]
    return [{"role": m["role"], "content": m["content"][:chars]} for m in kept[-turns:]]


class Assistant:
    """Answers questions from the course materials with a chat model from the registry."""

    def __init__(
        self,
        retriever: Retriever,
        models: ModelRegistry,
        settings: AnswerSettings,
        llm: LLMSettings,
        checker: GroundingChecker | None = None,
    ) -> None:
        self.retriever = retriever
        self.models = models
        self.settings = settings
        self.llm = llm
        # The verifier of `verified` answers; without one they are generated unverified.
        self.checker = checker
        self.selector = QuoteSelector(retriever.embedder)
        # Versions of model families the materials name ("GPT-3", "GPT-4"): GPT-5 is not covered.
        self.versions = VersionIndex(retriever.store)

    def warm_quotes(self, stop: Callable[[], bool] = lambda: False) -> int:
        """Embed the quotable pieces of every chunk of the live index ahead of questions (see
        `PieceVectors`); returns how many texts were embedded. Meant for a background thread
        at start-up: a question meanwhile embeds what it needs itself."""
        store = self.retriever.store
        ids = [cid for entry in store.manifest().values() for cid in entry.chunk_ids]
        return self.selector.vectors.warm((chunk for _, chunk in store.iter_chunks(ids)),
                                          stop=stop)

    def style_for(self, model: str, requested: str | None = None) -> Style:
        """The answer style: asked for, else configured, else the model's, else its
        backend's default (quotes for local models, verified for served ones)."""
        chosen = requested or self.settings.style
        if chosen is None:
            spec = self.llm.models[model]
            return spec.answer_style or default_style(spec.backend)
        if chosen not in STYLES:
            raise UnknownStyle(f"Unknown answer style '{chosen}'; use one of: {', '.join(STYLES)}")
        return chosen  # type: ignore[return-value]

    async def answer(
        self,
        question: str,
        *,
        history: Sequence[dict[str, str]] = (),
        model: str | None = None,
        preview: bool = False,
        style: str | None = None,
    ) -> Answer:
        """The finished answer to a question."""
        async for event in self.stream(
            question, history=history, model=model, preview=preview, style=style
        ):
            if isinstance(event, Finished):
                return event.answer
        raise RuntimeError("the answer stream ended without an answer")  # pragma: no cover

    async def stream(
        self,
        question: str,
        *,
        history: Sequence[dict[str, str]] = (),
        model: str | None = None,
        preview: bool = False,
        style: str | None = None,
    ) -> AsyncIterator[AnswerEvent]:
        """Answer a question, yielding progress events and finally `Finished`; `preview`
        (instructors) also draws on material not yet released."""
        began = time.perf_counter()
        question = check_question(question, self.settings.max_question_chars)
        chat = self.models.get(model)
        chosen = self.style_for(chat.name, style)
        timings: dict[str, float] = {}
        recent = bounded_history(history, self.settings.history_turns, self.settings.history_chars)
        if asks_for_system_prompt(question):
            yield Finished(self._declined(question, chat.name, began))
            return
        if only_instructions(question):
            yield Finished(self._declined(question, chat.name, began, NOT_A_QUESTION))
            return
        reply = social_reply(question)
        if reply is not None:
            yield Finished(replace(self._declined(question, chat.name, began, reply),
                                   reason=SOCIAL))
            return
        query = await self.search_query_for(question, recent, chat, timings, preview)
        if not preview and await asyncio.to_thread(self.retriever.names_only_unreleased, query):
            yield Finished(replace(self._declined(question, chat.name, began, NOT_RELEASED),
                                   reason=NOT_COVERED, search_query=query))
            return
        elsewhere = await asyncio.to_thread(self.named_without_topic, query, preview)
        if elsewhere is not None:
            # The named document never discusses the topic: ask the rest of the materials
            # about it, and say so with the answer.
            async for event in self.stream(elsewhere.question, model=model, preview=preview,
                                           style=chosen):
                if isinstance(event, Finished):
                    event = Finished(elsewhere.told(event.answer, question))
                yield event
            return
        started = time.perf_counter()
        searched = tuple(
            await asyncio.to_thread(self.retriever.search, query, self.settings.k, preview=preview)
        )
        nearest = await asyncio.to_thread(self.nearest_first, query, preview)
        hits = await asyncio.to_thread(self.with_term_passage, query, nearest, preview)
        hits = await asyncio.to_thread(self.with_title_page, query, hits, preview)
        hits, overview = await asyncio.to_thread(self.with_opening, query, hits, preview)
        timings["retrieve_ms"] = (time.perf_counter() - started) * 1000
        # The gate judges the search's own k passages, as it was fitted on them, and what the
        # steps above added; the answer is drawn from the reranked ones.
        judged = (*searched, *(hit for hit in hits if hit not in nearest and hit not in searched))
        unknown = await asyncio.to_thread(self.unknown_to_materials, question, preview)
        # What a document the index holds is about is covered by the document itself.
        covered = not unknown and (
            overview or await asyncio.to_thread(self.covers, query, judged, preview))
        if not unknown and not covered:
            # A comparison the gate refuses is judged again with a passage for each side
            # (their search counts as retrieval time; the gate's judgements do not).
            started = time.perf_counter()
            sided = await asyncio.to_thread(self.with_sides, query, judged, preview)
            timings["retrieve_ms"] += (time.perf_counter() - started) * 1000
            if len(sided) > len(judged) and await asyncio.to_thread(self.covers, query, sided,
                                                                    preview):
                hits = (*hits, *(hit for hit in sided if hit not in judged and hit not in hits))
                covered = True
        if not unknown and not covered:
            # A message of several parts is covered when one part, searched alone, is: the
            # story around a student's question dilutes the whole message's search
            # (docs/benchmarks.md, run 39).
            started = time.perf_counter()
            part = await asyncio.to_thread(self.covered_part, query, preview)
            timings["retrieve_ms"] += (time.perf_counter() - started) * 1000
            if part is not None:
                seen = {hit.chunk.id for hit in part}
                hits, covered = (*part, *(hit for hit in hits if hit.chunk.id not in seen)), True
        yield Retrieved(hits, query, chosen)
        if not covered:
            yield Finished(self._not_covered(question, query, hits, chat.name, timings, began,
                                             unknown, preview))
            return
        if chosen == "extractive":
            said = next((m["content"] for m in reversed(recent) if m["role"] == "assistant"), "")
            answer = await self._extractive(question, query, hits, chat.name, timings, said)
            yield Finished(_finished(answer, began))
            return
        async for event in self._generate(question, query, hits, recent, chat, timings, began):
            if isinstance(event, Finished) and chosen == "verified" and not event.answer.refused:
                event = Finished(_finished(await self._verified(event.answer), began))
            yield event

    def nearest_first(self, question: str, preview: bool = False) -> tuple[Hit, ...]:
        """The passages an answer draws on: the k of a deeper search (`PIECE_POOL`) that rank
        best by the search and by their sentence nearest the question
        (`extractive.by_nearest_piece`), then what the search added after its pool (the
        lexical best). A passage's vector averages all it says, so the one whose single
        sentence answers ranks below passages that are about the topic as a whole
        (docs/benchmarks.md, run 41)."""
        deeper = self.retriever.search(question, PIECE_POOL, preview=preview)
        pool = deeper[:PIECE_POOL]
        nearest = self.selector.nearest_pieces(self.retriever.corrected(question), pool)
        return (*by_nearest_piece(pool, nearest, self.settings.k), *deeper[PIECE_POOL:])

    def unknown_to_materials(self, question: str, preview: bool = False) -> list[str]:
        """Versions of model families ("GPT-5"), names ("XGBoost") and kinds of a thing
        ("speculative decoding": the materials speak of decoding, never of speculative) the
        question uses and the released materials (all of them in a `preview`) never do
        (rag/answering/versions.py); the materials are read only when the question has one of
        them. A kind is judged with the question's misspellings corrected."""
        corrected = self.retriever.corrected(question) if asked_kind(question) else question
        if not versioned_names(question) and not names(question) and not asked_kind(corrected):
            return []
        hidden = frozenset() if preview else self.retriever.unreleased()
        catalogue = self.versions.catalogue(hidden)
        return ([v.upper() for v in catalogue.unknown(question)]
                + catalogue.unknown_names(question) + catalogue.unknown_kinds(corrected))

    def rare_names(self, question: str, preview: bool = False) -> list[str]:
        """The names the question uses that only a few passages of the released materials (all
        of them in a `preview`) use (`VersionCatalogue.rare_names`)."""
        if not asked_names(question):
            return []
        hidden = frozenset() if preview else self.retriever.unreleased()
        return self.versions.catalogue(hidden).rare_names(question)

    def named_without_topic(self, question: str, preview: bool = False) -> Elsewhere | None:
        """For a question that asks a document it names about a term ("What does the week 2
        guide say about tokenization?", `asked_topic`) that no passage of the document uses
        (`topic_unused`; misspellings corrected), what to ask the other materials instead.
        Searched within the document, such a question finds its passages nearest in meaning
        ("trillions of tokens", "autocomplete") and would quote them as if they answered."""
        corrected = self.retriever.corrected(question)
        topic = asked_topic(corrected)
        if not topic:
            return None
        named = self.retriever.named_passages(corrected, preview=preview)
        if not named or not all(topic_unused(topic, chunks) for chunks in named.values()):
            return None
        return Elsewhere(topic, tuple(named))

    def with_term_passage(
        self, question: str, hits: tuple[Hit, ...], preview: bool = False
    ) -> tuple[Hit, ...]:
        """The hits, and for a question that is only a term ("perplexity?", "What is LoRA?")
        which none of them defines (gate.defines_term), the best passage of a deeper search
        that does, first; failing that, when none of them even names it (gate.names_term),
        the best that names it. A one-word question embeds far from the passage defining it,
        the word is as frequent in passing mentions elsewhere, and a section titled with the
        term ("LoRA: Low-Rank Adaptation") may never say what it is."""
        asked = asked_term(self.retriever.corrected(question))
        if not asked or any(defines_term(hit, asked) for hit in hits):
            return hits
        seen = {hit.chunk.id for hit in hits}
        deeper = [hit for hit in self.retriever.search(question, TERM_SEARCH_K, preview=preview,
                                                       lexical_extra=0)
                  if hit.chunk.id not in seen]
        # One that defines it, else (when none of the hits even names it) one that names it.
        found = next((hit for hit in deeper if defines_term(hit, asked)), None)
        if found is None and not any(names_term(hit, asked) for hit in hits):
            found = next((hit for hit in deeper if names_term(hit, asked)), None)
        return hits if found is None else (found, *hits)

    def with_title_page(
        self, question: str, hits: tuple[Hit, ...], preview: bool = False
    ) -> tuple[Hit, ...]:
        """The hits, and for a question that asks who wrote a paper (`asks_for_authors`) the
        paper's first passage, where its title and authors are, after them when they lack
        it. No search finds it: the question's words are not the authors' names."""
        if not asks_for_authors(question):
            return hits
        page = self.retriever.title_page(question, hits, preview=preview)
        if page is None or any(hit.chunk.id == page.chunk.id for hit in hits):
            return hits
        return (*hits, page)

    def with_opening(
        self, question: str, hits: tuple[Hit, ...], preview: bool = False
    ) -> tuple[tuple[Hit, ...], bool]:
        """For a question that only asks what a named document is about ("what does the week
        6 guide cover?", `asks_for_overview`): the passage that opens it first, then the other
        hits, and True; else the hits as they are, and False. A search for "cover" or
        "summary" finds passages that use those words, not the document's introduction."""
        if not asks_for_overview(question):
            return hits, False
        opening = self.retriever.opening(question, preview=preview)
        if opening is None:
            return hits, False
        return (opening, *(hit for hit in hits if hit.chunk.id != opening.chunk.id)), True

    def with_sides(
        self, question: str, hits: tuple[Hit, ...], preview: bool = False
    ) -> tuple[Hit, ...]:
        """The hits, and for a question that compares two things ("temperature vs top-p",
        `comparison_sides`) a passage for each side that they lack, after them: of a search
        for the side, the best that names it as what it is about (gate.names_term), else the
        best. A search for the whole question finds passages about the pair or about the side
        it words more strongly; the other side's own section ("Top-k sampling") is often
        missing, and then the gate refuses what the materials cover. `stream` adds them only
        to a comparison the gate refuses: added to one it answers, they cost key facts as
        often as they brought them (docs/benchmarks.md, run 32)."""
        sides = comparison_sides(self.retriever.corrected(question))
        if not sides:
            return hits
        have = {hit.chunk.id for hit in hits}
        found = []
        for side, side_hits in zip(sides, self.retriever.search_many(sides, SIDE_SEARCH_K,
                                                                     preview=preview),
                                   strict=True):
            # The side's own section ("Temperature") before passages that only use its words.
            asked = [term for term in own_terms(side) if not term[:1].isdigit()]
            best = next((hit for hit in side_hits if names_term(hit, asked)),
                        side_hits[0] if side_hits else None)
            if best is not None and best.chunk.id not in have:
                found.append(best)
                have.add(best.chunk.id)
        return (*hits, *found)

    def covered_part(self, question: str, preview: bool = False) -> tuple[Hit, ...] | None:
        """For a message of several parts (`message_parts`: "can llama-13b actually run on
        one gpu? prof said it beats gpt-3 which sounds wild"), the passages of the first part
        that the materials cover, searched alone; None when no part is. They are quoted from
        first, then the whole message's. A part that names a course document is judged
        alone only when it asks something besides the name ("According to the DPO paper, how
        do I train for a marathon?": the name is not what it asks about; "does the lora paper
        say anything about switching adapters while the base weights stay loaded??" is)."""
        for part in message_parts(question):
            if self.retriever.names_documents(part) and len(
                    set(own_terms(without_named_documents(part)))) < PART_TERMS:
                continue
            hits = tuple(self.retriever.search(part, self.settings.k, preview=preview))
            if self.covers(part, hits, preview):
                return hits
        return None

    def covered_alone(self, question: str, preview: bool = False) -> bool:
        """Whether the materials cover a question searched on its own."""
        hits = self.retriever.search(question, self.settings.k, preview=preview)
        return self.covers(question, hits, preview)

    def covers(self, question: str, hits: Sequence[Hit], preview: bool = False) -> bool:
        """Whether the materials cover a question: the gate's probability is over its
        threshold, a retrieved passage's heading names the question (gate.titled_by) or two
        passages' headings name its two sides ("top-p vs top-k sampling":
        gate.titled_together), or the question is only a term that a retrieved passage names
        (gate.term_named) or that passages of several documents use (a term of several words:
        gate.term_in_several_documents), or a retrieved passage uses a name the question asks
        about that only a few passages use (gate.name_found: "when did DeepSeek-R1 come out?").

        A question that names a document was searched within it. There, the words that name
        it ("the Transformer paper", "say") match little, and one document holds fewer related
        passages than the whole index (the gate's agreement): whether the materials cover it
        is then also judged on its passages scored against the question without the names,
        and on a search of the whole index, and covered when it names a part of the document
        by its heading (gate.section_named). A student who names a course document asks about
        the course, so over that document's passages the gate's probability need only reach
        `NAMED_DOCUMENT_FLOOR`, not the threshold fitted on questions that name none.
        """
        # The heading rule reads the question as the search did, its misspellings corrected
        # ("what does tempreature do" and the section "Temperature").
        corrected = self.retriever.corrected(question)

        # A heading naming half of a question of several words leaves the rest unasked-for,
        # but a term's words are all the subject: "flash attention?" and a section "Attention".
        several_terms = len(set(asked_term(corrected))) > 1
        rare = self.rare_names(corrected, preview)

        def covered(found: Sequence[Hit]) -> bool:
            if term_unused(corrected, found):
                return False
            return (self.coverage_probability(found) >= self.settings.abstain_below
                    or name_found(rare, found)
                    or (titled_by(corrected, found) and not several_terms)
                    or (titled_together(corrected, found) and not several_terms)
                    or term_named(corrected, found)
                    or term_in_several_documents(corrected, found))

        if covered(hits):
            return True
        if not self.retriever.names_documents(question):
            return False
        k = self.settings.k
        named = self.retriever.search(question, k, preview=preview, scored_without_names=True)
        if covered(named) or section_named(corrected, named) or (
                not term_unused(corrected, named)
                and self.coverage_probability(named) >= NAMED_DOCUMENT_FLOOR):
            return True
        return covered(self.retriever.search(question, k, preview=preview,
                                             named_documents=False))

    def coverage_probability(self, hits: Sequence[Hit]) -> float:
        """P(the materials cover the question), from the strongest retrieved evidence."""
        if not hits:
            return 0.0
        faq = [h.dense for h in hits if is_faq(h.chunk.source)]
        evidence = evidence_of("", True, [h.dense for h in hits], [h.coverage for h in hits], faq)
        return gate_probability(evidence, self.settings)

    async def _generate(
        self,
        question: str,
        query: str,
        hits: tuple[Hit, ...],
        history: list[dict],
        chat: ChatModel,
        timings: dict[str, float],
        began: float,
    ) -> AsyncIterator[AnswerEvent]:
        started = time.perf_counter()
        # Token counting may load the local model's tokenizer: keep it off the event loop.
        messages, used = await asyncio.to_thread(self._prompt, question, hits, history[-2:], chat)
        timings["prompt_ms"] = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        pieces: list[str] = []
        # The guard holds back text that may be the start of the system prompt, so that no
        # copy of it reaches the terminal or a Discord draft; a leak ends the generation.
        guard = LeakGuard([m["content"] for m in messages if m["role"] == "system"])
        stream = chat.stream(
            messages, max_tokens=self.llm.max_new_tokens, temperature=self.llm.temperature
        )
        try:
            async for piece in stream:
                if not pieces:
                    timings["first_token_ms"] = (time.perf_counter() - started) * 1000
                pieces.append(piece)
                if shown := guard.feed(piece):
                    yield Token(shown)
                if guard.leaked:
                    break
        finally:
            await _close(stream)
        if tail := guard.finish():
            yield Token(tail)
        timings["generate_ms"] = (time.perf_counter() - started) * 1000
        raw = "".join(pieces)
        if guard.leaked or _leaks_rules(raw, messages):
            yield Finished(self._declined(question, chat.name, began))
            return
        text, citations = resolve_citations(raw.replace(INJECTION_MARKER, "").strip(), used)
        timings["total_ms"] = (time.perf_counter() - began) * 1000
        yield Finished(
            Answer(
                question=question,
                text=text or "The model returned no text; please try rephrasing the question.",
                refused=False,
                citations=tuple(citations or sources_of(used)),
                retrieved=hits,
                model=chat.name,
                timings=timings,
                search_query=query,
                sentences=_unverified(text),
            )
        )

    async def _extractive(
        self, question: str, query: str, hits: tuple[Hit, ...], model: str,
        timings: dict[str, float], said: str = "",
    ) -> Answer:
        """The quote-first answer: the passages' own sentences, no generation (in a
        conversation, preferring what the last answer, `said`, did not quote)."""
        started = time.perf_counter()
        extract = await asyncio.to_thread(self._extract, query, hits, said)
        timings["generate_ms"] = 0.0
        timings["compose_ms"] = (time.perf_counter() - started) * 1000
        if not extract.sentences:
            return Answer(question, NO_QUOTE, False, tuple(sources_of(hits)), hits, model,
                          timings, search_query=query, style="extractive")
        return Answer(question, extract.text, False, _citations(extract.cited, hits), hits,
                      model, timings, search_query=query, style="extractive",
                      sentences=extract.sentences)

    def _extract(self, query: str, hits: Sequence[Hit], said: str = "") -> Extract:
        """Pick the quotes for the query as the search read it, misspellings corrected (idf
        over the index when there is a checker)."""
        idf = (self.checker.term_weights(hits) if self.checker is not None
               else TermWeights(h.chunk.text for h in hits))
        return self.selector.extract(self.retriever.corrected(query), hits, idf, said)

    async def _verified(self, draft: Answer) -> Answer:
        """Keep the draft's supported sentences; quote the passages when too few survive."""
        if self.checker is None:
            return replace(draft, note="Not verified: this assistant has no verifier.")
        started = time.perf_counter()
        checked = await asyncio.to_thread(verify, draft.text, draft.retrieved, self.checker,
                                        draft.question)
        timings = {**draft.timings, "verify_ms": (time.perf_counter() - started) * 1000}
        if checked.too_little:
            quoted = await self._extractive(draft.question, draft.search_query, draft.retrieved,
                                            draft.model, timings)
            dropped = tuple(replace(s, shown=False) for s in checked.sentences)
            return replace(quoted, note=FALLBACK_NOTE, reason=FELL_BACK,
                           sentences=dropped + quoted.sentences)
        numbers = tuple(dict.fromkeys(s.citation for s in checked.kept if s.citation))
        return replace(draft, text=checked.text, style="verified", timings=timings,
                       citations=_citations(numbers, checked.passages),
                       retrieved=checked.passages, sentences=checked.sentences,
                       note=checked.note())

    def _prompt(
        self, question: str, hits: Sequence[Hit], history: list[dict], chat: ChatModel
    ) -> tuple[list[dict[str, str]], list[Hit]]:
        """Messages that fit the model's context window, trimming passages by tokens."""
        spec = self.llm.models[chat.name]
        fixed = build_messages(question, "", history)
        overhead = sum(chat.count_tokens(m["content"]) + 8 for m in fixed)
        budget = spec.context_window - self.llm.max_new_tokens - overhead - 16
        context, used = context_blocks(hits, max(budget, 0), chat.count_tokens)
        return build_messages(question, context, history), used

    async def search_query_for(
        self, question: str, history: list[dict], chat: ChatModel, timings: dict[str, float],
        preview: bool = False,
    ) -> str:
        """The search query for a question: a follow-up carries its conversation's key terms.

        The deterministic query (rag/retrieval/followup.py) is used unless the model is
        trusted to rewrite follow-ups and its rewrite passes the checks. A short question that
        asks what something is ("what is BPE?" after "what is LoRA?") stands alone when the
        materials cover it alone: carried over, "LoRA: what is BPE?" found neither.
        """
        earlier = [m["content"] for m in history if m["role"] == "user"]
        if not self.settings.rewrite_followups or not earlier or not needs_context(question):
            return question
        if asks_anew(question) and await asyncio.to_thread(self.covered_alone, question,
                                                           preview):
            return question
        fallback = standalone_query(question, earlier)
        if not self.llm.models[chat.name].trusted_rewriter:
            return fallback
        started = time.perf_counter()
        convo = "\n".join(f"{m['role']}: {m['content']}" for m in history)
        messages = [
            {"role": "system", "content": _REWRITE_PROMPT},
            {"role": "user", "content": f"{convo}\n\nLast question: {question}"},
        ]
        done = await chat.complete(messages, max_tokens=48, temperature=0.0)
        timings["rewrite_ms"] = (time.perf_counter() - started) * 1000
        rewritten = done.text.strip()
        return rewritten if acceptable_rewrite(rewritten, question, earlier) else fallback

    def _not_covered(
        self,
        question: str,
        query: str,
        hits: Sequence[Hit],
        model: str,
        timings: dict[str, float],
        began: float,
        unknown: Sequence[str] = (),
        preview: bool = False,
    ) -> Answer:
        nearest = list(dict.fromkeys(describe(h) for h in hits[:3]))
        text = "The course materials don't cover this question, so I won't guess."
        if unknown:
            # While some material is unreleased, say so: a name only upcoming material uses
            # then reads like one no material uses, and the sentence is true of both.
            released = not preview and self.retriever.unreleased()
            which = "The materials released so far" if released else "They"
            text += f" {which} never mention {', '.join(unknown)}."
        if nearest:
            text += " The closest sections I found are: " + "; ".join(nearest) + "."
        timings["generate_ms"] = 0.0
        timings["total_ms"] = (time.perf_counter() - began) * 1000
        return Answer(question, text, True, (), tuple(hits), model, timings, NOT_COVERED, query)

    def _declined(
        self, question: str, model: str, began: float, text: str | None = None
    ) -> Answer:
        """A refusal before any search: a request for the hidden instructions (or `text`)."""
        text = text or CANNOT_SHARE
        timings = {
            "retrieve_ms": 0.0,
            "generate_ms": 0.0,
            "total_ms": (time.perf_counter() - began) * 1000,
        }
        return Answer(question, text, True, (), (), model, timings, DECLINED, question)


CANNOT_SHARE = (
    "I can't share my instructions, but I'm happy to help with anything in the course materials."
)
NOT_RELEASED = ("The document you asked about is not released yet, so I can't answer from it. "
                "Ask again once it is out, or ask about the material released so far.")
NOT_A_QUESTION = (
    "That reads as instructions to the bot rather than a question, so I won't follow it. "
    "Ask me anything about the course materials."
)


def _leaks_rules(text: str, messages: Sequence[dict[str, str]]) -> bool:
    """Whether a finished answer gives away the system prompt (in any disguise)."""
    rules = [m["content"] for m in messages if m["role"] == "system"]
    return leaks(text, [*rules, SYSTEM_PROMPT]) or "keep these rules private" in skeleton(text)


async def _close(stream: AsyncIterator[str]) -> None:
    """Stop a model's stream early (an async generator keeps generating until closed)."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


def _finished(answer: Answer, began: float) -> Answer:
    """The answer with its end-to-end time."""
    return replace(answer, timings={**answer.timings,
                                    "total_ms": (time.perf_counter() - began) * 1000})


def _citations(numbers: Sequence[int], passages: Sequence[Hit]) -> tuple[Citation, ...]:
    """Citations of passages by their 1-based numbers."""
    return tuple(Citation(n, passages[n - 1].chunk.source, passages[n - 1].chunk.page,
                          passages[n - 1].chunk.section) for n in numbers)


def _unverified(text: str) -> tuple[AnswerSentence, ...]:
    """A generated answer's sentences, each with the first passage it cites."""
    found = []
    for sentence in sentences(text):
        cited = _CITED.search(sentence)
        found.append(AnswerSentence(sentence, int(cited.group(1)) if cited else None, UNVERIFIED))
    return tuple(found)
