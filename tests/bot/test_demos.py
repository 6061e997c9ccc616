"""/nexttoken, /tokenize, /attention and /fewshot through the real command tree, with the
real local models; charts are read back from what the bot uploaded."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from PIL import Image

from bot.limits import payload_problems
from rag.index.embedder import Embedder
from rag.llm.registry import ModelRegistry
from rag.services import Services, build_services
from tests.bot.conftest import FAST_LLM, Harness
from tests.bot.fake_discord import Person, interaction_payload
from tests.bot.test_commands import attachment
from tests.conftest import make_settings

STUDENT = Person(1001, "ana")
DEMOS = {"nexttoken", "tokenize", "attention", "fewshot", "fewshot_accuracy"}


@pytest.fixture(scope="module")
def demo_services(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, bot_registry: ModelRegistry
) -> Services:
    """An empty index (the demos need none) and the session's real local models, loaded."""
    for name in ("smollm2", "gemma3-base"):
        bot_registry.get(name).loaded()  # type: ignore[attr-defined]
    settings = make_settings(tmp_path_factory.mktemp("demo-data") / "data", llm=FAST_LLM)
    return build_services(settings, embedder=embedder, models=bot_registry)


def uploads(harness: Harness) -> list[tuple[str, bytes]]:
    """Record the files the bot uploads (the fake Discord keeps only the JSON payloads)."""
    captured: list[tuple[str, bytes]] = []
    adapter = harness.fake.adapter
    record = adapter.request

    async def request(route, session, *, files=None, **kwargs):  # type: ignore[no-untyped-def]
        for file in files or []:
            captured.append((file.filename, file.fp.read()))
            file.reset()
        return await record(route, session, files=files, **kwargs)

    adapter.request = request  # type: ignore[method-assign]
    return captured


def command(harness: Harness, name: str, **options: Any) -> str:
    """Feed a slash command whose options may include numbers (type 10)."""
    payload = interaction_payload(name, {k: v for k, v in options.items()
                                         if not isinstance(v, float)}, STUDENT)
    for key, value in options.items():
        if isinstance(value, float):
            payload["data"]["options"].append({"name": key, "type": 10, "value": value})
    return harness.feed(payload)


def assert_safe(harness: Harness) -> None:
    """Every message the bot sent parses no mentions and fits Discord's limits."""
    sent = harness.fake.sent_messages()
    assert sent
    for r in sent:
        assert r.message.get("allowed_mentions") == {"parse": []}, r.path
        assert payload_problems(r.message) == [], r.path


def check_png(png: bytes) -> None:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    width, height = image.size
    assert 300 <= width <= 1200 and 300 <= height <= 800 and len(png) < 1_000_000


async def test_the_demo_commands_are_synced_with_limits_and_model_autocomplete(
    make_harness, demo_services
):
    harness = await make_harness(demo_services)
    sync = next(r for r in harness.fake.requests if r.method == "PUT")
    commands = {c["name"]: c for c in sync.payload["__list__"]}
    assert set(commands) >= DEMOS
    options = {o["name"]: o for o in commands["nexttoken"]["options"]}
    assert (options["top_k"]["min_value"], options["top_k"]["max_value"]) == (1, 20)
    assert (options["temperature"]["min_value"], options["temperature"]["max_value"]) == (0, 5)
    assert options["model"]["autocomplete"] and not options["model"]["required"]


async def test_nexttoken_defers_shows_progress_and_attaches_a_chart(make_harness, demo_services):
    harness = await make_harness(demo_services)
    files = uploads(harness)
    token = command(harness, "nexttoken", prompt="The capital of France is", top_k=5,
                    temperature=0.7, steps=2)
    await harness.settle()
    requests = harness.for_token(token)
    assert requests[0].payload == {"type": 5}  # public "thinking…"
    assert "smollm2" in requests[1].payload["embeds"][0]["description"]  # what is running
    final = requests[-1].payload
    assert [a["filename"] for a in final["attachments"]] == ["nexttoken.png"]
    first, steps = final["embeds"]
    assert first["title"] == "Next token · smollm2" and "← greedy" in first["description"]
    assert first["image"]["url"] == "attachment://nexttoken.png"
    assert first["footer"]["text"].startswith("smollm2 · ")
    assert "**Greedy:**" in steps["description"] and "**Sampled** (T=0.7" in steps["description"]
    (name, png), = files
    assert name == "nexttoken.png"
    check_png(png)
    assert_safe(harness)


async def test_nexttoken_chat_shows_the_template_view_beside_the_raw_one(
    make_harness, demo_services
):
    harness = await make_harness(demo_services)
    files = uploads(harness)
    token = command(harness, "nexttoken", prompt="The capital of France is", top_k=20,
                    temperature=0.0, steps=32, chat=True)
    await harness.settle()
    first, views, steps = harness.for_token(token)[-1].payload["embeds"]
    assert "(raw text, no chat template)" in first["description"]
    assert re.search(r"^1 +␣Paris ", first["description"], re.MULTILINE)  # ranked first
    assert views["title"] == "Raw text vs chat template (p at T=1)"
    assert "continues your text (␣Paris" in views["description"]
    assert steps["title"] == "One token at a time"
    (name, png), = files
    check_png(png)
    assert_safe(harness)  # three embeds, 20 candidates and 32 steps within Discord's limits


SIX_ITEMS = "\n".join(json.dumps({"input": f"number {i}", "label": "odd" if i % 2 else "even"})
                      for i in range(6)).encode()


async def test_fewshot_accuracy_scores_an_uploaded_task_with_progress_and_a_rate_limit(
    make_harness, demo_services
):
    harness = await make_harness(demo_services, rate_burst=1, rate_per_minute=1)
    files = uploads(harness)
    mine = attachment("mine.jsonl", len(SIX_ITEMS), "application/jsonl")
    harness.fake.cdn[mine["url"]] = SIX_ITEMS
    token = harness.command("fewshot_accuracy", STUDENT, models="smollm2", _attachment=mine)
    again = command(harness, "fewshot_accuracy", task="sentiment")  # right away: over the limit
    await harness.settle(timeout=1800)  # 24 short answers: seconds on an idle CPU, not here
    refused = harness.for_token(again)
    assert len(refused) == 1 and refused[0].payload["data"]["flags"] & 64
    assert "try again" in refused[0].payload["data"]["content"].lower()
    requests = harness.for_token(token)
    shown = [r.payload["embeds"][0]["description"] for r in requests[1:-1]]
    assert "Scoring 24 answers (1 models × 4 k × 6 items)…" in shown
    assert any(s.startswith("smollm2, k=4 done: 24/24 answers") for s in shown)
    embed = requests[-1].payload["embeds"][0]
    assert embed["title"] == "Few-shot accuracy · mine.jsonl"
    assert "Answer with one of: even, odd." in embed["description"]
    assert re.search(r"smollm2 +\d/6 \(\d+%\)", embed["description"])
    assert embed["image"]["url"] == "attachment://accuracy.png"
    check_png(files[0][1])
    assert_safe(harness)


async def test_a_task_file_refused_for_its_content_costs_no_turn(make_harness, empty_services):
    """One turn a minute: the file is read (and refused) after the turn is taken, and the
    refusal gives it back, so a mended file can be sent right away."""
    harness = await make_harness(empty_services, rate_burst=1, rate_per_minute=1)
    unlabelled = b'{"input": "number 1"}\n'
    for _ in range(2):
        mine = attachment("mine.jsonl", len(unlabelled), "application/jsonl")
        harness.fake.cdn[mine["url"]] = unlabelled
        shown = await harness.shown_for("fewshot_accuracy", STUDENT, _attachment=mine)
        assert "Line 1 has no text for" in shown and "try again" not in shown


async def test_attention_attaches_a_heatmap_and_names_the_model(make_harness, demo_services):
    harness = await make_harness(demo_services)
    files = uploads(harness)
    token = command(harness, "attention", sentence="The cat sat on the mat because it was soft",
                    layer=3)
    await harness.settle()
    final = harness.for_token(token)[-1].payload
    embed = final["embeds"][0]
    assert embed["title"] == "Attention · smollm2 · layer 3, mean of 9 heads"
    assert embed["description"].startswith("␣it attends most to")
    assert embed["image"]["url"] == "attachment://attention.png"
    assert [name for name, _ in files] == ["attention.png"]
    check_png(files[0][1])
    assert_safe(harness)


async def test_tokenize_compares_both_local_tokenizers(make_harness, demo_services):
    harness = await make_harness(demo_services)
    token = command(harness, "tokenize", text="The naïve cat")
    await harness.settle()
    embed = harness.for_token(token)[-1].payload["embeds"][0]
    fields = [f["name"] for f in embed["fields"]]
    assert fields[0].startswith("smollm2 · byte-level BPE") and fields[1].startswith("gemma3-base")
    assert "␣cat" in embed["fields"][0]["value"]
    assert_safe(harness)


async def test_fewshot_shows_both_answers_side_by_side(make_harness, demo_services):
    harness = await make_harness(demo_services)
    token = command(harness, "fewshot", task="Reply with the capital city.",
                    examples="Spain => Madrid; Italy => Rome", input="France")
    await harness.settle()
    embed = harness.for_token(token)[-1].payload["embeds"][0]
    assert embed["title"] == "Zero-shot vs few-shot · smollm2"
    assert [f["name"] for f in embed["fields"]] == ["Zero-shot", "Few-shot (2)", "Few-shot prompt"]
    assert all(f["value"].endswith(" s") for f in embed["fields"][:2])
    assert_safe(harness)


@pytest.mark.parametrize(
    ("name", "options", "says"),
    [("nexttoken", {"prompt": "Hi", "top_k": 0}, "top_k must be between 1 and 20 (got 0)"),
     ("nexttoken", {"prompt": "Hi", "temperature": 9.5}, "temperature must be between 0 and 5"),
     ("nexttoken", {"prompt": "Hi", "model": "nope"}, "Unknown model 'nope'"),
     ("nexttoken", {"prompt": "Hi", "model": "gemma3-base", "chat": True}, "is a base model"),
     ("fewshot", {"task": "t", "examples": "a -> b", "input": "x"}, "has no `=>`"),
     ("tokenize", {"text": "x" * 501}, "the limit is 500")],
    ids=["top_k", "temperature", "unknown-model", "chat-on-base", "bad-examples", "long-text"],
)
async def test_bad_input_gets_a_private_reply_before_any_work(
    make_harness, demo_services, name, options, says
):
    harness = await make_harness(demo_services)
    token = command(harness, name, **options)
    await harness.settle()
    requests = harness.for_token(token)
    assert len(requests) == 1 and requests[0].payload["type"] == 4
    assert says in requests[0].payload["data"]["content"]
    assert requests[0].payload["data"]["flags"] & 64  # only the student sees it


async def test_model_autocomplete_offers_the_registry(make_harness, demo_services):
    harness = await make_harness(demo_services)
    payload = interaction_payload("attention", {"sentence": "Hi", "model": "ge"}, STUDENT)
    payload["type"] = 4  # APPLICATION_COMMAND_AUTOCOMPLETE
    payload["data"]["options"][1]["focused"] = True
    token = harness.feed(payload)
    await harness.settle()
    reply = harness.for_token(token)[0].payload
    assert reply["type"] == 8
    assert reply["data"]["choices"] == [{"name": "gemma3-base", "value": "gemma3-base"}]



async def test_a_refused_progress_notice_does_not_cost_the_result(make_harness, guides_services):
    """A 429 on the "Tokenizing…" notice: the notice is skipped, the result still shown."""
    from tests.bot.fake_discord import Fault

    harness = await make_harness(guides_services)
    harness.fake.faults.append(Fault("PATCH", r"/webhooks/\d+/[^/]+/messages/@original", 429,
                                     times=1, retry_after=0.05))
    token = harness.command("tokenize", STUDENT, text="Hello world")
    await harness.settle()
    last = [r for r in harness.for_token(token) if r.method == "PATCH"][-1]
    assert last.status == 200 and any(e.get("fields") for e in last.payload["embeds"])


LONG_NAME = "x" * 3000


@pytest.mark.parametrize(("name", "options"), [
    ("tokenize", {"text": "hello", "model": LONG_NAME}),
    ("nexttoken", {"prompt": "hello", "model": LONG_NAME}),
    ("attention", {"sentence": "hello", "model": LONG_NAME}),
    ("fewshot", {"task": "t", "examples": "a => b", "input": "x", "model": LONG_NAME}),
    ("compare", {"question": "What is LoRA?", "models": LONG_NAME}),
    ("compare_accuracy", {"models": LONG_NAME}),
    ("fewshot_accuracy", {"models": LONG_NAME}),
    ("hallucination", {"question": "What is LoRA?", "model": LONG_NAME}),
])
async def test_an_unknown_model_named_at_length_is_refused_within_discords_limits(
    make_harness, empty_services, name, options
):
    harness = await make_harness(empty_services)
    token = harness.command(name, STUDENT, **options)
    await harness.settle()
    replies = [r for r in harness.for_token(token) if r.message is not None]
    assert replies and all(payload_problems(r.message) == [] for r in replies)
    assert "Unknown model 'xxx" in json.dumps([r.payload for r in replies])


async def test_hallucination_refuses_an_unknown_model_privately(make_harness, empty_services):
    harness = await make_harness(empty_services)
    token = harness.command("hallucination", STUDENT, question="What is LoRA?", model="nope")
    await harness.settle()
    data = harness.for_token(token)[0].payload["data"]
    assert data["flags"] & 64 and "Unknown model 'nope'" in data["content"]
