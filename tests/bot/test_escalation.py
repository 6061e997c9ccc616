"""Ask a TA: escalation threads, TA answers relayed to the student, the course FAQ; the real
bot, discord.py, index, embedder and Chroma."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from bot.limits import payload_problems
from rag.index.embedder import Embedder
from rag.llm.registry import ModelRegistry
from rag.services import Services, build_services
from tests.bot.conftest import FAST_LLM
from tests.bot.fake_discord import (
    APP_ID,
    CHANNEL_ID,
    GUILD_ID,
    MANAGE_GUILD_PERMISSIONS,
    OTHER_CHANNEL_ID,
    STUDENT_PERMISSIONS,
    STUDENT_ROLE,
    Fault,
    Person,
    _interaction,
    dm_button_payload,
    interaction_payload,
    now_iso,
)
from tests.bot.test_threads import direct_message
from tests.conftest import make_settings, run

TA_ROLE = 900000000000000032
TA_CHANNEL = 900000000000000022
STUDENT = Person(1001, "ana")
OTHER_STUDENT = Person(1002, "ben")
TA = Person(3001, "tina", roles=(TA_ROLE,))
INSTRUCTOR = Person(2001, "prof", roles=(), permissions=MANAGE_GUILD_PERMISSIONS)
OUT_OF_SCOPE = "Who painted the Mona Lisa?"
FAQ_QUESTION = "Is the final exam open book?"
FAQ_ANSWER = ("Yes. The final exam is open book: you may bring printed notes and the course "
              "guides, but no laptops or phones.")
PARAPHRASE = "Can I bring my printed notes to the final exam?"


@pytest.fixture
def course(tmp_path: Path, shared_materials: Path, embedder: Embedder,
           bot_registry: ModelRegistry) -> Services:
    """Two real guides, ingested, in a materials folder the FAQ may add to."""
    root = tmp_path / "materials"
    root.mkdir()
    for name in ("llm-basics.md", "week2-support-guide.md"):
        shutil.copy(shared_materials / "guides" / name, root / name)
    settings = make_settings(tmp_path / "data", llm=FAST_LLM, materials_dir=root)
    services = build_services(settings, embedder=embedder, models=bot_registry)
    assert run(root, services).ok
    services.retriever.refresh_interval_s = 0.0  # see each ingest at once (default: within 1 s)
    return services


# What the README asks for in the TA channel: View Channel, Send Messages, Embed Links,
# Create Public Threads, Send Messages in Threads.
BOT_TA_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 35) | (1 << 38)


def ta_server(harness, forum: bool = False, bot_allowed: int = BOT_TA_PERMISSIONS) -> None:
    """GUILD_ROLE_CREATE and CHANNEL_CREATE: a TA role, and a TA (text or forum) channel where
    the bot's member is allowed `bot_allowed`."""
    state = harness.bot._connection
    overwrite = {"id": str(APP_ID), "type": 1, "allow": str(bot_allowed), "deny": "0"}
    state.parse_guild_role_create({"guild_id": str(GUILD_ID), "role": {
        "id": str(TA_ROLE), "name": "TA", "permissions": STUDENT_PERMISSIONS, "position": 3,
        "color": 0, "hoist": False, "managed": False, "mentionable": True, "flags": 0}})
    state.parse_channel_create({
        "id": str(TA_CHANNEL), "type": 15 if forum else 0, "name": "ta-desk", "position": 2,
        "permission_overwrites": [overwrite], "nsfw": False, "parent_id": None,
        "guild_id": str(GUILD_ID), "rate_limit_per_user": 0, "topic": None})


async def ta_harness(make_harness, services: Services, forum: bool = False,
                     bot_allowed: int = BOT_TA_PERMISSIONS, **discord: Any):
    """A bot with a TA channel and role configured (and existing in the server)."""
    settings = {"ta_channel_id": TA_CHANNEL, "ta_role_id": TA_ROLE, **discord}
    harness = await make_harness(services, **settings)
    ta_server(harness, forum, bot_allowed)
    return harness


async def ask(harness, question: str, person: Person = STUDENT,
              channel_id: int = CHANNEL_ID, **options: Any):
    """/ask; the answer's message and its row in the question log. (Asks in another channel
    do not wait for this one's message rate, 5 per 5 s.)"""
    payload = interaction_payload("ask", {"question": question, **options}, person, channel_id)
    token = harness.feed(payload)
    await harness.settle()
    return harness.fake.originals[token], harness.bot.questions.rows()[-1]


async def press(harness, message: dict, custom_id: str, person: Person) -> str:
    """Click a button of a message; the interaction token."""
    token = harness.click(message, custom_id, person)
    await harness.settle()
    return token


def buttons(message: dict) -> list[str]:
    return [c["custom_id"] for row in message.get("components") or []
            for c in row["components"]]


def private_reply(harness, token: str) -> str:
    """The text of the (ephemeral) reply to a button click."""
    requests = harness.for_token(token)
    assert requests[0].payload["data"]["flags"] & 64
    last = requests[-1].payload
    return last.get("content") or last["data"].get("content") or ""


def ta_posts(harness) -> list:
    """Requests that posted an escalation in the TA channel (a message, or a forum post)."""
    return [r for r in harness.fake.requests if r.method == "POST"
            and r.path in (f"/channels/{TA_CHANNEL}/messages", f"/channels/{TA_CHANNEL}/threads")]


def assert_only_the_ta_ping_mentions_and_only_the_ta_role(harness) -> None:
    pings = role_pings(harness)
    assert pings
    for r in harness.fake.requests:
        if r.path.endswith("/callback") and r.payload.get("type") == 9:
            continue  # a modal: a form, not a message
        body = r.payload.get("message") if r.path.endswith("/threads") else r.message
        if not isinstance(body, dict):
            continue
        expected = {"parse": [], "roles": [TA_ROLE]} if r in pings else {"parse": []}
        assert body.get("allowed_mentions") == expected, r.path
        assert payload_problems(body) == [], r.path


def role_pings(harness) -> list:
    """Requests Discord accepted that notify the TA role: a message (or a forum post's first
    message) that mentions the role and allows that mention."""
    pings = []
    for r in harness.fake.requests:
        body = r.payload.get("message") if r.path.endswith("/threads") else r.message
        if r.status != 200 or not isinstance(body, dict):
            continue
        allowed = body.get("allowed_mentions") or {}
        if f"<@&{TA_ROLE}>" in (body.get("content") or "") and TA_ROLE in allowed.get("roles", []):
            pings.append(r)
    return pings


async def escalated(harness, question: str = OUT_OF_SCOPE, person: Person = STUDENT, **options):
    """Ask, then press "Ask a TA": the answer's message and the escalation."""
    message, row = await ask(harness, question, person, **options)
    assert row["abstained"], "escalation tests use questions the materials don't cover"
    await press(harness, message, f"sa:ta:{row['id']}", person)
    escalation = harness.bot.escalation_log.for_question(row["id"])
    assert escalation is not None and escalation.status == "open"
    return message, escalation


async def answered(harness, escalation, text: str = FAQ_ANSWER, person: Person = TA) -> dict:
    """A TA writes in the escalation thread; the relayed message (with "Add to FAQ")."""
    harness.post(text, person, escalation.ta_thread_id)
    await harness.settle()
    relayed = [m for m in harness.fake.messages[CHANNEL_ID]
               if any(b.startswith("sa:faq:") for b in buttons(m))]
    assert relayed, "the TA's answer was not relayed"
    return relayed[-1]


async def test_ask_a_ta_opens_a_thread_in_the_ta_channel_with_the_question_and_answer(
    make_harness, guides_services
):
    harness = await ta_harness(make_harness, guides_services)
    message, row = await ask(harness, OUT_OF_SCOPE)
    assert row["abstained"] and buttons(message)[-1] == f"sa:ta:{row['id']}"
    token = await press(harness, message, f"sa:ta:{row['id']}", STUDENT)
    assert "Sent to the TAs" in private_reply(harness, token)
    [post] = ta_posts(harness)
    asked, bot_answer = post.payload["embeds"]
    assert asked["description"] == OUT_OF_SCOPE
    link = f"https://discord.com/channels/{GUILD_ID}/{CHANNEL_ID}/{message['id']}"
    assert link in asked["fields"][0]["value"]
    assert bot_answer["description"] == row["answer"]
    assert bot_answer["fields"][0]["name"] == "Sources"
    thread = [r for r in harness.fake.requests if r.path.startswith(f"/channels/{TA_CHANNEL}/")
              and r.path.endswith("/threads")]
    assert thread and thread[0].payload["name"].endswith(OUT_OF_SCOPE)
    escalation = harness.bot.escalation_log.for_question(row["id"])
    assert escalation.ta_thread_id == int(thread[0].path.split("/")[4])
    assert_only_the_ta_ping_mentions_and_only_the_ta_role(harness)


async def test_in_a_forum_channel_the_escalation_is_a_post(make_harness, guides_services):
    harness = await ta_harness(make_harness, guides_services, forum=True)
    _, escalation = await escalated(harness)
    [post] = ta_posts(harness)
    assert post.path == f"/channels/{TA_CHANNEL}/threads"
    assert post.payload["message"]["content"].startswith(f"<@&{TA_ROLE}>")
    assert escalation.ta_thread_id in {int(t) for t in harness.fake.messages}
    assert_only_the_ta_ping_mentions_and_only_the_ta_role(harness)


async def test_a_tas_answer_is_relayed_to_the_student_with_mentions_off_and_marked_answered(
    make_harness, guides_services
):
    harness = await ta_harness(make_harness, guides_services)
    message, escalation = await escalated(harness)
    relayed = await answered(harness, escalation)
    assert relayed["embeds"][0]["description"] == FAQ_ANSWER
    assert relayed["content"].startswith(f"<@{STUDENT.id}>")
    assert relayed["message_reference"]["message_id"] in (message["id"], int(message["id"]))
    assert harness.bot.escalation_log.get(escalation.id).status == "answered"
    in_thread = harness.fake.messages[escalation.ta_thread_id]
    assert in_thread[-1]["content"].startswith("✅ Sent tina's answer to the student")
    assert not any(m["embeds"] for m in in_thread[1:]), "the bot must not answer TAs itself"
    assert_only_the_ta_ping_mentions_and_only_the_ta_role(harness)


async def test_a_tas_answer_waits_while_an_exam_is_on_where_the_student_asked(
    make_harness, guides_services
):
    harness = await ta_harness(make_harness, guides_services)
    _, escalation = await escalated(harness)
    course = harness.bot.services.course
    course.start_exam([CHANNEL_ID])
    before = len(harness.fake.messages.get(CHANNEL_ID, []))
    harness.post(FAQ_ANSWER, TA, escalation.ta_thread_id)
    await harness.settle()
    assert harness.fake.messages.get(CHANNEL_ID, [])[before:] == []
    assert "exam is on" in harness.fake.messages[escalation.ta_thread_id][-1]["content"]
    assert harness.bot.escalation_log.get(escalation.id).status == "open"
    course.end_exams()
    relayed = await answered(harness, escalation)  # posted again after the exam
    assert relayed["embeds"][0]["description"] == FAQ_ANSWER


async def test_a_tas_answer_to_a_question_asked_by_dm_waits_while_an_exam_is_on_anywhere(
    make_harness, guides_services
):
    """A DM is outside every channel, so any exam covers it, even one in a single channel: a
    student in the exam room must not get the TA's answer in their DMs meanwhile."""
    harness = await ta_harness(make_harness, guides_services, allow_dms=True)
    dm_channel = 920000000000000077
    direct_message(harness, OUT_OF_SCOPE, dm_channel)
    await harness.settle()
    answer = [m for m in harness.fake.messages[dm_channel] if m["author"].get("bot")][-1]
    [ask_ta] = [b for b in buttons(answer) if b.startswith("sa:ta:")]
    harness.feed(dm_button_payload(answer, ask_ta, STUDENT))
    await harness.settle()
    escalation = harness.bot.escalation_log.for_question(int(ask_ta.rsplit(":", 1)[1]))
    course = harness.bot.services.course
    course.start_exam([CHANNEL_ID])  # /exam start in one course channel
    before = len(harness.fake.requests)
    harness.post(FAQ_ANSWER, TA, escalation.ta_thread_id)
    await harness.settle()
    elsewhere = [r.path for r in harness.fake.requests[before:] if r.method == "POST"
                 and not r.path.startswith(f"/channels/{escalation.ta_thread_id}/")]
    assert elsewhere == [], "the TA's answer left the TA thread during the exam"
    assert "exam is on" in harness.fake.messages[escalation.ta_thread_id][-1]["content"]
    assert harness.bot.escalation_log.get(escalation.id).status == "open"
    course.end_exams()
    harness.post(FAQ_ANSWER, TA, escalation.ta_thread_id)  # posted again after the exam
    await harness.settle()
    relayed = harness.fake.messages[dm_channel][-1]
    assert relayed["embeds"][0]["description"] == FAQ_ANSWER
    assert_only_the_ta_ping_mentions_and_only_the_ta_role(harness)


async def test_an_answer_in_the_students_thread_is_relayed_into_that_thread(
    make_harness, guides_services
):
    harness = await ta_harness(make_harness, guides_services)
    asked = harness.post(f"<@{harness.bot.user.id}> {OUT_OF_SCOPE}", STUDENT, CHANNEL_ID,
                         mention=True)
    await harness.settle()
    thread_id = int(asked["id"])  # the bot answered in a thread started from the question
    answer = harness.fake.messages[thread_id][-1]
    await press(harness, answer, buttons(answer)[-1], STUDENT)
    escalation = harness.bot.escalation_log.for_question(harness.bot.questions.rows()[-1]["id"])
    harness.post(FAQ_ANSWER, TA, escalation.ta_thread_id)
    await harness.settle()
    relayed = harness.fake.messages[thread_id][-1]
    assert relayed["embeds"][0]["description"] == FAQ_ANSWER
    assert str(relayed["message_reference"]["message_id"]) == answer["id"]
    assert_only_the_ta_ping_mentions_and_only_the_ta_role(harness)


@pytest.mark.parametrize("page", [0, -1], ids=["first-page", "last-page"])
async def test_a_reply_without_a_mention_to_a_tas_answer_is_not_a_question_for_the_bot(
    make_harness, guides_services, page
):
    harness = await ta_harness(make_harness, guides_services)
    _, escalation = await escalated(harness)
    long_answer = " ".join(f"Sentence {i} of a long answer by the TA." for i in range(110))
    harness.post(long_answer, TA, escalation.ta_thread_id)
    await harness.settle()
    pages = [m for m in harness.fake.messages[CHANNEL_ID] if m["author"].get("bot")]
    assert len(pages) >= 2 and buttons(pages[0])[0].startswith("sa:faq:")
    before = len(harness.fake.requests)
    harness.post("Thanks, that helps!", STUDENT, CHANNEL_ID, reply_to=pages[page])
    await harness.settle()
    assert [r for r in harness.fake.requests[before:] if r.method != "GET"] == []
    assert harness.bot.questions.rows()[-1]["question"] == OUT_OF_SCOPE  # no new question


async def test_an_edited_question_moves_its_open_escalation_to_the_new_question_and_answer(
    make_harness, guides_services
):
    harness = await ta_harness(make_harness, guides_services)
    me = harness.bot.user.id
    asked = harness.post(f"<@{me}> Who painted the Mona Lsa?", STUDENT, CHANNEL_ID, mention=True)
    await harness.settle()
    answer = harness.fake.messages[int(asked["id"])][-1]
    await press(harness, answer, buttons(answer)[-1], STUDENT)
    first = harness.bot.escalation_log.for_question(harness.bot.questions.rows()[-1]["id"])
    harness.update(asked, content=f"<@{me}> {OUT_OF_SCOPE}")
    await harness.settle()
    moved = harness.bot.escalation_log.get(first.id)
    assert moved.question == OUT_OF_SCOPE and moved.status == "open"
    assert moved.question_id == harness.bot.questions.rows()[-1]["id"] != first.question_id
    note = harness.fake.messages[first.ta_thread_id][-1]["content"]
    assert note.startswith("✏️ The student edited the question") and OUT_OF_SCOPE in note
    again = harness.fake.messages[int(asked["id"])][-1]  # the new answer, in the same message
    token = await press(harness, again, buttons(again)[-1], STUDENT)
    assert f"with the TAs already (escalation #{first.id}" in private_reply(harness, token)
    assert len(ta_posts(harness)) == 1
    assert_only_the_ta_ping_mentions_and_only_the_ta_role(harness)


async def test_an_answer_that_cannot_be_delivered_leaves_the_escalation_open(
    make_harness, guides_services
):
    harness = await ta_harness(make_harness, guides_services)
    _, escalation = await escalated(harness)
    harness.fake.faults.append(Fault("POST", rf"/channels/{CHANNEL_ID}/messages", 403, 50013))
    harness.post(FAQ_ANSWER, TA, escalation.ta_thread_id)
    await harness.settle()
    note = harness.fake.messages[escalation.ta_thread_id][-1]
    assert note["content"].startswith("⚠️ I could not deliver tina's answer")
    assert "HTTP 403" in note["content"]
    assert harness.bot.escalation_log.get(escalation.id).status == "open"


def open_thread(harness, escalation) -> None:
    """THREAD_CREATE for an escalation's thread, as Discord lists open threads at connect."""
    harness.bot._connection.parse_thread_create({
        "id": str(escalation.ta_thread_id), "type": 11, "guild_id": str(GUILD_ID),
        "name": "escalation", "parent_id": str(TA_CHANNEL), "owner_id": str(APP_ID),
        "last_message_id": None, "rate_limit_per_user": 0, "message_count": 1,
        "member_count": 1, "flags": 0,
        "thread_metadata": {"archived": False, "auto_archive_duration": 10080,
                            "archive_timestamp": now_iso(), "locked": False}})


async def test_after_a_restart_a_tas_answer_is_still_relayed(make_harness, guides_services):
    before = await ta_harness(make_harness, guides_services, log_name="bot.sqlite3")
    message, escalation = await escalated(before)
    await before.bot.close()
    after = await ta_harness(make_harness, guides_services, log_name="bot.sqlite3")
    open_thread(after, escalation)
    after.post(FAQ_ANSWER, TA, escalation.ta_thread_id)
    await after.settle()
    [relayed] = after.in_channel(CHANNEL_ID)
    assert relayed.payload["embeds"][0]["description"] == FAQ_ANSWER
    assert str(relayed.payload["message_reference"]["message_id"]) == message["id"]
    assert after.bot.escalation_log.get(escalation.id).status == "answered"


async def test_a_private_answer_is_relayed_by_direct_message(make_harness, guides_services):
    harness = await ta_harness(make_harness, guides_services)
    _, escalation = await escalated(harness, private=True)
    harness.post(FAQ_ANSWER, TA, escalation.ta_thread_id)
    await harness.settle()
    dm = [r for r in harness.fake.requests if r.path == "/users/@me/channels"]
    assert dm and dm[0].payload["recipient_id"] == STUDENT.id
    sent = harness.in_channel(STUDENT.id + 1)  # the fake's DM channel id
    assert sent and sent[0].payload["embeds"][0]["description"] == FAQ_ANSWER
    assert harness.in_channel(CHANNEL_ID) == []
    assert_only_the_ta_ping_mentions_and_only_the_ta_role(harness)


def text_inputs(components: list[dict]) -> list[dict]:
    """The text inputs of a modal's components (in action rows or labels)."""
    found = []
    for c in components:
        if c["type"] == 4:
            found.append(c)
        found += text_inputs(c.get("components") or ([c["component"]] if "component" in c
                                                      else []))
    return found


async def open_form(harness, escalation, person: Person = TA) -> dict:
    """Press "Answer the student" on an escalation's post: the modal Discord was sent."""
    post = next(m for m in harness.fake.messages[TA_CHANNEL]
                if buttons(m) == [f"sa:answer:{escalation.id}"])
    token = await press(harness, post, f"sa:answer:{escalation.id}", person)
    form = harness.for_token(token)[0].payload
    assert form["type"] == 9  # a modal
    return form["data"]


def submitted(form: dict, text: str) -> dict:
    """The data of a modal submit: the form's text input filled in with `text`."""
    [field] = text_inputs(form["components"])
    return {"custom_id": form["custom_id"], "components": [
        {"type": 18, "component": {"type": 4, "custom_id": field["custom_id"], "value": text}}]}


async def test_a_ta_can_answer_through_the_form_on_the_escalation(make_harness, guides_services):
    harness = await ta_harness(make_harness, guides_services)
    _, escalation = await escalated(harness)
    post = harness.fake.messages[TA_CHANNEL][-1]
    assert buttons(post) == [f"sa:answer:{escalation.id}"]
    form = await open_form(harness, escalation)
    [field] = text_inputs(form["components"])
    assert field["max_length"] == 4000
    submit = harness.feed(_interaction(5, submitted(form, FAQ_ANSWER), TA,
                                       escalation.ta_thread_id))
    await harness.settle()
    assert private_reply(harness, submit) == "Sent to the student."
    relayed = harness.fake.messages[CHANNEL_ID][-1]
    assert relayed["embeds"][0]["description"] == FAQ_ANSWER
    assert harness.bot.escalation_log.get(escalation.id).status == "answered"
    assert_only_the_ta_ping_mentions_and_only_the_ta_role(harness)


async def test_an_answer_form_opened_before_a_restart_is_relayed_when_submitted_after_it(
    make_harness, guides_services
):
    before = await ta_harness(make_harness, guides_services, log_name="bot.sqlite3")
    _, escalation = await escalated(before)
    form = await open_form(before, escalation)
    await before.bot.close()
    after = await ta_harness(make_harness, guides_services, log_name="bot.sqlite3")
    open_thread(after, escalation)
    after.fake.messages[TA_CHANNEL] = before.fake.messages[TA_CHANNEL]
    assert (await open_form(after, escalation))["custom_id"] == form["custom_id"]
    submit = after.feed(_interaction(5, submitted(form, FAQ_ANSWER), TA, escalation.ta_thread_id))
    await after.settle()
    assert private_reply(after, submit) == "Sent to the student."
    [relayed] = after.in_channel(CHANNEL_ID)
    assert relayed.payload["embeds"][0]["description"] == FAQ_ANSWER
    assert after.bot.escalation_log.get(escalation.id).status == "answered"


async def test_answer_forms_opened_and_never_submitted_are_not_kept_in_memory(
    make_harness, guides_services
):
    harness = await ta_harness(make_harness, guides_services)
    _, escalation = await escalated(harness)
    for _ in range(3):  # a TA opens the form and closes it without sending
        await open_form(harness, escalation)
    assert harness.bot._connection._view_store._modals == {}  # discord.py's modals by custom id


async def test_students_cannot_open_the_answer_form(make_harness, guides_services):
    harness = await ta_harness(make_harness, guides_services)
    _, escalation = await escalated(harness)
    post = harness.fake.messages[TA_CHANNEL][-1]
    token = await press(harness, post, f"sa:answer:{escalation.id}", OTHER_STUDENT)
    assert "Only TAs and instructors" in private_reply(harness, token)


async def test_a_message_from_a_student_in_the_escalation_thread_is_not_relayed(
    make_harness, guides_services
):
    harness = await ta_harness(make_harness, guides_services)
    _, escalation = await escalated(harness)
    before = len(harness.fake.requests)
    harness.post("I think it was Leonardo", OTHER_STUDENT, escalation.ta_thread_id)
    await harness.settle()
    assert harness.fake.requests[before:] == []
    assert harness.bot.escalation_log.get(escalation.id).status == "open"


async def test_a_ta_renaming_the_escalation_thread_sends_the_student_nothing(
    make_harness, guides_services
):
    from tests.bot.fake_discord import message_payload

    harness = await ta_harness(make_harness, guides_services)
    _, escalation = await escalated(harness)
    before = len(harness.fake.requests)
    # Discord's "changed the thread name" notice: written as the TA, the new name its content.
    renamed = message_payload("#1 · Mona Lisa (done)", TA, escalation.ta_thread_id)
    renamed["type"] = 4
    harness.fake.install(harness.bot)
    harness.bot._connection.parse_message_create(renamed)
    await harness.settle()
    assert harness.fake.requests[before:] == []
    assert harness.bot.escalation_log.get(escalation.id).status == "open"


async def test_tas_list_unanswered_escalations_and_students_cannot(make_harness, guides_services):
    harness = await ta_harness(make_harness, guides_services)
    _, first = await escalated(harness)
    _, second = await escalated(harness, "Who wrote the novel Don Quixote?")
    harness.post(FAQ_ANSWER, TA, first.ta_thread_id)
    await harness.settle()
    token = harness.command("escalations", TA)
    await harness.settle()
    listed = harness.for_token(token)[-1].payload["embeds"][0]
    assert listed["title"] == "Unanswered escalations (1)"
    assert f"#{second.id}" in listed["description"] and f"<#{second.ta_thread_id}>" in \
        listed["description"]
    assert "Who wrote the novel Don Quixote?" in listed["description"]
    refused = harness.command("escalations", STUDENT)
    await harness.settle()
    assert "Only TAs and instructors" in private_reply(harness, refused)


async def test_students_cannot_add_an_answer_to_the_faq(make_harness, guides_services):
    harness = await ta_harness(make_harness, guides_services)
    _, escalation = await escalated(harness)
    relayed = await answered(harness, escalation)
    token = await press(harness, relayed, buttons(relayed)[0], STUDENT)
    assert "Only TAs and instructors" in private_reply(harness, token)
    assert not (guides_services.settings.materials_dir / "faq").exists()


async def faq_entry(harness, course: Services) -> Path:
    """A question the materials don't cover, escalated, answered by a TA, added to the FAQ."""
    _, escalation = await escalated(harness, FAQ_QUESTION)
    relayed = await answered(harness, escalation)
    token = await press(harness, relayed, buttons(relayed)[0], TA)
    summary = harness.for_token(token)[-1].payload["embeds"][0]
    assert summary["title"].startswith("Added faq/is-the-final-exam-open-book.md to the course")
    return course.settings.materials_dir / "faq" / "is-the-final-exam-open-book.md"


def today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


async def test_add_to_faq_writes_the_answer_with_who_approved_it_and_when(make_harness, course):
    harness = await ta_harness(make_harness, course)
    text = (await faq_entry(harness, course)).read_text()
    assert text.startswith(f"# Course FAQ (approved {today()})\n\n## {FAQ_QUESTION}\n")
    assert FAQ_ANSWER in text
    assert f"Answered by tina; approved for the course FAQ by tina on {today()}" in text


async def test_after_add_to_faq_another_student_is_answered_from_it(make_harness, course):
    harness = await ta_harness(make_harness, course)
    _, before = await ask(harness, PARAPHRASE, OTHER_STUDENT, OTHER_CHANNEL_ID)
    assert before["abstained"], "the guides alone do not cover it"
    await faq_entry(harness, course)
    message, after = await ask(harness, PARAPHRASE, OTHER_STUDENT, OTHER_CHANNEL_ID)
    assert not after["abstained"]
    cited = json.loads(after["sources"])
    assert cited[0]["source"] == "faq/is-the-final-exam-open-book.md"
    assert cited[0]["section"] == f"Course FAQ (approved {today()}) > {FAQ_QUESTION}"
    sources = message["embeds"][-1]["fields"][0]["value"]
    assert f"faq/is-the-final-exam-open-book.md · Course FAQ (approved {today()})" in sources


async def test_with_gold_questions_a_faq_entry_is_ingested_through_the_gold_gate(
    make_harness, course
):
    root = course.settings.materials_dir
    (root / "gold_questions.toml").write_text(
        '[[question]]\nquestion = "How does an LLM work?"\nsources = ["llm-basics.md"]\n')
    harness = await ta_harness(make_harness, course)
    await faq_entry(harness, course)
    summary = next(r.payload["embeds"][0] for r in reversed(harness.fake.requests)
                   if "to the course FAQ" in json.dumps(r.payload))
    gold = {f["name"]: f["value"] for f in summary["fields"]}["Gold questions"]
    assert "none got worse" in gold and "is live" in gold
    hits = course.retriever.search(PARAPHRASE, 5)
    assert hits[0].chunk.source == "faq/is-the-final-exam-open-book.md"


async def test_deleting_the_faq_file_and_reingesting_removes_it(make_harness, course):
    harness = await ta_harness(make_harness, course)
    (await faq_entry(harness, course)).unlink()
    harness.command("reingest", INSTRUCTOR)
    await harness.settle()
    _, after = await ask(harness, PARAPHRASE, OTHER_STUDENT)
    assert after["abstained"]
    hits = course.retriever.search(PARAPHRASE, 5)
    assert not any(h.chunk.source.startswith("faq/") for h in hits)


async def test_escalations_are_rate_limited_per_user(make_harness, guides_services):
    harness = await ta_harness(make_harness, guides_services, escalations_per_hour=1)
    await escalated(harness)
    message, row = await ask(harness, "Who wrote the novel Don Quixote?", STUDENT,
                             OTHER_CHANNEL_ID)
    token = await press(harness, message, f"sa:ta:{row['id']}", STUDENT)
    assert "per hour" in private_reply(harness, token)
    assert len(ta_posts(harness)) == 1
    await escalated(harness, "Who wrote the novel Don Quixote?", OTHER_STUDENT,  # others may
                    channel_id=OTHER_CHANNEL_ID)


async def test_a_second_press_on_the_same_answer_opens_no_second_thread(
    make_harness, guides_services
):
    harness = await ta_harness(make_harness, guides_services)
    message, escalation = await escalated(harness)
    token = await press(harness, message, f"sa:ta:{escalation.question_id}", STUDENT)
    assert f"with the TAs already (escalation #{escalation.id}" in private_reply(harness, token)
    assert len(ta_posts(harness)) == 1


async def test_mentions_in_a_question_and_a_4000_character_answer_stay_within_the_rules(
    make_harness, guides_services
):
    harness = await ta_harness(make_harness, guides_services)
    hostile = f"@everyone <@&{STUDENT_ROLE}> @here who painted the Mona Lisa?"
    _, escalation = await escalated(harness, hostile)
    [post] = ta_posts(harness)
    assert "@everyone" not in post.payload["content"] and str(STUDENT_ROLE) not in \
        post.payload["content"]
    thread = next(r for r in harness.fake.requests if r.path.endswith("/threads"))
    assert "@everyone" not in thread.payload["name"] and "@here" not in thread.payload["name"]
    long_answer = " ".join(f"Sentence {i} of a long answer by the TA." for i in range(110))
    assert len(long_answer) >= 4000
    harness.post(long_answer, TA, escalation.ta_thread_id)
    await harness.settle()
    pages = [r.payload for r in harness.in_channel(CHANNEL_ID) if r.method == "POST"]
    assert len(pages) >= 2
    assert " ".join(e["description"] for p in pages for e in p["embeds"]).split() == \
        long_answer.split()
    assert_only_the_ta_ping_mentions_and_only_the_ta_role(harness)


async def test_without_a_ta_channel_there_is_no_button_and_an_old_one_says_why(
    make_harness, guides_services
):
    harness = await make_harness(guides_services)
    message, row = await ask(harness, OUT_OF_SCOPE)
    assert not any(b.startswith("sa:ta:") for b in buttons(message))
    # A button posted while a TA channel was configured, pressed after it was unset.
    message["components"][0]["components"].append(
        {"type": 2, "style": 2, "label": "Ask a TA", "custom_id": f"sa:ta:{row['id']}"})
    token = await press(harness, message, f"sa:ta:{row['id']}", STUDENT)
    assert "TA_CHANNEL_ID" in private_reply(harness, token)


async def test_a_missing_ta_channel_is_explained(make_harness, guides_services):
    harness = await make_harness(guides_services, ta_channel_id=TA_CHANNEL, ta_role_id=TA_ROLE)
    message, row = await ask(harness, OUT_OF_SCOPE)  # no CHANNEL_CREATE: Discord lacks it
    token = await press(harness, message, f"sa:ta:{row['id']}", STUDENT)
    assert "TA channel (it no longer exists)" in private_reply(harness, token)


async def test_permissions_the_bot_lacks_in_the_ta_channel_are_named(make_harness, guides_services):
    no_threads = BOT_TA_PERMISSIONS & ~(1 << 35)
    harness = await ta_harness(make_harness, guides_services, bot_allowed=no_threads)
    message, row = await ask(harness, OUT_OF_SCOPE)
    token = await press(harness, message, f"sa:ta:{row['id']}", STUDENT)
    assert "TA channel (missing Create Public Threads)" in private_reply(harness, token)
    assert ta_posts(harness) == []


async def test_without_permission_in_the_ta_channel_the_student_is_told_and_may_retry(
    make_harness, guides_services
):
    harness = await ta_harness(make_harness, guides_services)
    harness.fake.faults.append(Fault("POST", rf"/channels/{TA_CHANNEL}/messages", 403, 50013,
                                     times=1))
    message, row = await ask(harness, OUT_OF_SCOPE)
    token = await press(harness, message, f"sa:ta:{row['id']}", STUDENT)
    assert "can't post in the TA channel" in private_reply(harness, token)
    assert harness.bot.escalation_log.for_question(row["id"]) is None
    await press(harness, message, f"sa:ta:{row['id']}", STUDENT)
    assert harness.bot.escalation_log.for_question(row["id"]).status == "open"


async def test_only_the_student_who_asked_can_send_the_question_to_the_tas(
    make_harness, guides_services
):
    harness = await ta_harness(make_harness, guides_services)
    message, row = await ask(harness, OUT_OF_SCOPE)  # Ana's public answer
    token = await press(harness, message, f"sa:ta:{row['id']}", OTHER_STUDENT)
    assert "Only the student who asked" in private_reply(harness, token)
    assert ta_posts(harness) == []
    token = await press(harness, message, f"sa:ta:{row['id']}", STUDENT)
    assert "Sent to the TAs" in private_reply(harness, token)
    [post] = ta_posts(harness)
    assert f"<@{STUDENT.id}>" in json.dumps(post.payload)


async def test_a_thread_discord_refuses_leaves_no_post_behind_and_the_student_may_retry(
    make_harness, guides_services
):
    harness = await ta_harness(make_harness, guides_services)
    harness.fake.faults.append(Fault("POST", rf"/channels/{TA_CHANNEL}/messages/\d+/threads",
                                     403, 50013, times=2))
    message, row = await ask(harness, OUT_OF_SCOPE)
    for _ in range(2):
        token = await press(harness, message, f"sa:ta:{row['id']}", STUDENT)
        assert "can't post in the TA channel" in private_reply(harness, token)
    await press(harness, message, f"sa:ta:{row['id']}", STUDENT)
    posts = ta_posts(harness)
    deleted = {r.path for r in harness.fake.requests if r.method == "DELETE"}
    assert len(posts) == 3 and len(deleted) == 2  # the two posts without a thread are gone
    assert harness.bot.escalation_log.for_question(row["id"]).status == "open"


async def test_a_thread_discord_refuses_notifies_no_ta(make_harness, guides_services):
    harness = await ta_harness(make_harness, guides_services)
    harness.fake.faults.append(Fault("POST", rf"/channels/{TA_CHANNEL}/messages/\d+/threads",
                                     403, 50013))
    message, row = await ask(harness, OUT_OF_SCOPE)
    token = await press(harness, message, f"sa:ta:{row['id']}", STUDENT)
    assert "can't post in the TA channel" in private_reply(harness, token)
    assert role_pings(harness) == []


async def test_the_ta_role_is_pinged_in_the_escalation_thread_once_it_exists(
    make_harness, guides_services
):
    harness = await ta_harness(make_harness, guides_services)
    _, escalation = await escalated(harness)
    [post] = ta_posts(harness)
    assert str(TA_ROLE) not in post.payload["content"]
    [ping] = role_pings(harness)
    assert ping.path == f"/channels/{escalation.ta_thread_id}/messages"
    opened = next(r for r in harness.fake.requests if r.path.endswith("/threads"))
    assert harness.fake.requests.index(ping) > harness.fake.requests.index(opened)
    assert f"#{escalation.id}" in ping.payload["content"]
    assert_only_the_ta_ping_mentions_and_only_the_ta_role(harness)
