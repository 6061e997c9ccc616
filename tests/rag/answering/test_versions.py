"""Questions about a version of a model family, or a name, that the materials never mention."""

from __future__ import annotations

from rag.answering.versions import VersionCatalogue, Vocabulary, names, versioned_names

MATERIALS = [
    "GPT-3 has 175B parameters, ten times GPT-2.",
    "GPT-4 is evaluated on exams. LLaMA-65B is competitive with Chinchilla-70B.",
    "We compare with GPT 3.5 and Llama 2 in the appendix; weights are stored in fp16.",
    "In week 6 we try LoRA with rank 8 and top-5 sampling on WMT 2014.",
]


def test_names_written_with_their_version_are_found_but_sizes_and_ranks_are_not() -> None:
    assert versioned_names("gpt5 vs GPT-4o and Llama-3.1, Qwen2.5") == {
        ("gpt", "5"), ("gpt", "4o"), ("llama", "3.1"), ("qwen", "2.5")}
    assert versioned_names("LLaMA-65B, Mistral-7B, rank 8, week 6, int4, fp16, top-5") == set()


def test_an_unseen_version_of_a_known_family_is_unknown() -> None:
    catalogue = VersionCatalogue(MATERIALS)
    assert catalogue.unknown("How many parameters does GPT-5 have?") == ["gpt-5"]
    assert catalogue.unknown("gpt5 vs gpt-4?") == ["gpt-5"]


def test_versions_the_materials_name_even_apart_are_known() -> None:
    catalogue = VersionCatalogue(MATERIALS)
    for question in ("Is GPT-4 better than GPT-3?", "What is GPT-3.5?", "what did gpt2 show"):
        assert catalogue.unknown(question) == [], question


def test_families_the_materials_name_once_or_without_a_version_are_left_to_the_gate() -> None:
    catalogue = VersionCatalogue(MATERIALS)
    # Llama is written with one version only, WMT never together with one.
    assert catalogue.unknown("What's new in Llama-3?") == []
    assert catalogue.unknown("Mistral-7B vs LLaMA-65B") == []
    assert catalogue.unknown("What BLEU did it get on WMT-14?") == []


def test_a_version_of_a_family_the_materials_never_name_is_unknown() -> None:
    catalogue = VersionCatalogue([*MATERIALS, "Guanaco is trained on OASST1 and scored on SST-2."])
    assert catalogue.unknown("How does the Phi-3 tokenizer handle code?") == ["phi-3"]
    assert catalogue.unknown("Qwen2.5 vs Mistral-7B") == ["qwen-2.5"]
    # Written as the materials write them, and a student's coursework, are no model family.
    for question in ("How was OASST1 collected?", "SST-2 accuracy?", "hw1 rank 8?", "eli5 lora"):
        assert catalogue.unknown(question) == [], question


def test_names_are_inner_capitals_and_capitalised_words_that_do_not_open_a_sentence() -> None:
    assert names("How does XGBoost compare with Stable Diffusion?") == [
        "XGBoost", "Stable", "Diffusion"]
    # Sentence, line and quote openers, greetings, digits and possessives.
    assert names("Thanks! Why is attention slow? Explain.\nQuick one: (Why) is it?") == []
    assert names("Hi, I'm stuck on hw1 and GPT-4, any tips from the TA's notes?") == ["TA"]


def test_words_joined_by_hyphens_are_names_in_a_sentence_that_asks() -> None:
    assert names("How does grouped-query attention shrink the KV cache?") == [
        "grouped-query", "KV"]
    assert names("what is state-space modelling") == ["state-space"]
    # A student's telling of their own story names no topic.
    assert names("I found labelling mind-numbing. did the labelers like it?") == []


def test_one_typing_slip_is_known_but_two_make_another_word() -> None:
    vocabulary = Vocabulary(["Albin et al. study attention; the chinchilla model is small."])
    # A letter missing, extra or changed, or two neighbours swapped.
    for name in ("Chinchila", "Chinchillla", "Chinchilka", "Chinchlila", "Attenton"):
        assert vocabulary.knows(name), name
    # ALiBi is two slips from Albin (a letter dropped here, another added there): another
    # name, which the one-slip rule used to let through as a misspelling.
    for name in ("ALiBi", "Chincilah"):
        assert not vocabulary.knows(name), name


def test_a_compound_is_unknown_when_a_part_is() -> None:
    catalogue = VersionCatalogue(["A query attends over keys; human labelers labeled data."])
    assert catalogue.unknown_names("How does grouped-query attention work?") == [
        "grouped-query"]
    assert catalogue.unknown_names("Why is human-labelled query data needed?") == []


def test_a_name_is_known_when_the_materials_use_it_in_any_written_form() -> None:
    vocabulary = Vocabulary([*MATERIALS, "papers/chinchilla-scaling.pdf",
                             "TensorRT-LLM serves models.",
                             "The optimal style is like the one based on attention."])
    for name in ("gpt4", "GPT-4", "LLaMA", "Chinchilla", "Chinchila", "Chinchillas",
                 "TensorRT", "LLM", "WMT"):
        assert vocabulary.knows(name), name
    for name in ("XGBoost", "Kubernetes", "Chinchona", "Qwen", "DBSCAN"):
        assert not vocabulary.knows(name), name
    # A name joined from words the materials use ("Why did LLaMA train small models far past
    # the Chinchilla-optimal amount?" was refused as if it named something unknown), unless a
    # part is unknown.
    for name in ("Chinchilla-optimal", "LoRA-style", "GPT-4-like", "TensorRT-LLM-based"):
        assert vocabulary.knows(name), name
    for name in ("XGBoost-based", "LoRA-DoRA", "Kubernetes-style"):
        assert not vocabulary.knows(name), name


def test_unknown_names_are_reported_as_written() -> None:
    catalogue = VersionCatalogue(MATERIALS)
    assert catalogue.unknown_names("Does LoRA beat DoRA on WMT?") == ["DoRA"]
    assert catalogue.unknown_names("Is GPT-4 better than LLaMA-65B?") == []


def test_a_name_few_passages_use_is_rare_and_a_common_short_or_unknown_one_is_not() -> None:
    catalogue = VersionCatalogue([
        *MATERIALS, "Reasoning models such as DeepSeek-R1 spend more tokens on hard problems.",
        *(f"LoRA adds a low-rank update to layer {i}." for i in range(5))])
    asked = "When was DeepSeek-R1 released, and is it like LoRA or GPT-3 or L2?"
    # LoRA is in five passages, GPT-3 in one but L2 is too short to tell, and an unknown name
    # is the unknown-name rule's.
    assert catalogue.rare_names(asked) == ["DeepSeek-R1", "GPT-3"]
    assert catalogue.rare_names("what did deepseek-r1 show?") == ["deepseek-r1"]
    assert catalogue.rare_names("What is XGBoost-2?") == []
    # A capitalised word alone is as often a place in an example as a thing the course teaches.
    catalogue = VersionCatalogue([*MATERIALS, "Prompt: The Eiffel Tower is in"])
    assert catalogue.rare_names("How tall is the Eiffel Tower?") == []


def test_a_kind_of_a_known_thing_is_unknown_when_the_materials_never_use_its_qualifier() -> None:
    catalogue = VersionCatalogue([*MATERIALS, "Greedy decoding and beam search are decoding "
                                  "methods; continuous batching keeps the GPU busy."])
    assert catalogue.unknown_kinds("How does speculative decoding with a draft model work?") == [
        "speculative decoding"]
    assert catalogue.unknown_kinds("what is contrastive decoding?") == ["contrastive decoding"]
    # Kinds the materials name, and questions that do not open by asking about a kind.
    assert catalogue.unknown_kinds("How does greedy decoding work?") == []
    assert catalogue.unknown_kinds("How does continuous batching keep the GPU busy?") == []
    assert catalogue.unknown_kinds("Why is ordinary decoding slow?") == []
    assert catalogue.unknown_kinds("What everyday analogy explains decoding?") == []
    # A subject of one word before its verb is the thing asked about, not a qualifier.
    assert catalogue.unknown_kinds("How does photosynthesis convert light?") == []
    # Neither known: the gate judges it; a name the materials never use is the name rule's.
    assert catalogue.unknown_kinds("What is quantum chromodynamics?") == []
    assert catalogue.unknown_names("What is FlashDecoding search?") == ["FlashDecoding"]
    assert catalogue.unknown_kinds("What is FlashDecoding search?") == []
