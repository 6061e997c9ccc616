"""The mention flow: a mention opens a thread; follow-ups there use the thread's history."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import stat

import pytest

from bot.limits import MESSAGE_CHARS, payload_problems
from rag.course.schedule import ScheduleError
from tests.bot.fake_discord import (
    APP_ID,
    CHANNEL_ID,
    GUILD_ID,
    STUDENT_PERMISSIONS,
    Fault,
    Person,
    message_payload,
)
from tests.bot.test_answers import assert_safe

STUDENT = Person(1001, "ana")
QUESTION = "What is a Transformer, in simple terms?"


def record_histories(harness, monkeypatch) -> list[list[dict]]:
    """The history each question reaches the core with (the core, observed)."""
    histories: list[list[dict]] = []
    assistant = harness.bot.answerer.assistant
    real_stream = assistant.stream

    def recording_stream(question, *, history=(), model=None, **options):
        histories.append(list(history))
        return real_stream(question, history=history, model=model, **options)

    monkeypatch.setattr(assistant, "stream", recording_stream)
    return histories


async def test_a_mention_is_answered_in_a_new_thread_and_follow_ups_use_its_history(
    make_harness, guides_services, monkeypatch
):
    harness = await make_harness(guides_services, warm_up=True)
    histories = record_histories(harness, monkeypatch)
    asked = harness.post(f"<@{harness.bot.user.id}> {QUESTION}", STUDENT, CHANNEL_ID,
                         mention=True)
    await harness.settle()
    thread_id = int(asked["id"])  # a thread started from a message takes the message's id
    created = [r for r in harness.fake.requests if r.path.endswith("/threads")]
    assert [r.path for r in created] == [f"/channels/{CHANNEL_ID}/messages/{thread_id}/threads"]
    assert created[0].payload["name"] == QUESTION
    answer = harness.fake.messages[thread_id][-1]
    assert answer["embeds"][0]["title"] == QUESTION
    assert answer["embeds"][-1]["footer"]["text"].startswith("smollm2")
    assert answer["components"], "the answer carries the feedback and Sources buttons"

    harness.post("Can you say that more simply?", STUDENT, thread_id)  # no mention needed
    await harness.settle()
    assert len(histories) == 2 and histories[0] == []
    assert histories[1][0] == {"role": "user", "content": QUESTION}
    assert histories[1][1]["role"] == "assistant" and histories[1][1]["content"]
    assert any(r.method == "GET" and r.path == f"/channels/{thread_id}/messages"
               for r in harness.fake.requests)
    assert len(harness.fake.messages[thread_id]) == 3  # answer, follow-up, second answer
    assert_safe(harness)


async def test_a_mention_of_the_bots_own_role_is_answered_in_a_new_thread(
    make_harness, empty_services
):
    """Discord gives the bot a role named like it, and the @-autocomplete offers both: a
    student who picks the role means the bot."""
    harness = await make_harness(empty_services)
    bot_role = 900000000000000060
    harness.bot._connection.parse_guild_role_create({"guild_id": str(GUILD_ID), "role": {
        "id": str(bot_role), "name": "study-assistant", "permissions": STUDENT_PERMISSIONS,
        "position": 4, "color": 0, "hoist": False, "managed": True, "mentionable": False,
        "flags": 0, "tags": {"bot_id": str(APP_ID)}}})
    asked = message_payload(f"<@&{bot_role}> {QUESTION}", STUDENT, CHANNEL_ID)
    asked["mention_roles"] = [str(bot_role)]
    harness.fake.messages.setdefault(CHANNEL_ID, []).append(asked)
    harness.fake.install(harness.bot)
    harness.bot._connection.parse_message_create(asked)
    await harness.settle()
    created = [r for r in harness.fake.requests if r.path.endswith("/threads")]
    assert [r.path for r in created] == [f"/channels/{CHANNEL_ID}/messages/{asked['id']}/threads"]
    assert created[0].payload["name"] == QUESTION


async def test_mentions_emoji_and_pings_in_a_question_are_no_part_of_it(
    make_harness, guides_services
):
    # "<#…> what is LoRA?" was searched with Discord's markup in it and refused as not
    # covered, and the thread was named "<#9000…> what is LoRA?".
    harness = await make_harness(guides_services)
    marked = "<#900000000000000021> @everyone <:think:123456789012345678> what is LoRA?"
    asked = harness.post(f"<@{harness.bot.user.id}> {marked}", STUDENT, CHANNEL_ID,
                         mention=True)
    await harness.settle()
    thread_id = int(asked["id"])
    created = [r for r in harness.fake.requests if r.path.endswith("/threads")]
    assert created[0].payload["name"] == "what is LoRA?"
    answer = harness.fake.messages[thread_id][-1]["embeds"]
    assert answer[0]["title"] == "what is LoRA?"
    assert not answer[-1]["footer"]["text"].startswith("not covered")
    token = harness.command("ask", STUDENT, question="<@1002> <@&900000000000000030> what is LoRA?")
    await harness.settle()
    final = [r for r in harness.for_token(token) if r.method == "PATCH"][-1].payload["embeds"]
    assert final[0]["title"] == "what is LoRA?"
    assert not final[-1]["footer"]["text"].startswith("not covered")
    assert_safe(harness)


async def test_thanks_in_the_thread_get_a_reply_not_a_search(make_harness, guides_services):
    # "thanks!" was searched, answered "The course materials don't cover this question ..."
    # with the closest sections, and logged as a question the materials failed.
    harness = await make_harness(guides_services)
    asked = harness.post(f"<@{harness.bot.user.id}> {QUESTION}", STUDENT, CHANNEL_ID,
                         mention=True)
    await harness.settle()
    thread_id = int(asked["id"])
    harness.post("thanks!!", STUDENT, thread_id)
    await harness.settle()
    reply = harness.fake.messages[thread_id][-1]["embeds"]
    assert "welcome" in reply[0]["description"] and "cover" not in reply[0]["description"]
    assert "no search needed" in reply[-1]["footer"]["text"]
    logged = harness.bot.questions.rows()
    assert [r["abstained"] for r in logged] == [0, 0]
    assert_safe(harness)


async def test_a_rate_limited_mention_gets_a_friendly_reply(make_harness, guides_services):
    harness = await make_harness(guides_services, rate_burst=1, rate_per_minute=2)
    mention = f"<@{harness.bot.user.id}> Who painted the Mona Lisa?"
    harness.post(mention, STUDENT, CHANNEL_ID, mention=True)
    await harness.settle()
    harness.post(mention, STUDENT, CHANNEL_ID, mention=True)
    await harness.settle()
    replies = [r for r in harness.fake.requests if r.path == f"/channels/{CHANNEL_ID}/messages"]
    assert re.search(r"try again in (29|30) s", replies[-1].payload["content"])
    assert replies[-1].payload["allowed_mentions"] == {"parse": []}


@pytest.mark.parametrize("when", ["before-the-answer", "while-answering"])
async def test_a_long_error_reply_to_a_mention_is_cut_to_discords_2000_characters(
    make_harness, guides_services, monkeypatch, when
):
    """A known error whose message quotes a long value (here a broken schedule.toml's) is told
    within one message's 2,000 characters: as a reply to the question when it comes before
    the answer's placeholder, or in place of the placeholder."""
    harness = await make_harness(guides_services)
    error = ScheduleError("schedule.toml, [[release]] 3: expected a date and time, got "
                          + repr(["2026-03-02 09:00"] * 300))

    def broken(*args, **kwargs):
        raise error

    if when == "before-the-answer":  # asked whether an exam is on, before anything is shown
        monkeypatch.setattr(harness.bot.services.course, "exam_in", broken)
    else:  # the index, searched under the "Searching…" placeholder
        monkeypatch.setattr(harness.bot.services.retriever, "search", broken)
    harness.post(f"<@{harness.bot.user.id}> {QUESTION}", STUDENT, CHANNEL_ID, mention=True)
    await harness.settle()
    [told] = [r.message for r in harness.fake.sent_messages()
              if "The course schedule has a problem" in json.dumps(r.message)]
    text = told.get("content") or told["embeds"][0]["description"]
    assert len(text) <= MESSAGE_CHARS and text.endswith("…")
    assert payload_problems(told) == [] and told["allowed_mentions"] == {"parse": []}


def direct_message(harness, content: str, channel_id: int) -> None:
    """MESSAGE_CREATE for a direct message to the bot (no guild, no member)."""
    from tests.bot.fake_discord import message_payload

    payload = message_payload(content, STUDENT, channel_id)
    for key in ("guild_id", "member"):
        payload.pop(key)
    harness.fake.messages.setdefault(channel_id, []).append(payload)
    harness.fake.install(harness.bot)
    harness.bot._connection.parse_message_create(payload)


async def test_direct_messages_are_answered_only_when_enabled(make_harness, guides_services):
    dm_channel = 920000000000000001
    off = await make_harness(guides_services, allow_dms=False)
    direct_message(off, "Who painted the Mona Lisa?", dm_channel)
    await off.settle()
    assert off.in_channel(dm_channel) == []

    on = await make_harness(guides_services, allow_dms=True)
    direct_message(on, "Who painted the Mona Lisa?", dm_channel)
    await on.settle()
    sent = on.in_channel(dm_channel)
    assert sent and sent[-1].payload["embeds"][0]["title"] == "Who painted the Mona Lisa?"
    assert not any(r.path.endswith("/threads") for r in on.fake.requests)  # no thread in a DM
    assert_safe(on)


async def test_without_thread_permission_the_answer_is_a_reply_in_the_channel(
    make_harness, guides_services, caplog
):
    harness = await make_harness(guides_services)
    harness.fake.faults.append(Fault("POST", r"/channels/\d+/messages/\d+/threads", 403, 50013))
    mention = f"<@{harness.bot.user.id}> Who painted the Mona Lisa?"
    with caplog.at_level(logging.WARNING, logger="bot"):
        asked = [harness.post(mention, Person(1001 + i), CHANNEL_ID, mention=True)
                 for i in range(2)]
        await harness.settle()
    sent = [r for r in harness.fake.delivered() if r.path == f"/channels/{CHANNEL_ID}/messages"]
    assert [str(r.payload["message_reference"]["message_id"]) for r in sent] == [
        a["id"] for a in asked]
    for asked_message in asked:  # each answer, finished, replies to its question
        answer = next(m for m in harness.fake.messages[CHANNEL_ID]
                      if str(m.get("message_reference", {}).get("message_id"))
                      == asked_message["id"])
        assert answer["embeds"][-1]["footer"]["text"] and answer["components"]
    assert not any("Something went wrong" in (r.payload.get("content") or "")
                   for r in harness.fake.requests)
    warnings = [r for r in caplog.records if "cannot create a thread" in r.getMessage()]
    assert len(warnings) == 1 and "Create Public Threads" in warnings[0].getMessage()
    assert_safe(harness)


def thread_of_the_bot(harness, thread_id: int) -> None:
    """THREAD_CREATE for a thread the bot started in the course channel."""
    from tests.bot.fake_discord import GUILD_ID, now_iso

    harness.bot._connection.parse_thread_create({
        "id": str(thread_id), "type": 11, "guild_id": str(GUILD_ID), "name": "q",
        "parent_id": str(CHANNEL_ID), "owner_id": str(harness.bot.user.id),
        "last_message_id": None, "rate_limit_per_user": 0, "message_count": 0,
        "member_count": 1, "flags": 0,
        "thread_metadata": {"archived": False, "auto_archive_duration": 1440,
                            "archive_timestamp": now_iso(), "locked": False}})


@pytest.mark.parametrize("sticker", [False, True], ids=["no-content-intent", "sticker"])
async def test_an_empty_message_in_our_thread_is_ignored_silently(
    make_harness, empty_services, sticker
):
    harness = await make_harness(empty_services, app_flags=0)  # no Message Content intent
    thread_id = 930000000000000001
    thread_of_the_bot(harness, thread_id)
    before = len(harness.fake.requests)
    posted = message_payload("", STUDENT, thread_id)  # what Discord sends without the intent
    if sticker:
        posted["sticker_items"] = [{"id": "1", "name": "wave", "format_type": 1}]
    harness.fake.install(harness.bot)
    harness.bot._connection.parse_message_create(posted)
    await harness.settle()
    assert harness.fake.requests[before:] == []


async def test_a_logged_question_names_neither_the_user_nor_the_thread(
    make_harness, guides_services
):
    harness = await make_harness(guides_services)
    harness.post(f"<@{harness.bot.user.id}> Who painted the Mona Lisa?", STUDENT, CHANNEL_ID,
                 mention=True)
    await harness.settle()
    row = harness.bot.questions.rows()[0]
    assert row["channel"] == str(CHANNEL_ID)  # the course channel, not the thread (= message)
    public_scheme = hashlib.sha256(f"study-assistant:{STUDENT.id}".encode()).hexdigest()[:16]
    assert row["user_hash"] != public_scheme  # member ids are public: no guessable hash
    key_file = harness.bot.settings.data_dir / "user-hash.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert row["user_hash"] == hmac.new(key_file.read_bytes(), str(STUDENT.id).encode(),
                                        hashlib.sha256).hexdigest()[:16]


async def test_a_follow_up_after_an_answer_of_several_messages_has_all_of_it_as_history(
    make_harness, guides_services, llm_cache_dir, monkeypatch
):
    from tests.bot.test_answers import ScriptedModel, scripted_services

    long = "\n\n".join(f"Part {i}: " + "LoRA freezes the weights and trains adapters. " * 25
                       for i in range(6))
    harness = await make_harness(scripted_services(guides_services, llm_cache_dir,
                                                   ScriptedModel(long)))
    histories = record_histories(harness, monkeypatch)
    asked = harness.post(f"<@{harness.bot.user.id}> What is LoRA?", STUDENT, CHANNEL_ID,
                         mention=True)
    await harness.settle()
    thread_id = int(asked["id"])
    assert len(harness.fake.messages[thread_id]) >= 2  # the answer took several messages
    harness.post("and how much memory does it save?", STUDENT, thread_id)
    await harness.settle()
    assert histories[1][0] == {"role": "user", "content": "What is LoRA?"}
    assert "Part 0:" in histories[1][1]["content"] and "Part 5:" in histories[1][1]["content"]


class FailingModel:
    """A chat backend that streams part of an answer, then fails as a server going down
    does: the backend is a dependency here; what the bot does with the failure is tested."""

    name = "scripted"

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def stream(self, messages, *, max_tokens, temperature, stop=None):  # type: ignore[no-untyped-def]
        for _ in range(60):
            yield "LoRA trains small adapters. "
            await asyncio.sleep(0.01)
        raise self.error

    async def complete(self, messages, *, max_tokens, temperature, stop=None):  # type: ignore[no-untyped-def]
        raise self.error

    def count_tokens(self, text: str) -> int:
        return len(text) // 4

    async def aclose(self) -> None:
        """Nothing to close."""


async def test_a_model_failing_mid_answer_replaces_the_draft_in_the_thread(
    make_harness, guides_services, llm_cache_dir
):
    from bot.render import CURSOR
    from rag.llm.base import BackendUnavailable
    from tests.bot.test_answers import scripted_services

    services = scripted_services(guides_services, llm_cache_dir,
                                 FailingModel(BackendUnavailable("connection refused")))
    harness = await make_harness(services, edit_interval_s=0.05)
    asked = harness.post(f"<@{harness.bot.user.id}> What is LoRA?", STUDENT, CHANNEL_ID,
                         mention=True)
    await harness.settle()
    [shown] = harness.fake.messages[int(asked["id"])]
    [embed] = shown["embeds"]
    assert "not reachable" in embed["description"]
    assert not embed["description"].endswith(CURSOR) and "LoRA trains" not in str(shown)
    assert not [m for m in harness.fake.messages[CHANNEL_ID] if m["author"].get("bot")]


async def test_a_full_queue_is_said_in_the_thread_opened_for_the_question(
    make_harness, guides_services, llm_cache_dir
):
    from tests.bot.test_answers import ScriptedModel, scripted_services

    model = ScriptedModel("LoRA trains small adapters. " * 20, delay_s=0.05)
    harness = await make_harness(scripted_services(guides_services, llm_cache_dir, model),
                                 max_concurrent=1, max_waiting=0)
    harness.post(f"<@{harness.bot.user.id}> What is LoRA?", STUDENT, CHANNEL_ID, mention=True)
    late = harness.post(f"<@{harness.bot.user.id}> What is RAG?", Person(1002, "bo"),
                        CHANNEL_ID, mention=True)
    await harness.settle()
    [shown] = harness.fake.messages[int(late["id"])]
    assert "a lot of questions" in shown["embeds"][0]["description"]


async def test_a_mention_refused_for_a_full_queue_costs_no_turn(make_harness, empty_services):
    """One turn a minute: the question told that the queue is full got nothing else, so the
    next one is told about the queue too, not that the student asks too quickly."""
    harness = await make_harness(empty_services, rate_burst=1, rate_per_minute=1,
                                 max_concurrent=1, max_waiting=0)
    async with harness.bot.answerer.queue.slot():  # an answer is generating; none may wait
        for question in ("What is LoRA?", "What is RAG?"):
            asked = harness.post(f"<@{harness.bot.user.id}> {question}", STUDENT, CHANNEL_ID,
                                 mention=True)
            await harness.settle()
            shown = json.dumps(harness.fake.messages.get(int(asked["id"]), []))
            assert "a lot of questions" in shown and "asking quickly" not in shown


async def test_a_mention_that_found_nothing_ingested_costs_no_turn(make_harness, empty_services):
    """One turn a minute: a question that could only be told that no course materials are
    ingested yet got nothing else, so the next one is told that too, not to wait."""
    harness = await make_harness(empty_services, rate_burst=1, rate_per_minute=1)
    for question in ("What is LoRA?", "What is RAG?"):
        asked = harness.post(f"<@{harness.bot.user.id}> {question}", STUDENT, CHANNEL_ID,
                             mention=True)
        await harness.settle()
        shown = json.dumps(harness.fake.messages.get(int(asked["id"]), []))
        assert "No course materials" in shown and "asking quickly" not in shown


async def answer_in_the_channel(harness, question: str) -> dict:
    """/ask in the course channel; the answer's (finished) message."""
    token = harness.command("ask", STUDENT, question=question)
    await harness.settle()
    return harness.fake.originals[token]


def answer_turn(answer: dict) -> list[dict]:
    """An answer message as the question and answer a follow-up to it should have."""
    return [{"role": "user", "content": answer["embeds"][0]["title"]},
            {"role": "assistant", "content": answer["embeds"][0]["description"]}]


async def test_a_reply_to_an_answer_in_the_channel_has_that_answer_as_history(
    make_harness, guides_services, llm_cache_dir, monkeypatch
):
    from tests.bot.test_answers import ScriptedModel, scripted_services

    model = ScriptedModel("LoRA trains small adapters instead of the whole 7B model.")
    harness = await make_harness(scripted_services(guides_services, llm_cache_dir, model))
    histories = record_histories(harness, monkeypatch)
    answer = await answer_in_the_channel(harness, "How much memory does LoRA save for 7B?")
    harness.post("what about for 13B?", STUDENT, CHANNEL_ID, mention=True, reply_to=answer)
    await harness.settle()
    assert len(histories) == 2 and histories[1] == answer_turn(answer)


async def test_a_reply_to_an_answer_without_a_mention_is_a_follow_up_to_it(
    make_harness, guides_services, llm_cache_dir, monkeypatch
):
    from tests.bot.test_answers import ScriptedModel, scripted_services

    model = ScriptedModel("LoRA trains small adapters instead of the whole 7B model.")
    harness = await make_harness(scripted_services(guides_services, llm_cache_dir, model))
    histories = record_histories(harness, monkeypatch)
    answer = await answer_in_the_channel(harness, "How much memory does LoRA save for 7B?")
    asked = harness.post("what about for 13B?", STUDENT, CHANNEL_ID, reply_to=answer)
    await harness.settle()
    assert len(histories) == 2 and histories[1] == answer_turn(answer)
    follow_up = harness.fake.messages[int(asked["id"])][-1]  # in a thread, like a mention
    assert follow_up["embeds"][0]["title"] == "what about for 13B?"
    assert_safe(harness)


@pytest.mark.parametrize("mention", [True, False], ids=["pinging", "not-pinging"])
@pytest.mark.parametrize("page", [0, -1], ids=["first-page", "last-page"])
async def test_a_reply_to_a_page_of_a_long_answer_has_all_of_it_as_history(
    make_harness, guides_services, llm_cache_dir, monkeypatch, page, mention
):
    from tests.bot.test_answers import ScriptedModel, scripted_services

    long = "\n\n".join(f"Part {i}: " + "LoRA freezes the weights and trains adapters. " * 25
                       for i in range(6))
    harness = await make_harness(scripted_services(guides_services, llm_cache_dir,
                                                   ScriptedModel(long)))
    harness.fake.faults.append(Fault("POST", r"/channels/\d+/messages/\d+/threads", 403, 50013))
    histories = record_histories(harness, monkeypatch)
    harness.post(f"<@{harness.bot.user.id}> What is LoRA?", STUDENT, CHANNEL_ID, mention=True)
    await harness.settle()
    pages = [m for m in harness.fake.messages[CHANNEL_ID] if m["author"].get("bot")]
    assert len(pages) >= 2  # answered in the channel, in several messages
    harness.post("and for 13B?", STUDENT, CHANNEL_ID, mention=mention, reply_to=pages[page])
    await harness.settle()
    assert histories[1][:1] == [{"role": "user", "content": "What is LoRA?"}]
    assert "Part 0:" in histories[1][1]["content"] and "Part 5:" in histories[1][1]["content"]


async def test_a_reply_to_a_students_message_without_a_mention_is_not_for_the_bot(
    make_harness, empty_services
):
    harness = await make_harness(empty_services)
    theirs = harness.post("Has anyone tried LoRA on 13B?", Person(1002, "bo"), CHANNEL_ID)
    before = len(harness.fake.requests)
    harness.post("yes, it fits in 24 GB", STUDENT, CHANNEL_ID, reply_to=theirs)
    await harness.settle()
    assert harness.fake.requests[before:] == []


@pytest.mark.parametrize(("command", "options"), [
    ("tokenize", {"text": "LoRA adapters", "model": "smollm2"}),
    ("sources", {"query": "LoRA"}),
], ids=["demo", "passages"])
async def test_a_reply_without_a_mention_to_a_bot_message_that_is_no_answer_is_not_for_the_bot(
    make_harness, guides_services, command, options
):
    harness = await make_harness(guides_services)
    token = harness.command(command, STUDENT, **options)
    await harness.settle()
    shown = harness.fake.originals[token]
    assert shown["embeds"][0]["title"], "titled, as an answer's first message is"
    before = len(harness.fake.requests)
    harness.post("what about for 13B?", STUDENT, CHANNEL_ID, reply_to=shown)
    await harness.settle()
    assert harness.fake.requests[before:] == []


# Discord writes system messages itself, as the member who acted: a renamed thread's holds the
# new name as its content; "added someone to the thread" mentions whom.
SYSTEM_MESSAGES = {"thread-renamed": (4, "What is LoRA", False),
                   "bot-added-to-a-thread": (1, "", True)}


@pytest.mark.parametrize("kind", sorted(SYSTEM_MESSAGES))
async def test_discords_system_messages_are_not_questions(make_harness, empty_services, kind):
    harness = await make_harness(empty_services)
    thread_id = 930000000000000002
    thread_of_the_bot(harness, thread_id)
    before = len(harness.fake.requests)
    message_type, content, mention = SYSTEM_MESSAGES[kind]
    me = harness.bot.user
    mentions = [{"id": str(me.id), "username": me.name, "discriminator": "0", "avatar": None,
                 "bot": True}] if mention else []
    posted = message_payload(content, STUDENT, thread_id, mentions)
    posted["type"] = message_type
    harness.fake.install(harness.bot)
    harness.bot._connection.parse_message_create(posted)
    await harness.settle()
    assert harness.fake.requests[before:] == []
