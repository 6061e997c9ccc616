"""Edited questions: an edit of a question the bot answered is answered again, in place of its
answer and under the same rules as a new question; every other edit is ignored."""

from __future__ import annotations

import asyncio
import copy
import logging

import pytest

from tests.bot.fake_discord import CHANNEL_ID, Fault, Person, message_payload
from tests.bot.test_answers import ScriptedModel, assert_safe, scripted_services
from tests.bot.test_threads import record_histories

STUDENT = Person(1001, "ana")
SHORT = "LoRA trains small adapters and freezes the weights."


class TurnsModel(ScriptedModel):
    """A scripted chat backend that answers each question with the next of its texts (the
    last one again once they run out)."""

    def __init__(self, *texts: str, delay_s: float = 0.0) -> None:
        super().__init__(texts[0], delay_s)
        self.texts = list(texts)

    async def stream(self, messages, **options):  # type: ignore[no-untyped-def, override]
        self.text = self.texts.pop(0) if len(self.texts) > 1 else self.texts[0]
        async for piece in super().stream(messages, **options):
            yield piece


def bot_messages(harness, channel_id: int) -> list[dict]:
    """The bot's messages in a channel or thread, oldest first."""
    return [m for m in harness.fake.messages.get(channel_id, []) if m["author"].get("bot")]


def mention(harness, question: str) -> str:
    return f"<@{harness.bot.user.id}> {question}"


async def asked_in_a_thread(harness, question: str) -> tuple[dict, int]:
    """A mention answered in a new thread: the question's message and the thread's id."""
    asked = harness.post(mention(harness, question), STUDENT, CHANNEL_ID, mention=True)
    await harness.settle()
    return asked, int(asked["id"])


def renames(harness, thread_id: int) -> list[str]:
    """The names the bot gave a thread after creating it."""
    return [r.payload["name"] for r in harness.fake.requests
            if r.method == "PATCH" and r.path == f"/channels/{thread_id}"]


async def test_an_edited_question_is_answered_again_in_place_of_its_answer(
    make_harness, guides_services, llm_cache_dir
):
    services = scripted_services(guides_services, llm_cache_dir, TurnsModel(SHORT))
    harness = await make_harness(services)
    asked, thread_id = await asked_in_a_thread(harness, "What is LoRA?")
    [first] = bot_messages(harness, thread_id)
    harness.update(asked, content=mention(harness, "What is LoRA, in short?"))
    await harness.settle()
    [answer] = bot_messages(harness, thread_id)
    assert answer["id"] == first["id"]  # the same message, rewritten
    assert answer["embeds"][0]["title"] == "What is LoRA, in short?"
    assert answer["embeds"][-1]["footer"]["text"] and answer["components"]
    assert len([r for r in harness.fake.requests if r.path.endswith("/threads")]) == 1
    assert [r["question"] for r in harness.bot.questions.rows()] == ["What is LoRA?",
                                                                     "What is LoRA, in short?"]
    assert_safe(harness)


async def test_the_thread_opened_for_an_edited_question_is_renamed_after_it(
    make_harness, guides_services, llm_cache_dir
):
    services = scripted_services(guides_services, llm_cache_dir, TurnsModel(SHORT))
    harness = await make_harness(services)
    asked, thread_id = await asked_in_a_thread(harness, "What is LoRA, in shrot?")
    harness.update(asked, content=mention(harness, "What is LoRA, in short?"))
    await harness.settle()
    assert renames(harness, thread_id) == ["What is LoRA, in short?"]
    assert harness.fake.threads[thread_id]["name"] == "What is LoRA, in short?"
    assert_safe(harness)


async def test_a_rename_discord_refuses_is_logged_and_the_new_answer_stands(
    make_harness, guides_services, llm_cache_dir, caplog
):
    services = scripted_services(guides_services, llm_cache_dir, TurnsModel(SHORT))
    harness = await make_harness(services)
    harness.fake.faults.append(Fault("PATCH", r"/channels/\d+", 403, 50013))  # no Manage Threads
    asked, thread_id = await asked_in_a_thread(harness, "What is LoRA, in shrot?")
    with caplog.at_level(logging.WARNING, logger="bot"):
        harness.update(asked, content=mention(harness, "What is LoRA, in short?"))
        await harness.settle()
    [answer] = bot_messages(harness, thread_id)
    assert answer["embeds"][0]["title"] == "What is LoRA, in short?"
    assert answer["embeds"][-1]["footer"]["text"] and answer["components"]
    assert f"could not rename thread {thread_id}" in caplog.text


async def test_an_embed_unfurl_of_an_answered_question_is_not_answered_again(
    make_harness, guides_services, llm_cache_dir
):
    services = scripted_services(guides_services, llm_cache_dir, TurnsModel(SHORT))
    harness = await make_harness(services)
    asked, _ = await asked_in_a_thread(harness, "What is LoRA? https://arxiv.org/abs/2106.09685")
    before = len(harness.fake.requests)
    unfurled = [{"type": "link", "url": "https://arxiv.org/abs/2106.09685", "title": "LoRA"}]
    harness.update(asked, embeds=unfurled)
    await harness.settle()
    assert harness.fake.requests[before:] == []


def bot_mention(harness) -> dict:
    """The bot in a message's `mentions`."""
    me = harness.bot.user
    return {"id": str(me.id), "username": me.name, "discriminator": "0", "avatar": None,
            "bot": True}


@pytest.mark.parametrize("author", ["student", "bot"])
async def test_edits_of_messages_the_bot_never_answered_are_ignored(
    make_harness, empty_services, author
):
    """A student's message edited to mention the bot (Discord notifies nobody of a mention
    added by an edit), and another bot's edited mention: neither was answered."""
    harness = await make_harness(empty_services)
    by_bot = author == "bot"
    posted = message_payload(mention(harness, "What is LoRA?") if by_bot else "What is LoRA?",
                             STUDENT, CHANNEL_ID, [bot_mention(harness)] if by_bot else [])
    posted["author"]["bot"] = by_bot
    harness.fake.install(harness.bot)
    harness.bot._connection.parse_message_create(posted)
    await harness.settle()
    before = len(harness.fake.requests)
    harness.update(posted, content=mention(harness, "What is LoRA, exactly?"),
                   mentions=[bot_mention(harness)])
    await harness.settle()
    assert harness.fake.requests[before:] == []


async def test_an_edited_follow_up_in_a_thread_is_answered_again_with_the_threads_history(
    make_harness, guides_services, llm_cache_dir, monkeypatch
):
    services = scripted_services(guides_services, llm_cache_dir, TurnsModel(SHORT))
    harness = await make_harness(services)
    histories = record_histories(harness, monkeypatch)
    _, thread_id = await asked_in_a_thread(harness, "What is LoRA?")
    follow_up = harness.post("and how much memroy?", STUDENT, thread_id)  # no mention needed
    await harness.settle()
    harness.update(follow_up, content="and how much memory does it save?")
    await harness.settle()
    assert len(histories) == 3 and histories[2] == histories[1]  # not its own earlier answer
    answers = bot_messages(harness, thread_id)
    assert len(answers) == 2
    assert answers[-1]["embeds"][0]["title"] == "and how much memory does it save?"
    assert renames(harness, thread_id) == []  # the thread keeps its first question's name


async def test_edits_during_an_answer_are_answered_once_it_is_finished_the_latest_only(
    make_harness, guides_services, llm_cache_dir
):
    slow = TurnsModel(SHORT * 6, delay_s=0.05)  # about 2.4 s of streaming
    harness = await make_harness(scripted_services(guides_services, llm_cache_dir, slow))
    asked = harness.post(mention(harness, "What is LoRA?"), STUDENT, CHANNEL_ID, mention=True)
    while not bot_messages(harness, int(asked["id"])):  # the answer has begun in its thread
        await asyncio.sleep(0.01)
    assert harness.bot.questions.rows() == []  # and is not finished
    harness.update(asked, content=mention(harness, "What is LoRA, in shor?"))
    harness.update(asked, content=mention(harness, "What is LoRA, in short?"))
    await harness.settle()
    assert [r["question"] for r in harness.bot.questions.rows()] == ["What is LoRA?",
                                                                     "What is LoRA, in short?"]
    [answer] = bot_messages(harness, int(asked["id"]))
    assert answer["embeds"][0]["title"] == "What is LoRA, in short?"


async def test_an_answer_of_several_messages_is_replaced_whole(
    make_harness, guides_services, llm_cache_dir
):
    long = "\n\n".join(f"Part {i}: " + "LoRA freezes the weights and trains adapters. " * 25
                       for i in range(6))
    services = scripted_services(guides_services, llm_cache_dir, TurnsModel(long, SHORT))
    harness = await make_harness(services)
    asked, thread_id = await asked_in_a_thread(harness, "What is LoRA?")
    first, *pages = bot_messages(harness, thread_id)
    assert pages, "the first answer took several messages"
    harness.update(asked, content=mention(harness, "What is LoRA, in short?"))
    await harness.settle()
    [answer] = bot_messages(harness, thread_id)
    assert answer["id"] == first["id"] and "Part" not in answer["embeds"][0]["description"]
    deleted = {r.path.rsplit("/", 1)[-1] for r in harness.fake.requests if r.method == "DELETE"}
    assert deleted == {p["id"] for p in pages}


async def test_an_edit_during_an_exam_is_refused_and_the_reply_kept(
    make_harness, empty_services
):
    """(An empty index: the exam is started in its own data dir. Its reply to the question
    says nothing is ingested; an edit would write over it like over an answer.)"""
    harness = await make_harness(empty_services)
    asked, thread_id = await asked_in_a_thread(harness, "What is LoRA?")
    [before] = bot_messages(harness, thread_id)
    harness.bot.services.course.start_exam([CHANNEL_ID])
    harness.update(asked, content=mention(harness, "What is LoRA, in short?"))
    await harness.settle()
    assert bot_messages(harness, thread_id) == [before]
    [refusal] = bot_messages(harness, CHANNEL_ID)
    assert "exam is on here" in refusal["content"]


async def test_an_edit_spends_a_turn_of_the_rate_limit(make_harness, guides_services,
                                                       llm_cache_dir):
    services = scripted_services(guides_services, llm_cache_dir, TurnsModel(SHORT))
    harness = await make_harness(services, rate_burst=1, rate_per_minute=2)
    asked, thread_id = await asked_in_a_thread(harness, "What is LoRA?")
    [before] = bot_messages(harness, thread_id)
    harness.update(asked, content=mention(harness, "What is LoRA, in short?"))
    await harness.settle()
    assert bot_messages(harness, thread_id) == [before]
    [refusal] = bot_messages(harness, CHANNEL_ID)
    assert "try again in" in refusal["content"]


async def test_after_a_restart_edits_of_questions_answered_before_it_are_ignored(
    make_harness, guides_services, llm_cache_dir, caplog
):
    """Which answer is a question's is kept in memory: a new bot instance gets the edits of a
    mention and of a follow-up in its thread, messages it never saw. It neither answers them
    (a second answer beside the first, a thread renamed) nor fails on them."""
    services = scripted_services(guides_services, llm_cache_dir, TurnsModel(SHORT))
    before = await make_harness(services, log_name="bot.sqlite3")
    asked, thread_id = await asked_in_a_thread(before, "What is LoRA?")
    follow_up = before.post("and how much memroy?", STUDENT, thread_id)
    await before.settle()
    answers = copy.deepcopy(bot_messages(before, thread_id))
    assert len(answers) == 2

    after = await make_harness(services, log_name="bot.sqlite3")  # the same Discord, restarted
    after.fake.messages, after.fake.threads = before.fake.messages, before.fake.threads
    after.bot._connection.parse_thread_create(dict(before.fake.threads[thread_id]))  # at connect
    started = len(after.fake.requests)
    with caplog.at_level(logging.WARNING):
        after.update(asked, content=mention(after, "What is LoRA, in short?"))
        after.update(follow_up, content="and how much memory does it save?")
        await after.settle()
    assert after.fake.requests[started:] == []
    assert bot_messages(after, thread_id) == answers
    assert [r["question"] for r in after.bot.questions.rows()] == ["What is LoRA?",
                                                                   "and how much memroy?"]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
