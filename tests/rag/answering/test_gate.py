"""The calibration maths: gate evidence, the logistic fit and the gate's threshold rule."""

from __future__ import annotations

import numpy as np
import pytest

from rag.answering.gate import (
    MAX_IN_ABSTAIN,
    asked_term,
    defines_term,
    evidence_of,
    fit_gate,
    gate_probability,
    name_found,
    names_term,
    section_named,
    term_in_several_documents,
    term_named,
    term_unused,
    titled,
    titled_by,
    titled_together,
    topic_unused,
)
from rag.config import AnswerSettings
from rag.index.documents import Chunk, Hit
from rag.retrieval.calibration import logistic


def test_agreement_is_the_mean_of_the_three_best_cosines() -> None:
    evidence = evidence_of("q", True, [0.2, 0.5, 0.1, 0.4, 0.3], [0.1, 0.9])
    assert evidence.best_cosine == 0.5
    assert evidence.agreement == pytest.approx(0.4)
    assert evidence.best_coverage == 0.9


def test_no_passages_give_no_evidence() -> None:
    evidence = evidence_of("q", False, [], [])
    assert (evidence.best_cosine, evidence.agreement, evidence.best_coverage) == (0.0, 0.0, 0.0)


def test_a_single_stray_passage_is_weaker_evidence_than_several_related_ones() -> None:
    answer = AnswerSettings()
    stray = evidence_of("o", False, [0.46, 0.21, 0.16, 0.15, 0.15], [0.6])
    related = evidence_of("i", True, [0.46, 0.43, 0.40, 0.39, 0.38], [0.6])
    assert gate_probability(stray, answer) < answer.abstain_below <= gate_probability(
        related, answer
    )


def test_a_course_faq_passage_stands_for_its_own_agreement() -> None:
    # A paraphrase of an approved FAQ question (figures measured on the real embedder): one
    # close passage, nothing else related.
    answer = AnswerSettings()
    alone = evidence_of("q", True, [0.52, 0.09, 0.06], [1.0])
    faq = evidence_of("q", True, [0.52, 0.09, 0.06], [1.0], standalone=[0.52])
    assert faq.agreement == 0.52 and alone.agreement == pytest.approx(0.2233, abs=1e-3)
    assert gate_probability(alone, answer) < answer.abstain_below <= gate_probability(
        faq, answer
    )


def test_logistic_recovers_the_direction_of_a_noisy_linear_rule() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    y = (x[:, 0] - 0.5 * x[:, 1] + rng.normal(scale=0.3, size=400) > 0).astype(float)
    w = logistic(np.c_[x, np.ones(400)], y)
    assert w[0] > 0 > w[1]
    assert w[0] / -w[1] == pytest.approx(2.0, rel=0.35)


def _questions(rng: np.random.Generator, n: int, centre: float, in_scope: bool) -> list:
    return [
        evidence_of(f"{in_scope}{i}", in_scope, list(rng.normal(centre, 0.05, 5)), [0.5])
        for i in range(n)
    ]


def _fitted(evidence: list) -> tuple[AnswerSettings, float]:
    """Answer settings carrying a gate fitted on `evidence`, and its threshold."""
    weights, threshold = fit_gate(evidence)
    answer = AnswerSettings(
        gate_cosine=weights[0], gate_agreement=weights[1], gate_coverage=weights[2],
        gate_intercept=weights[3], abstain_below=threshold,
    )
    return answer, threshold


def test_the_threshold_abstains_on_every_off_topic_fit_question_when_the_sets_separate() -> None:
    rng = np.random.default_rng(1)
    evidence = _questions(rng, 40, 0.55, True) + _questions(rng, 30, 0.2, False)
    answer, threshold = _fitted(evidence)
    off = [gate_probability(e, answer) for e in evidence if not e.in_scope]
    on = [gate_probability(e, answer) for e in evidence if e.in_scope]
    assert max(off) < threshold <= min(on)


def test_the_threshold_never_refuses_more_than_the_allowed_share_of_in_scope_questions() -> None:
    rng = np.random.default_rng(2)
    # Heavily overlapping sets: separating them fully would refuse most in-scope questions.
    evidence = _questions(rng, 40, 0.40, True) + _questions(rng, 30, 0.36, False)
    answer, threshold = _fitted(evidence)
    on = [gate_probability(e, answer) for e in evidence if e.in_scope]
    assert 0 < np.mean([p < threshold for p in on]) <= MAX_IN_ABSTAIN


def under(*sections: str) -> list[Hit]:
    return [Hit(Chunk("Some text.", "notes/x.md", None, section, 0, 10), 0.5)
            for section in sections]


def test_a_heading_that_names_the_question_covers_it() -> None:
    hits = under("Intro", "Next-Token Prediction > Decoding strategies > Temperature",
                 "3.4 Embeddings and Softmax", "5.2 Evaluation")
    assert titled_by("What is temperature?", hits)
    assert titled_by("What does the temperature setting do?", hits)  # half its words
    assert titled_by("im confused about embeddings and softmax lol", hits)  # numbers aside
    assert titled_by("What does temperature do when it is below 1?", hits)  # the 1 is a value
    # Not named: a heading word among many of the question's, or a heading with other words.
    assert not titled_by("What is the evaluation of the Mona Lisa's smile worth?", hits)
    assert not titled_by("What are embeddings?", under("3.4 Embeddings and Softmax"))
    assert not titled_by("What is a reward model?", hits)
    assert not titled_by("lol", hits)


def test_a_question_that_names_a_part_of_a_document_by_its_heading() -> None:
    hits = under("LLMs > Resources > Courses", "LLMs > What are LLMs? > The Evolution",
                 "LLMs > Key Takeaways", "References")
    assert section_named("Which online courses does the Resources > Courses section of the "
                         "complete guide recommend?", hits)
    assert section_named("In the complete guide's evolution timeline, which years are given "
                         "for the RNN era?", hits)
    assert section_named("What does section Key Takeaways of the guide say about prompts?", hits)
    # The heading's words, but not as the name of a part of the document.
    assert not section_named("Which evolution of the courses does the guide recommend?", hits)
    assert not section_named("What are the key takeaways on prompts in the guide?", hits)
    # A paper's references are no part a student asks about.
    assert not section_named("What does the references section of the LoRA paper cite?",
                             under("References"))


def test_two_headings_that_each_name_a_side_of_the_question_cover_it() -> None:
    hits = under("Decoding > Beam search", "Decoding > Top-p (nucleus) sampling",
                 "Decoding > Top-k sampling", "5.2 Evaluation")
    # Neither heading names half of these questions alone; together they do.
    assert not titled_by("How does beam search differ from nucleus sampling?", hits)
    assert titled_together("How does beam search differ from nucleus sampling?", hits)
    assert titled_together("Top-p vs top-k sampling: which one adapts to the model's confidence?",
                           hits)
    # One side named, the other not; or the two headings name too little of the question.
    assert not titled_together("How does beam search differ from speculative decoding?", hits)
    assert not titled_together(
        "How does beam search on a quantised model differ from top-k sampling when memory is "
        "short and latency matters?", hits)
    # One heading twice, or a heading and a part of it, is not two sides.
    assert not titled_together("beam search vs beam?", under("A > Beam search", "B > Beam search",
                                                             "C > Beam"))


def test_a_parenthesised_name_in_a_heading_is_read_for_the_word_it_follows() -> None:
    hits = under("Decoding > Top-p (nucleus) sampling", "Retrieval-augmented generation (RAG)")
    assert titled_together("nucleus sampling or rag?", hits)
    assert titled_together("top-p sampling vs retrieval-augmented generation", hits)


def test_the_passages_under_a_heading_that_names_the_question_are_found() -> None:
    hits = under("Intro", "Decoding strategies > Temperature", "D.2 Sample Responses")
    assert titled("What does temperature do?", hits) == [1]
    assert titled("What is a reward model?", hits) == []
    # The "work" of "how does X work" is no word a heading can name.
    works = under("LLM > 2. How does it work?", "Decoding > Beam search")
    assert titled("How does RLAIF work?", works) == []
    assert titled("how does beam search work", works) == [1]


def test_a_question_that_is_only_a_term_is_recognised() -> None:
    assert asked_term("perplexity?") == ["perplexity"]
    assert asked_term("what's top-p") == ["top", "p"]
    assert asked_term("Define RMSNorm.") == ["rmsnorm"]
    assert asked_term("what does SFT mean?") == ["sft"]
    assert asked_term("explain kv cache pls") == ["kv", "cache"]
    # More than a term: the fitted gate alone decides.
    assert asked_term("Why does top-p adapt better than top-k?") == []
    assert asked_term("llama optimizer learning rate schedule?") == []
    assert asked_term("?") == []


def passage(text: str, section: str = "Notes > Other") -> Hit:
    return Hit(Chunk(text, "notes/x.md", None, section, 0, len(text)), 0.3)


def test_a_passage_names_a_term_by_heading_bold_definition_or_acronym() -> None:
    assert names_term(passage("Keep the smallest set.", "Decoding > Top-p (nucleus) sampling"),
                      asked_term("top-p?"))
    assert names_term(passage("The average loss is reported as **perplexity** = exp(loss)."),
                      ["perplexity"])
    assert names_term(passage("- Beam search: keep the B best partial sequences."),
                      asked_term("beam search?"))
    assert names_term(passage("LLaMA uses rotary position embeddings (RoPE) instead."),
                      ["rope"])
    assert names_term(passage("We introduce it.", "4.1 PagedAttention"),
                      asked_term("paged attention?"))  # written as one word
    # A PDF's run-in heading is a heading too.
    assert names_term(passage("Residual Dropout We apply dropout to the output of each layer."),
                      ["dropout"])


def test_a_passing_mention_does_not_name_a_term() -> None:
    mention = passage("We compare the perplexity of the continuations of each sentence.")
    assert not names_term(mention, ["perplexity"])
    # A quoted example is not the materials' own definition.
    assert not names_term(passage("* “The capital of France is …”"), ["capital", "france"])
    # A document's title covers the whole document, not the passage.
    assert not names_term(passage("Some text.", "Fine-Tuning: SFT, LoRA and QLoRA > The idea"),
                          ["qlora"])
    # A cited title in a paper's references is not a definition.
    cited = Hit(Chunk("Dropout: a simple way to prevent overfitting.", "papers/a.pdf", 9,
                      "References", 0, 40), 0.1)
    assert not names_term(cited, ["dropout"])
    # A bold span or a defined subject with many other words is about something else.
    assert not names_term(passage("Use **perplexity on held-out web text** to compare."),
                          ["perplexity"])
    assert not term_named("Why does the reward model overfit?",
                          [passage("A reward model is a scorer.")])  # not a term question


def test_a_passage_defines_a_term_in_its_own_text_not_by_its_headings() -> None:
    # A section titled with the term may never say what it is ("LoRA: Low-Rank Adaptation >
    # The idea"); its heading names the term, its text does not define it.
    idea = passage("## LoRA: Low-Rank Adaptation\n\n### The idea\n\nThe change in weights "
                   "has low intrinsic rank.", "Fine-Tuning > LoRA: Low-Rank Adaptation > The idea")
    assert names_term(idea, ["lora"]) and not defines_term(idea, ["lora"])
    # Nor does a paper's title in capitals, nor a run-in heading.
    title = passage("LORA: LOW-RANK ADAPTATION OF LARGE LANGUAGE MODELS Edward Hu", "")
    assert not defines_term(title, ["lora"])
    assert not defines_term(passage("Residual Dropout We apply dropout to each layer."),
                            ["dropout"])
    # Its own sentences, bold spans and spelled-out acronyms do.
    assert defines_term(passage("We propose Low-Rank Adaptation (LoRA), which freezes W."),
                        ["lora"])
    assert defines_term(passage("- Beam search: keep the B best partial sequences."),
                        asked_term("beam search?"))
    assert defines_term(passage("It is reported as **perplexity** = exp(loss)."), ["perplexity"])


def test_a_term_no_retrieved_passage_uses_is_not_discussed() -> None:
    near = [passage("Each head attends over the query, keys and values.",
                    "Transformers > Self-attention"),
            passage("The Transformer replaced recurrence with attention.")]
    # The passages embed close, but none uses "grouped" or "GQA": not discussed.
    assert term_unused("what is grouped-query attention?", near)
    assert term_unused("GQA?", near)
    assert term_unused("what's a vision transformer", near)
    assert term_unused("How does RLAIF work?", near)
    assert not term_unused("how does multi-head attention work", near[:1] + [
        passage("Multi-head attention runs several heads in parallel.")])
    # Used: in its hyphen's parts, with a suffix, or written as one word.
    cache = [passage("The KV cache grows with every generated token.")]
    assert not term_unused("what is a kv-cache?", cache)
    assert not term_unused("what is hallucinating", [passage("Hallucination is ...")])
    assert not term_unused("paged attention?", [passage("We introduce PagedAttention.")])
    # A cited title in a paper's references is not a discussion.
    cited = Hit(Chunk("An image is worth 16x16 words: vision transformers at scale.",
                      "papers/a.pdf", 9, "References", 0, 60), 0.1)
    assert term_unused("vision transformer?", [cited])
    # Longer questions are left to the other rules.
    assert not term_unused("How does grouped-query attention save memory?", near)


def test_a_topic_is_unused_by_a_document_that_only_shares_its_stem() -> None:
    def part(text: str, section: str = "Week 2 > Key ideas", source: str = "guides/w2.md"):
        return Chunk(text, source, None, section, 0, len(text))

    guide = [part("LLaMA was trained on trillions of tokens."),
             part("Hallucinating models invent facts.")]
    # "tokens" in passing is not tokenization; an inflection of the word itself is.
    assert topic_unused("tokenization", guide)
    assert not topic_unused("tokenization", [*guide, part("The tokenizer splits text.")])
    assert not topic_unused("hallucination", guide)
    # Short words only with a plural; every word of the topic, or all of them as one.
    assert topic_unused("RL", [part("RLHF aligns models.")])
    assert not topic_unused("GPU", [part("Two GPUs suffice.")])
    assert topic_unused("grouped-query attention", [part("Attention over a query.")])
    assert not topic_unused("paged attention", [part("We introduce PagedAttention.")])
    assert not topic_unused("KV cache", [part("The KV-cache grows.")])
    # Headings and the file name count; a paper's references do not.
    assert not topic_unused("RLHF", [part("Reward models ...", "Guide > RLHF")])
    assert topic_unused("LoRA", [part("Hu et al. LoRA: low-rank adaptation.", "References",
                                      "papers/vllm.pdf")])


def test_a_term_of_several_words_used_by_several_documents_is_discussed() -> None:
    def used_in(source: str, text: str, section: str = "Notes > Other") -> Hit:
        return Hit(Chunk(text, source, None, section, 0, len(text)), 0.3)

    two = [used_in("notes/a.md", "Every sub-layer is wrapped in a residual connection."),
           used_in("papers/b.pdf", "We employ residual connections around each sub-layer.")]
    assert term_in_several_documents("what are residual connections?", two)
    # One document, or the words apart, or a single word, is not enough.
    assert not term_in_several_documents("what are residual connections?", two[:1])
    apart = [used_in("notes/a.md", "A residual stream; the connection to the output."),
             two[1]]
    assert not term_in_several_documents("residual connections?", apart)
    words = [used_in("notes/a.md", "dropout here"), used_in("notes/c.md", "dropout there")]
    assert not term_in_several_documents("dropout?", words)
    refs = [two[0], used_in("papers/b.pdf", "Deep residual connections.", "References")]
    assert not term_in_several_documents("residual connections?", refs)
    # Nor does an example in quotation marks.
    prompts = [used_in("guides/a.md", 'Prompt: *"The capital of France is"*'),
               used_in("guides/b.md", "Input: “The capital of France is”")]
    assert not term_in_several_documents("What is the capital of France?", prompts)


def test_a_passage_using_a_rare_name_the_question_asks_about_covers_it() -> None:
    reasoning = passage("Reasoning models (DeepSeek-R1, 2025) showed that RL on long chains works.")
    other = passage("Sampling draws the next token at random.")
    assert name_found(["deepseek-r1"], [other, reasoning])
    assert not name_found(["deepseek-r1"], [other])
    assert not name_found([], [reasoning])
    # A paper's references cite titles; citing a name is not discussing it.
    cited = Hit(Chunk("DeepSeek-R1: incentivizing reasoning.", "papers/a.pdf", 9, "References",
                      0, 40), 0.1)
    assert not name_found(["DeepSeek-R1"], [cited])
