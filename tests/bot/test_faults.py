"""Fault injection: Discord answering 401, 403, 404, 429 and 5xx on each kind of call the bot
makes while it answers. Each ends with the question answered or the student told why, no
traceback shown, and the bot still serving.

Faults are raised at the fake's seams as the exceptions discord.py raises once its own
handling is done (see `Fault`). Overlapping re-ingests and uploads are in test_instructor.py;
an interaction token expiring mid-answer in test_answers.py.
"""

from __future__ import annotations

import pytest

from tests.bot.fake_discord import CHANNEL_ID, Fault, Person
from tests.bot.test_answers import ScriptedModel, scripted_services
from tests.bot.test_threads import thread_of_the_bot

STATUSES = {"401": (401, 50027), "403": (403, 50013), "404": (404, 10008), "429": (429, 0),
            "5xx": (503, 0)}
ANSWER = "\n\n".join(f"Part {i}: " + "A transformer maps tokens to vectors. " * 25
                     for i in range(6))  # three messages: an original and two follow-ups
CALLS = {  # the calls an answer makes, as (method, path)
    "defer": ("POST", r"/interactions/\d+/[^/]+/callback"),
    "edit-reply": ("PATCH", r"/webhooks/\d+/[^/]+/messages/@original"),
    "follow-up": ("POST", r"/webhooks/\d+/[^/]+"),
    "create-thread": ("POST", r"/channels/\d+/messages/\d+/threads"),
    "thread-send": ("POST", rf"/channels/(?!{CHANNEL_ID})\d+/messages"),
    "thread-edit": ("PATCH", r"/channels/\d+/messages/\d+"),
    "read-history": ("GET", r"/channels/\d+/messages"),
}
STUDENT = Person(1001, "ana")


@pytest.fixture(scope="module")
def long_answers(guides_services, llm_cache_dir):
    """The guides' index with a model that writes a three-message answer at once."""
    return scripted_services(guides_services, llm_cache_dir, ScriptedModel(ANSWER))


def answer_text(harness) -> list[str]:
    """The words of the answer as the student can read it in accepted messages."""
    pages = [e.get("description") or "" for r in harness.fake.delivered()
             for e in (r.message or {}).get("embeds") or []]
    return " ".join(p for p in pages if p.startswith("Part") and "▌" not in p).split()


def told_why(harness) -> bool:
    """Whether some accepted message tells the student what happened."""
    return any((r.message or {}).get("content") for r in harness.fake.delivered())


def assert_no_traceback(harness) -> None:
    for r in harness.fake.requests:
        text = str(r.payload)
        assert "Traceback" not in text and "HTTPException" not in text
        assert "Something went wrong" not in text  # every Discord failure is explained


async def assert_still_serving(harness) -> None:
    harness.fake.faults.clear()  # Discord is well again
    token = harness.command("help", Person(1999, "next"))
    await harness.settle()
    assert harness.for_token(token)[0].status == 200


@pytest.mark.parametrize("status", sorted(STATUSES))
@pytest.mark.parametrize("call", ["defer", "edit-reply", "follow-up"])
async def test_ask_survives_discord_errors(make_harness, long_answers, call, status):
    harness = await make_harness(long_answers)
    harness.fake.faults.append(Fault(*CALLS[call], *STATUSES[status], retry_after=0.05))
    token = harness.command("ask", STUDENT, question="What is a Transformer, in simple terms?")
    await harness.settle()
    if call == "defer":  # Discord refused the interaction itself: nothing more can reach it
        assert all(r.status != 200 for r in harness.for_token(token))
    else:
        assert answer_text(harness) == ANSWER.split()
    assert len(harness.bot.questions.rows()) == (call != "defer")  # nothing lost from the log
    assert_no_traceback(harness)
    await assert_still_serving(harness)


@pytest.mark.parametrize("status", sorted(STATUSES))
@pytest.mark.parametrize("call", ["create-thread", "thread-send", "thread-edit", "read-history"])
async def test_a_mention_survives_discord_errors(make_harness, long_answers, call, status):
    harness = await make_harness(long_answers)
    harness.fake.faults.append(Fault(*CALLS[call], *STATUSES[status], retry_after=0.05))
    question = "What is a Transformer, in simple terms?"
    if call == "read-history":  # a follow-up in the bot's thread reads the thread first
        thread_of_the_bot(harness, 930000000000000002)
        harness.post(question, STUDENT, 930000000000000002)
    else:
        harness.post(f"<@{harness.bot.user.id}> {question}", STUDENT, CHANNEL_ID, mention=True)
    await harness.settle()
    if call == "thread-send":  # the thread takes no messages: a reply in the channel says why
        assert told_why(harness) and harness.fake.delivered()[-1].path.startswith(
            f"/channels/{CHANNEL_ID}/")
    else:  # no thread, no history, a message that cannot be edited: answered all the same
        assert answer_text(harness) == ANSWER.split()
    assert_no_traceback(harness)
    await assert_still_serving(harness)


@pytest.mark.parametrize("status", [429, 503])
async def test_a_refused_sources_page_is_sent_again_and_the_first_page_stays(
    make_harness, guides_services, monkeypatch, status
):
    import bot.render as render

    real = render.passage_messages  # one passage per message, as long passages would be
    monkeypatch.setattr(render, "passage_messages",
                        lambda title, passages: [[e] for m in real(title, passages) for e in m])
    harness = await make_harness(guides_services)
    harness.fake.faults.append(Fault("POST", r"/webhooks/\d+/[^/]+", status, times=1,
                                     retry_after=0.05))
    token = harness.command("sources", STUDENT, query="transformer attention LoRA memory")
    await harness.settle()
    requests = harness.for_token(token)
    pages = [r for r in requests if r.method == "POST" and not r.path.endswith("/callback")]
    assert [r.status for r in pages][:2] == [status, 200]  # the refused page, sent again
    assert requests[[r.method for r in requests].index("PATCH")].payload["embeds"]
    assert all(r.payload.get("embeds") for r in requests if r.method == "PATCH")
