"""Which retrieved passages a question names by document and section."""

import numpy as np

from rag.answering.extractive import select
from rag.answering.quotes import quotes_of
from rag.index.documents import Chunk, Hit
from rag.retrieval.references import (
    asked_topic,
    asks_for_overview,
    named_sources,
    referenced,
    self_names,
    without_named_documents,
)


def hit(source: str, section: str, text: str = "Some text.") -> Hit:
    page = 3 if source.endswith(".pdf") else None
    return Hit(Chunk(text, source, page, section, 0, len(text)), 0.5)


HITS = [
    hit("papers/vllm_pagedattention.pdf", "7.1 Kernel Microbenchmark"),
    hit("notes/serving-with-vllm.md", "Serving with vLLM > PagedAttention"),
    hit("papers/vllm_pagedattention.pdf", "5.1 Kernel-level Optimization"),
    hit("guides/week6-transformers-fundamentals.md",
        "Study > Transformer Architecture > What a transformer is"),
    hit("guides/week2-support-guide.md", "Week 2 Support Guide > 1. What is a Transformer?"),
    hit("papers/instructgpt.pdf", "5.2 Who are we aligning to?"),
    hit("guides/class2-llm-overview.md", "Class 2: LLM Overview > 5. Alignment: DPO & PPO"),
    hit("papers/vllm_pagedattention.pdf", "5.10 Something else"),
    hit("papers/lora.pdf", "4 Our Method"),
    hit("papers/qlora.pdf", "2 Background"),
    hit("notes/fine-tuning-sft-lora.md", "Fine-tuning > LoRA"),
]


def test_a_named_paper_is_its_pdf_and_a_named_guide_its_markdown_file() -> None:
    assert referenced("What does the vLLM paper say about kernels?", HITS) == [0, 2, 7]
    # "LoRA" is a word of lora.pdf, not of qlora.pdf; the notes on LoRA are not a paper.
    assert referenced("According to the LoRA paper, how much storage is saved?", HITS) == [8]
    # "week6-transformers-fundamentals" reads as week, 6, transformers, fundamentals.
    assert referenced("What does the week 6 guide say?", HITS) == [3]
    assert referenced("What does the class 2 overview say about alignment?", HITS) == [6]


def test_a_numbered_section_matches_its_heading_and_not_a_longer_number() -> None:
    question = "What GPU kernel optimizations does Section 5.1 of the vLLM paper describe?"
    assert referenced(question, HITS) == [2]
    assert referenced("what's in §5 of the vllm paper", HITS) == [2, 7]


def test_a_quoted_title_or_the_words_before_section_or_part_name_a_heading() -> None:
    assert referenced("In the Week 6 guide's 'What a transformer is' part, how is a "
                      "transformer described?", HITS) == [3]
    assert referenced("Section 5.2 of the InstructGPT paper asks 'Who are we aligning to?'. "
                      "Whose preferences?", HITS) == [5]
    assert referenced("According to the alignment section of the Class 2 overview, what "
                      "is PPO?", HITS) == [6]


def test_questions_that_name_nothing_retrieved_or_only_guess_keep_every_passage() -> None:
    assert referenced("What is PagedAttention?", HITS) is None
    assert referenced("What does the original Transformer paper say?", HITS) is None
    assert referenced("What is the hardest part of attention?", HITS) is None
    assert referenced("how many languages? i think it was in the week 2 notes", HITS) is None


def test_quotes_come_from_the_named_passages_while_any_are_quotable() -> None:
    quotes = [*quotes_of("Kernels are fused into a single kernel.", 0),
              *quotes_of("We adapt the attention kernel to read the block table.", 1)]
    p = np.array([0.9, 0.4])
    assert select(quotes, p, "What does it do?") == [0]
    assert select(quotes, p, "What does it do?", scope=[1]) == [1]
    # A named passage with nothing quotable leaves the choice to the scores.
    assert select(quotes, p, "What does it do?", scope=[2]) == [0]


def test_a_quoted_answer_to_a_question_naming_a_section_quotes_only_that_section(
    full_index,
) -> None:
    from rag.answering.extractive import QuoteSelector

    question = "Which kernel optimizations are listed in Section 5.1 of the vLLM paper?"
    hits = full_index.retriever.search(question, 5)
    named = [i for i, h in enumerate(hits) if h.chunk.section.startswith("5.1 ")]
    assert named and len(named) < len(hits)
    extract = QuoteSelector(full_index.embedder).extract(
        question, hits, full_index.checker.term_weights(hits))
    assert extract.sentences
    assert {s.citation for s in extract.sentences} <= {i + 1 for i in named}


SOURCES = ["papers/llama.pdf", "papers/lora.pdf", "papers/qlora.pdf", "papers/dpo.pdf",
           "papers/vllm_pagedattention.pdf", "guides/week6-transformers-fundamentals.md",
           "notes/fine-tuning-sft-lora.md", "notes/serving-with-vllm.md"]


def test_the_documents_a_question_names_are_found_among_every_file_of_the_index() -> None:
    assert named_sources("What does the LLaMA paper say about its training data?",
                         SOURCES) == {"papers/llama.pdf"}
    assert named_sources("In the vLLM paper, what is a block table?",
                         SOURCES) == {"papers/vllm_pagedattention.pdf"}
    assert named_sources("What does the week 6 guide say about attention?",
                         SOURCES) == {"guides/week6-transformers-fundamentals.md"}
    # A paper is a PDF and notes are not; "LoRA" is not a word of qlora.pdf.
    assert named_sources("What do the LoRA notes say?", SOURCES) == {
        "notes/fine-tuning-sft-lora.md"}
    assert named_sources("the lora paper's rank?", SOURCES) == {"papers/lora.pdf"}
    # One note, as a student names it.
    assert named_sources("Which self-checks does the vLLM serving note ask?", SOURCES) == {
        "notes/serving-with-vllm.md"}
    assert named_sources("Note that LoRA is small: why?", SOURCES) == frozenset()
    # Nothing named, a name no file has, or a guess: no document.
    assert named_sources("What is LoRA?", SOURCES) == frozenset()
    assert named_sources("What does the GPT-4 paper say?", SOURCES) == frozenset()
    assert named_sources("I think the LLaMA paper said 1.4T tokens?", SOURCES) == frozenset()


def test_a_course_page_is_a_guide_and_a_papers_numbered_page_names_nothing() -> None:
    sources = [*SOURCES, "guides/class2-llm-overview.md"]
    assert named_sources("ok so the class 2 page says pretraining costs millions... how many "
                         "GPUs?", sources) == {"guides/class2-llm-overview.md"}
    assert named_sources("What does page 4 of the LoRA paper say?", SOURCES) == {
        "papers/lora.pdf"}
    assert named_sources("On page 2, what is BPE?", SOURCES) == frozenset()
    assert named_sources("The Wikipedia page says otherwise?", SOURCES) == frozenset()


def test_a_table_named_by_its_document_names_the_document() -> None:
    sources = [*SOURCES, "guides/llm-basics.md"]
    assert named_sources("quick q on the llm basics table: what does instruction tuning add "
                         "vs what rlhf adds?", sources) == {"guides/llm-basics.md"}
    assert named_sources("In the LLaMA table, which model is best?", sources) == {
        "papers/llama.pdf"}
    # A table the question names by what it holds is no document.
    assert named_sources("What is a block table in vLLM?", sources) == frozenset()
    assert named_sources("What does the comparison table say about cost?", sources) == (
        frozenset())


def test_a_summary_named_by_its_document_names_the_document() -> None:
    sources = [*SOURCES, "guides/llm-basics.md"]
    assert named_sources("In the LLM basics summary, what does fine-tuning give a model?",
                         sources) == {"guides/llm-basics.md"}
    # A summary may be of a paper or of notes: both files named LoRA are.
    assert named_sources("what does the LoRA summary say about latency?", sources) == {
        "papers/lora.pdf", "notes/fine-tuning-sft-lora.md"}
    # "Summary of X" asks what X covers; its words before "summary" name nothing.
    assert named_sources("Can you give me a quick summary of attention?", sources) == (
        frozenset())


def test_a_search_within_a_named_document_ranks_by_the_question_without_the_name() -> None:
    assert without_named_documents(
        "What does the LLaMA paper say about the tokenizer it used?") == (
        "What does the about the tokenizer it used?")
    assert without_named_documents("In the week 6 guide's summary, what is attention?") == (
        "In the summary, what is attention?")
    # Nothing named, or only a guess: the question as it is.
    for question in ("What did the authors say about dropout?",
                     "i think the llama paper mentioned it?"):
        assert without_named_documents(question) == question


def test_what_a_question_asks_a_named_document_about_is_read_when_it_is_a_term() -> None:
    asked = {
        "What does the week 2 guide say about tokenization?": "tokenization",
        "Does the LoRA paper mention PagedAttention at all?": "PagedAttention",
        "Is RLHF covered in the week 6 guide?": "RLHF",
        "What does the DPO paper have to say about reward hacking?": "reward hacking",
        "What does the LLaMA paper say about the tokenizer it used?": "tokenizer",
        "does the attention paper discuss grouped-query attention?": "grouped-query attention",
        "According to the week 6 guide, what is RLHF?": "RLHF",
        "What is RLHF in the week 6 guide?": "RLHF",
        "What are the prerequisites listed in the complete LLM guide?": "prerequisites",
    }
    for question, topic in asked.items():
        assert asked_topic(question) == topic, question
    # Longer asks, places, questions, pointers back, guesses and no document: no topic.
    for question in ("What does the week 6 guide say you should be able to do?",
                     "What does the Class 2 overview say about what training costs?",
                     "What is COMPACTER, the adapter mentioned in the LoRA paper's related work?",
                     "What does the SFT bullet in the Class 2 overview say about these methods?",
                     "What does the LoRA paper say about how the rank of the update is chosen?",
                     "What does the LoRA paper say about the rank of the update?",
                     "What is the goal of the week 6 guide?",
                     "What is an encoder used for in the week 6 guide?",
                     "What are the key takeaways of the complete LLM guide?",
                     "I think the week 2 guide mentions RLHF?",
                     "What does the week 6 guide cover?",
                     "What do the materials say about tokenization?",
                     "What does the week 2 guide say about " + "x" * 1900):
        assert asked_topic(question) == "", question


def test_a_paper_is_also_named_by_what_it_says_it_presents() -> None:
    opening = ("The dominant sequence transduction models are based on recurrent networks. We "
               "propose a new simple network architecture, the Transformer, based solely on "
               "attention. We present QLoRA, an efficient approach; our best model family, "
               "which we name Guanaco, outperforms others. We show that RLHF helps.")
    assert self_names(opening) == [frozenset({"transformer"}), frozenset({"qlora"}),
                                   frozenset({"guanaco"})]
    aliases = {"papers/attention_is_all_you_need.pdf": [frozenset({"transformer"})]}
    sources = [*SOURCES, "papers/attention_is_all_you_need.pdf"]
    question = "What does the Transformer paper say about dropout?"
    assert named_sources(question, sources) == frozenset()
    assert named_sources(question, sources, aliases) == {"papers/attention_is_all_you_need.pdf"}
    # "Guide" still means a guide (the week 6 one, by its file name), not the paper; a guess
    # is no constraint.
    assert named_sources("the transformer guide?", sources, aliases) == {
        "guides/week6-transformers-fundamentals.md"}
    assert named_sources("maybe the Transformer paper said so?", sources, aliases) == frozenset()


def test_a_question_only_about_what_a_named_document_covers_asks_for_an_overview() -> None:
    for question in ("what does the week 6 guide cover?", "What is the LoRA paper about?",
                     "give me a summary of the hallucination notes",
                     "what's in the week 2 support guide?", "tldr of the dpo paper",
                     "What does the LLaMA paper say?"):
        assert asks_for_overview(question), question
    for question in ("What does the week 6 guide say about attention?",  # a question in it
                     "What does the vLLM paper cover about scheduling?",
                     "I think the week 2 notes cover it?",  # a guess names nothing
                     "what is lora about?",  # no document named
                     "summarize attention",
                     "What is the bonus reading in the week 2 support guide about?"):
        assert not asks_for_overview(question), question
