"""Answers, passages and stats as embeds: every payload stays within Discord's limits."""

from __future__ import annotations

import pytest

from bot import render
from bot.limits import payload_problems
from bot.render_demos import block
from bot.storage import Stats
from bot.usage import GapCluster, UsageReport
from rag.answering.assistant import Answer
from rag.answering.prompting import Citation
from rag.index.documents import Chunk, Hit


def answer(text: str, refused: bool = False, citations: int = 1) -> Answer:
    cites = tuple(
        Citation(n, f"papers/paper{n}.pdf", n, "Method " * 40) for n in range(1, citations + 1)
    )
    hits = (Hit(Chunk("LoRA freezes the weights.", "papers/lora.pdf", 2, "Method", 0, 25), 0.9),)
    return Answer("What is LoRA? " * 40, text, refused, cites, hits, "smollm2",
                  {"total_ms": 3210.0})


def payloads(messages) -> list[dict]:
    return [{"embeds": [e.to_dict() for e in embeds]} for embeds in messages]


def test_a_long_answer_is_split_into_messages_within_the_limits():
    body = "LoRA adapts low-rank matrices. " * 20
    text = "\n\n".join(f"Paragraph {i}. {body}" for i in range(30))
    messages = render.answer_messages(answer(text, citations=60))
    assert len(messages) > 2
    for payload in payloads(messages):
        assert payload_problems(payload) == []
    joined = " ".join(e.description for m in messages for e in m)
    assert joined.split() == text.split()
    last = messages[-1][-1]
    assert last.fields[0].name == "Sources"
    assert last.footer.text == "smollm2 · generated, unverified · 3.2 s"  # the style is named
    assert messages[0][0].title.startswith("What is LoRA?")


def test_citations_show_source_page_and_section():
    field = render.sources_field(answer("Short.", citations=2))
    assert field.splitlines()[0].startswith("[1] papers/paper1.pdf, p. 1 · Method")


def test_a_refusal_names_the_nearest_sections_and_no_model():
    messages = render.answer_messages(answer("Not covered.", refused=True, citations=0))
    embed = messages[0][0]
    assert embed.fields[0].value == "Nearest: papers/lora.pdf, p. 2 · Method"
    assert embed.footer.text.startswith("not covered by the materials")


def test_a_streaming_draft_shows_the_tail_within_an_embed():
    embed = render.draft_embed("q", "word " * 3000)
    assert embed.description.endswith(render.CURSOR) and payload_problems(
        {"embeds": [embed.to_dict()]}) == []


def test_passages_are_packed_into_messages_within_the_limits():
    passages = [{"source": f"guides/g{i}.md", "page": None, "section": "S", "score": 0.5,
                 "text": "text " * 400} for i in range(8)]
    messages = render.passage_messages("Passages for: LoRA", passages)
    assert len(messages) > 1 and sum(len(m) for m in messages) == 8
    for payload in payloads(messages):
        assert payload_problems(payload) == []


CODE = "```python\nfrom openai import OpenAI\n\nclient = OpenAI(\n    base_url=URL,\n)\n```"


def test_a_code_block_in_a_passage_keeps_its_lines():
    text = f"Call it with the client:\n{CODE}\nThe model field must\nmatch the server."
    passages = [{"source": "notes/vllm.md", "page": None, "section": "S", "score": 0.5,
                 "text": text}]
    shown = render.passage_messages("Passages for: vLLM", passages)[0][0].description
    assert CODE in shown
    assert "Call it with the client:\n```" in shown  # prose still one line, the block apart
    assert shown.endswith("```\nThe model field must match the server.")


def test_passages_with_long_code_blocks_stay_within_the_limits_with_each_block_closed():
    code = "```python\n" + "x = call(a, b)  # a long line of code\n" * 60  # left open
    passages = [{"source": f"notes/n{i}.md", "page": None, "section": "S", "score": 0.5,
                 "text": f"Intro {i}.\n{code}"} for i in range(8)]
    messages = render.passage_messages("Passages for: code", passages)
    assert sum(len(m) for m in messages) == 8
    for payload in payloads(messages):
        assert payload_problems(payload) == []
    for embed in (e for m in messages for e in m):
        assert embed.description.count("```") == 2
        assert "\nx = call(a, b)  # a long line of code\nx = call" in embed.description


def test_a_passage_cut_from_inside_a_code_block_is_code_from_its_first_line():
    # The chunker's second chunk of a long block: no opening fence of its own.
    text = "    base_url=URL,\n)\nprint(client.models.list())\n```\nThe model field\nmust match."
    passages = [{"source": "notes/vllm.md", "page": None, "section": "S", "score": 0.5,
                 "text": text, "fence": "```python"}]
    shown = render.passage_messages("Passages for: vLLM", passages)[0][0].description
    assert shown.endswith("\n```python\n    base_url=URL,\n)\nprint(client.models.list())\n```\n"
                          "The model field must match.")


def test_a_passage_inside_a_code_block_from_start_to_end_is_one_closed_block():
    passages = [{"source": "notes/vllm.md", "page": None, "section": "S", "score": 0.5,
                 "text": "│ Feed-forward │\n└──────┬──────┘", "fence": "```"}]
    shown = render.passage_messages("Passages for: diagram", passages)[0][0].description
    assert shown.endswith("\n```\n│ Feed-forward │\n└──────┬──────┘\n```")


def test_stats_embed_within_limits():
    stats = Stats(0.0, 10, 2, 3, 1, [("papers/lora.pdf", 4)], {"p50": 1500.0, "p90": 2500.0,
                                                               "p99": 4000.0})
    embed = render.stats_embed(stats, 7)
    assert payload_problems({"embeds": [embed.to_dict()]}) == []
    assert "2 (20%)" in [f.value for f in embed.fields]


def test_gap_groups_of_long_markdown_heavy_questions_stay_within_limits():
    text = "*_`|>~ " * 60
    clusters = tuple(GapCluster(text, 20 - i, 3, 1, (text,)) for i in range(15))
    report = UsageReport((), clusters, "UTC", 300, 300)
    stats = Stats(0.0, 300, 3, 1, 1, [("papers/" + "x" * 200 + ".pdf", 4)] * 5,
                  {"p50": 1.0, "p90": 2.0, "p99": 3.0})
    embeds = [render.stats_embed(stats, 7).to_dict(), render.gaps_embed(report, 15).to_dict()]
    assert payload_problems({"embeds": embeds}) == []
    assert embeds[1]["description"].startswith("**20×** \\*\\_")


def test_rewritten_embeds_stay_within_discords_limits_when_the_text_grows():
    """Withholding replaces a short sentence with a longer notice: the embeds must still fit."""
    import discord

    full = [discord.Embed(title="Model A", description="x. " * 1365)
            .add_field(name="Answer", value="y. " * 341)
            .set_footer(text="secret. " + "z" * 100),
            discord.Embed(title="Model B", description="No answer.")]
    assert payload_problems({"embeds": [e.to_dict() for e in full]}) == []
    grown = render.rewrite_embeds(full, lambda text: text.replace(".", ". [withheld]"))
    assert payload_problems({"embeds": [e.to_dict() for e in grown]}) == []
    assert "[withheld]" in grown[0].footer.text and "[withheld]" in grown[1].description
    unchanged = render.rewrite_embeds(full, lambda text: text)
    assert [e.to_dict() for e in unchanged] == [e.to_dict() for e in full]


@pytest.mark.parametrize("text", [
    "````\n# BIG HEADING [click me](https://evil.example)\n````",
    "```",
    "a ``` b ```` c ````` d",
    "``",
])
def test_user_text_in_a_demos_code_block_can_never_close_it(text):
    # Only a run of exactly three backticks was defused: four became "`\u200b```", which still
    # closed the block, and what followed rendered as the bot's own heading and link.
    shown = block(text)
    assert shown.startswith("```\n") and shown.endswith("\n```")
    assert "``" not in shown[3:-3]


def test_images_in_a_passage_are_left_out_of_its_text():
    # The Sources button showed a guide's '<img width="1490" src="https://...">' as text.
    text = ('Look at the diagram <img width="1490" alt="x" src="https://github.com/a.png"> '
            "and the figure ![Figure 1](figs/a.png) below.\n```\n<img src=kept-in-code>\n```")
    assert render.passage_text(text) == (
        "Look at the diagram and the figure below.\n```\n<img src=kept-in-code>\n```")
