"""Preparing a question for search: glossary expansions and typo corrections."""

from rag.retrieval.lexical import BM25Index
from rag.retrieval.query import (
    EXPANSION_WEIGHT,
    MAX_PARTS,
    analyse,
    asks_for_authors,
    comparison_sides,
    corrections,
    message_parts,
)

INDEX = BM25Index(
    ["a", "b", "c"],
    [
        "supervised fine-tuning on demonstrations",
        "reinforcement learning from human feedback with a reward model",
        "temperature rescales the logits",
    ],
)


def test_abbreviations_are_expanded_at_half_weight():
    query = analyse("wats the diff btw sft n rlhf", INDEX)
    assert query.terms["sft"] == 1.0
    assert query.terms["supervised"] == EXPANSION_WEIGHT
    assert query.terms["reinforcement"] == EXPANSION_WEIGHT


def test_the_embedder_sees_the_expansions_after_the_question():
    query = analyse("sft vs rlhf?", INDEX)
    assert query.dense_text.startswith("sft vs rlhf?")
    assert "supervised fine-tuning" in query.dense_text
    assert "reinforcement learning from human feedback" in query.dense_text


def test_chat_shorthand_is_written_out_where_the_embedder_reads_it():
    query = analyse("can i use a diff tokenizer or do they hav to match? whats the diff", INDEX)
    assert query.dense_text == (
        "can i use a different tokenizer or do they have to match? whats the difference")
    # Searched as the glossary's expansions are, never "corrected" into an indexed word.
    assert analyse("the func signature", INDEX).terms["function"] == EXPANSION_WEIGHT
    assert analyse("the impl details", BM25Index(["a"], ["imply"])).dense_text == (
        "the implementation details")


def test_the_fields_own_shorthand_is_written_out_too():
    # "temp" for temperature: the embedder read "using temp 0.2 ... what temp do ppl normally
    # use" as being about prompts, not decoding.
    query = analyse("what temp for code gen? and how many attn heads per seq", INDEX)
    assert query.dense_text == (
        "what temperature for code generation? and how many attention heads per sequence")
    assert query.terms["temp"] == 1.0 and query.terms["temperature"] == EXPANSION_WEIGHT


def test_shorthand_inside_a_name_or_a_formula_and_single_letters_stay_as_written():
    for text in ("n=1000 samples", "rank r", "w/o dropout", "diff-based og_model", "Diff"):
        assert analyse(text, INDEX).dense_text.startswith(text)


def test_a_misspelled_word_is_corrected_for_both_retrievers():
    query = analyse("what does temprature do", INDEX)
    assert query.terms["temperature"] == 1.0
    assert "temperature" in query.core and "temprature" not in query.core
    assert "temperature" in query.dense_text


def test_the_embedder_sees_the_question_with_its_misspellings_replaced():
    query = analyse("What does Temprature do?", INDEX)
    assert query.corrected == query.dense_text == "What does temperature do?"
    assert query.text == "What does Temprature do?"


def test_a_misspelt_plural_is_replaced_by_the_plural():
    index = BM25Index(["a"], ["operating systems"])
    assert analyse("older sytems", index).corrected == "older systems"


def test_a_verb_corrected_to_another_form_of_it_gets_no_plural_s():
    index = BM25Index(["a"], ["the passages retrieved for the question"])
    assert analyse("it retrieves docs", index).corrected == "it retrieved docs"


def test_a_word_the_embedder_holds_whole_is_never_corrected():
    index = BM25Index(["a"], ["the capital of France"])
    assert analyse("capitol of australia", index).corrected == "capital of australia"
    real = analyse("capitol of australia", index, is_word={"capitol"}.__contains__)
    assert real.corrected == "capitol of australia" and "capital" not in real.terms


def test_a_corrected_abbreviation_is_expanded():
    index = BM25Index(["a"], ["qlora fine-tuning"])
    assert "quantized low-rank adaptation" in analyse("what is qlroa", index).dense_text


def test_glossary_shorthand_is_not_a_misspelling():
    index = BM25Index(["a"], ["the proje"])
    assert corrections("my proj", index) == []


def test_a_misspelt_word_is_read_with_the_rest_of_the_question():
    index = BM25Index(["a", "b", "c"], ["though it helps", "even though", "chain of thought"])
    assert analyse("chain of thougth prompting", index).corrected == "chain of thought prompting"


def test_a_plain_question_is_left_alone():
    query = analyse("What does the reward model learn?", INDEX)
    assert query.dense_text == query.text
    assert set(query.terms) == {"reward", "model", "learn"}


def test_chatter_is_neither_searched_nor_counted_against_coverage():
    query = analyse("im confused about what temperature does lol pls help", INDEX)
    assert query.core == ("temperature",)
    assert set(query.terms) == {"temperature"}
    # Coverage is judged on the question's own terms: "lol", unseen by the index, would
    # have weighed against it as the strongest off-topic sign.
    assert INDEX.coverage(query.core, ["c"]) == {"c": 1.0}
    # Numbers are never chatter ("eli5" is eli, 5; "Section 5" keeps its 5).
    assert "5" in analyse("eli5 section 5 temperature", INDEX).core


def test_chat_spellings_and_unseen_shorthand_do_not_count_against_coverage():
    # "wat", "whats" and "shud" are chat spellings of words the stop list drops spelt out;
    # "og" and "u" are shorthand no passage holds, judged as what they stand for ("u": nothing).
    for question in ("wat does temperature do", "whats temperature", "what temperature shud it be"):
        query = analyse(question, INDEX)
        assert query.core == ("temperature",), question
        assert INDEX.coverage(query.core, ["c"]) == {"c": 1.0}, question
    index = BM25Index(["a"], ["the original transformer used dropout"])
    query = analyse("og transformer dropout", index)
    assert query.core == ("original", "transformer", "dropout")
    assert index.coverage(query.core, ["a"]) == {"a": 1.0}
    # Shorthand the index knows is judged as written, and searched as written.
    assert analyse("wats the diff btw sft n rlhf", INDEX).terms["sft"] == 1.0
    known = BM25Index(["a"], ["sft then rlhf"])
    assert {"sft", "rlhf"} <= set(analyse("sft vs rlhf", known).core)


def test_the_two_sides_of_a_comparison_are_found() -> None:
    assert comparison_sides("How does beam search differ from nucleus sampling?") == [
        "beam search", "nucleus sampling"]
    assert comparison_sides("whats the difference between static and continuous batching?") == [
        "static", "continuous batching"]
    assert comparison_sides("Top-p vs top-k sampling: which one adapts?") == [
        "Top-p", "top-k sampling"]
    assert comparison_sides("How do open-source and closed-source LLMs compare on cost?") == [
        "open-source", "closed-source LLMs"]
    assert comparison_sides("compare rlhf with dpo") == ["rlhf", "dpo"]
    # A side keeps at most five words; the words before them belong to the question.
    assert comparison_sides("In the QLoRA paper how does NF4 with double quantization and "
                            "paged optimizers compare with plain FP4 on MMLU in the end?") == [
        "double quantization and paged optimizers", "plain FP4 on MMLU in"]
    # A choice the question opens with; its words of trying and order are not the sides.
    assert comparison_sides("should I fine-tune or try prompting first?") == [
        "fine-tune", "prompting"]
    assert comparison_sides("ok should we start with LoRA or just use full fine-tuning?") == [
        "LoRA", "full fine-tuning"]
    # After a story, its words match passages of their own: no sides.
    assert comparison_sides("for my tiny project should i go with lora or qlora?") == []


def test_a_question_that_compares_nothing_has_no_sides() -> None:
    assert comparison_sides("What is LoRA?") == []
    assert comparison_sides("How does LoRA reduce memory?") == []
    assert comparison_sides("vs?") == []
    # Stopwords alone are no side.
    assert comparison_sides("what is the difference between this and that?") == []


def test_a_question_for_a_papers_authors_is_told_from_one_about_what_they_wrote() -> None:
    for question in ("who wrote the lora paper", "Authors of the DPO paper?",
                     "Who are the InstructGPT authors?", "list the authors of qlora",
                     "Who was the author of Attention Is All You Need?",
                     "the vllm paper was written by whom?"):
        assert asks_for_authors(question), question
    for question in ("What do the authors of the DPO paper say about PPO?",
                     "who introduced RLHF?", "why did the authors of LoRA freeze W?",
                     "How does the author define hallucination?"):
        assert not asks_for_authors(question), question


def test_a_message_splits_into_the_parts_that_ask_about_something():
    assert message_parts(
        "quick one before the deadline tonight, what learning rate schedule did llama use?"
    ) == ["quick one before the deadline tonight", "what learning rate schedule did llama use?"]
    # Sentence ends split too; a part of chatter or of one or two words is no part.
    assert message_parts("lol ok. why does the kv cache grow with every token? thx") == [
        "why does the kv cache grow with every token?"]
    # A message of one part has none to judge apart from the whole.
    assert message_parts("What learning rate schedule did LLaMA use?") == []
    # Each part is a search: a message of many commas is judged on its first few.
    many = ", ".join(f"what does chapter {n} say about attention heads" for n in range(50))
    assert len(message_parts(many)) == MAX_PARTS
