"""Exam mode through the real command tree: refusals where it is on, answers elsewhere, the
end at `until`, a restart, scheduled windows, /stats, and students kept out of the controls."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re

import pytest

from rag.services import Services, build_services
from tests.bot.fake_discord import (
    CHANNEL_ID,
    GUILD_ID,
    MANAGE_GUILD_PERMISSIONS,
    OTHER_CHANNEL_ID,
    STUDENT_ROLE,
    Person,
    channel_payload,
    dm_interaction_payload,
    interaction_payload,
    message_payload,
    thread_payload,
)
from tests.bot.test_answers import (
    IN_SCOPE,
    OUT_OF_SCOPE,
    ScriptedModel,
    is_draft,
    scripted_services,
)
from tests.bot.test_storage import entry
from tests.rag.retrieval.test_release_dates import NOW, Clock, ingested_course

STUDENT = Person(1001, "ana")
OTHER_STUDENT = Person(1002, "ben")
INSTRUCTOR = Person(2001, "prof", roles=(), permissions=MANAGE_GUILD_PERMISSIONS)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def course(tmp_path, shared_materials, embedder, clock) -> Services:
    return ingested_course(tmp_path, shared_materials, embedder, clock)


def reply_text(harness, token: str) -> str:
    last = harness.for_token(token)[-1].payload
    data = last.get("data", last)
    return str(data.get("content") or "") + str(data.get("embeds") or "")


def command_payload(name: str, person: Person, channel: int, options: dict) -> dict:
    """INTERACTION_CREATE for a command or a subcommand ("exam start")."""
    group, _, sub = name.partition(" ")
    payload = interaction_payload(group, options, person, channel)
    if sub:
        payload["data"]["options"] = [
            {"name": sub, "type": 1, "options": payload["data"]["options"]}
        ]
    return payload


@pytest.fixture
def feed(make_harness):
    """Start a bot and give it a `run(name, person, channel, **options)` helper."""

    async def start(services: Services):
        harness = await make_harness(services)
        harness.run = runner(harness)
        return harness

    return start


def runner(harness):
    """`run(name, person, channel, **options)`: a command's reply text."""

    async def run(name: str, person: Person = STUDENT, channel: int = CHANNEL_ID,
                  **options) -> str:
        token = harness.feed(command_payload(name, person, channel, options))
        await harness.settle()
        return reply_text(harness, token)

    return run


async def test_an_exam_refuses_answers_and_demos_in_its_channel_and_not_elsewhere(feed, course):
    harness = await feed(course)
    assert "Exam mode is on" in await harness.run("exam start", INSTRUCTOR, until="90m")
    refused = await harness.run("sources", query="What is a token?")
    assert "exam is on here" in refused
    # When it ends as Discord shows it: with the date (":t" showed a bare time, even days ahead).
    assert re.search(r"\(until <t:\d+:f>\)", refused)
    assert "exam is on here" in await harness.run("tokenize", text="hello")
    elsewhere = await harness.run("sources", channel=OTHER_CHANNEL_ID, query="What is a token?")
    assert "llm-basics.md" in elsewhere


async def test_the_exam_ends_by_itself_at_until(feed, course, clock):
    harness = await feed(course)
    await harness.run("exam start", INSTRUCTOR, until="90m")
    clock.now += 91 * 60
    assert "llm-basics.md" in await harness.run("sources", query="What is a token?")


async def test_the_exam_survives_a_restart(feed, course, embedder, clock):
    first = await feed(course)
    await first.run("exam start", INSTRUCTOR, channels="all")
    await first.bot.close()
    restarted = dataclasses.replace(
        course, course=build_services(course.settings, embedder=embedder, clock=clock).course
    )
    second = await feed(restarted)
    assert "exam is on here" in await second.run("sources", channel=OTHER_CHANNEL_ID,
                                                 query="What is a token?")
    assert "Ended 1" in await second.run("exam end", INSTRUCTOR)
    assert "llm-basics.md" in await second.run("sources", query="What is a token?")


def schedule_exam(course, channel_id: int) -> None:
    """A schedule.toml with one exam window, 11:00 to 13:00 on the test clock's day, on a
    channel or category."""
    (course.settings.materials_dir / "schedule.toml").write_text(
        '[[exam]]\nstart = "2026-03-01 11:00"\nend = "2026-03-01 13:00"\n'
        f"channels = [{channel_id}]\n"
    )


async def test_a_scheduled_window_in_the_schedule_file_applies(feed, course):
    schedule_exam(course, CHANNEL_ID)
    harness = await feed(course)
    assert "exam is on here" in await harness.run("sources", query="What is a token?")
    assert "(scheduled)" in await harness.run("exam status", INSTRUCTOR)


EXAMS_CATEGORY = 900000000000000050
EXAM_ROOM = 900000000000000051
LATER_ROOM = 900000000000000052
ROOM_THREAD = 930000000000000051


def exams_category(harness) -> None:
    """CHANNEL_CREATE: a category "EXAMS" with the channel #exam-room in it."""
    state = harness.bot._connection
    state.parse_channel_create(channel_payload(EXAMS_CATEGORY, "EXAMS", category=True))
    state.parse_channel_create(channel_payload(EXAM_ROOM, "exam-room", EXAMS_CATEGORY))


async def test_an_exam_on_a_category_covers_its_channels_even_those_made_later_and_says_so(
    feed, course
):
    harness = await feed(course)
    exams_category(harness)
    started = await harness.run("exam start", INSTRUCTOR, channels=f"<#{EXAMS_CATEGORY}>")
    assert "Exam mode is on" in started and "every channel in it" in started
    state = harness.bot._connection  # made after the exam started: a room and a thread
    state.parse_channel_create(channel_payload(LATER_ROOM, "exam-room-2", EXAMS_CATEGORY))
    state.parse_thread_create(thread_payload(ROOM_THREAD, EXAM_ROOM, STUDENT.id))
    for room in (EXAM_ROOM, LATER_ROOM, ROOM_THREAD):
        refused = await harness.run("ask", channel=room, question="What is a token?")
        assert "exam is on here" in refused, room
    assert "llm-basics.md" in await harness.run("sources", query="What is a token?")


async def test_a_scheduled_window_naming_a_category_covers_its_channels(feed, course):
    schedule_exam(course, EXAMS_CATEGORY)
    harness = await feed(course)
    exams_category(harness)
    assert "exam is on here" in await harness.run("sources", channel=EXAM_ROOM,
                                                  query="What is a token?")
    assert "llm-basics.md" in await harness.run("sources", query="What is a token?")


BROKEN_SCHEDULE = '[[exam]]\nstart = "2026-03-01 11:00"\nend = [unclosed\n'


async def test_a_schedule_broken_at_a_restart_keeps_its_last_good_windows_and_says_so(
    feed, course, embedder, clock
):
    schedule = course.settings.materials_dir / "schedule.toml"
    schedule.write_text('[[exam]]\nstart = "2026-03-01 11:00"\nend = "2026-03-01 13:00"\n'
                        f"channels = [{CHANNEL_ID}]\n")
    first = await feed(course)  # no command: the start-up reads the schedule and keeps it
    await first.bot.close()
    schedule.write_text(BROKEN_SCHEDULE)  # broken while the bot was down
    restarted = dataclasses.replace(
        course, course=build_services(course.settings, embedder=embedder, clock=clock).course
    )
    second = await feed(restarted)
    assert "exam is on here" in await second.run("sources", query="What is a token?")
    status = await second.run("exam status", INSTRUCTOR)
    assert "schedule.toml" in status and "Invalid value" in status  # the file, its error
    assert "last good schedule" in status and "(scheduled)" in status


async def test_a_schedule_broken_with_no_last_good_copy_says_exams_are_not_enforced(
    feed, course, embedder, clock
):
    (course.settings.materials_dir / "schedule.toml").write_text(BROKEN_SCHEDULE)
    fresh = dataclasses.replace(
        course, course=build_services(course.settings, embedder=embedder, clock=clock).course
    )
    harness = await feed(fresh)
    status = await harness.run("exam status", INSTRUCTOR)
    assert "schedule.toml" in status and "Invalid value" in status
    assert "scheduled exams are NOT enforced" in status and "No exam is on" in status


async def test_attempts_during_an_exam_are_counted_in_stats(feed, course):
    harness = await feed(course)
    await harness.run("exam start", INSTRUCTOR)
    await harness.run("sources", query="What is a token?")
    await harness.run("ask", question="What is a token?")
    assert "'name': 'Refused during exams', 'value': '2 attempts'" in await harness.run(
        "stats", INSTRUCTOR)


async def test_students_are_refused_the_course_controls(feed, course):
    harness = await feed(course)
    for command, options in [
        ("exam start", {}), ("exam end", {}), ("exam status", {}), ("assignments list", {}),
        ("assignments open", {"assignment": "hw1"}), ("assignments close", {"assignment": "hw1"}),
        ("hints only", {"on": True}),
    ]:
        assert "Only instructors" in await harness.run(command, **options), command
    assert not harness.bot.services.course.active_exams()


@pytest.mark.parametrize("channels", [f"<@&{STUDENT_ROLE}>", f"<@{STUDENT.id + 10**17}>",
                                      "123456789012345678"], ids=["role", "user", "unknown-id"])
async def test_an_exam_is_not_started_on_something_that_is_no_channel_of_the_server(
    make_harness, empty_services, channels
):
    harness = await make_harness(empty_services)
    reply = await runner(harness)("exam start", INSTRUCTOR, channels=channels)
    assert "Exam mode is on" not in reply and "channel" in reply
    assert not harness.bot.services.course.active_exams()


def direct_message(harness, text: str, person: Person, dm_channel: int) -> None:
    """Feed MESSAGE_CREATE for a direct message to the bot."""
    payload = message_payload(text, person, dm_channel)
    for key in ("guild_id", "member"):
        payload.pop(key)
    harness.fake.install(harness.bot)
    harness.bot._connection.parse_message_create(payload)


@pytest.mark.parametrize("channels", ["all", None], ids=["server-wide", "one channel"])
async def test_an_exam_anywhere_refuses_direct_messages_and_dm_commands(
    make_harness, empty_services, channels
):
    """A DM is outside every channel: a student in the exam room must not get privately what
    the room's channel refuses, by a plain DM or by /ask in a DM."""
    harness = await make_harness(empty_services, allow_dms=True)
    run = runner(harness)
    started = await run("exam start", INSTRUCTOR, **({"channels": channels} if channels else {}))
    assert "Exam mode is on" in started
    dm_channel = 920000000000000009
    direct_message(harness, "What is LoRA?", STUDENT, dm_channel)
    await harness.settle()
    sent = [str(r.payload) for r in harness.in_channel(dm_channel)]
    assert any("exam is on in the course" in t for t in sent), sent
    assert not any("Searching" in t for t in sent), sent
    token = harness.feed(dm_interaction_payload("ask", {"question": "What is LoRA?"}, STUDENT))
    await harness.settle()
    assert "exam is on in the course" in reply_text(harness, token)

    await run("exam end", INSTRUCTOR)
    direct_message(harness, "What is LoRA?", STUDENT, dm_channel)
    await harness.settle()
    after = harness.in_channel(dm_channel)[len(sent):]
    assert after and not any("exam is on" in str(r.payload) for r in after)



async def test_the_sources_button_is_refused_during_an_exam_but_not_to_instructors(
    make_harness, course
):
    harness = await make_harness(course)
    # A file of the index: the button leaves out the passages of files withdrawn since.
    passages = ({"source": "llm-basics.md", "page": None, "section": "Tokens",
                 "text": "A token is a piece of a word."},)
    qid = harness.bot.questions.record(entry(passages=passages, channel=str(CHANNEL_ID)))
    harness.bot.services.course.start_exam([CHANNEL_ID])
    button = {"type": 2, "style": 1, "label": "Sources", "custom_id": f"sa:src:{qid}"}
    message = harness.fake.message(
        CHANNEL_ID, {"content": "", "components": [{"type": 1, "components": [button]}]})

    async def shown(person: Person) -> str:
        token = harness.click(message, f"sa:src:{qid}", person)
        await harness.settle()
        return json.dumps([r.payload for r in harness.for_token(token)])

    student = await shown(STUDENT)
    instructor = await shown(INSTRUCTOR)
    assert "exam is on here" in student and "A token is a piece" not in student
    assert "A token is a piece" in instructor


def slow_services(guides_services, llm_cache_dir):
    """The guides answered by a scripted model slow enough to be caught generating."""
    slow = ScriptedModel("A transformer maps tokens to vectors. " * 30, delay_s=0.02)
    return scripted_services(guides_services, llm_cache_dir, slow)


async def queued_behind_an_answer(harness, command: str) -> tuple[str, str]:
    """A student's /ask generating in the only slot, and another student's `command`
    waiting behind it (checked to show its place in the queue): their interaction tokens."""
    generating = harness.command("ask", STUDENT, question=IN_SCOPE)
    await asyncio.sleep(0.5)
    queued = harness.command(command, OTHER_STUDENT, question=IN_SCOPE)  # waits for a slot
    await asyncio.sleep(0.3)
    assert "in the queue" in json.dumps([r.payload for r in harness.for_token(queued)])
    return generating, queued


# /ask, and the demos that show models' full answers, are checked again when their turn comes.
@pytest.mark.parametrize("command", ["ask", "hallucination", "compare"])
async def test_a_question_still_queued_when_an_exam_starts_is_not_answered_during_it(
    make_harness, guides_services, llm_cache_dir, command
):
    harness = await make_harness(slow_services(guides_services, llm_cache_dir),
                                 max_concurrent=1)
    course = harness.bot.services.course
    try:
        _, queued = await queued_behind_an_answer(harness, command)
        course.start_exam([CHANNEL_ID])
        await harness.settle()
        shown = json.dumps(harness.for_token(queued)[-1].payload)
        assert "exam is on" in shown and "Sources" not in shown, shown
        assert "transformer maps tokens" not in shown.lower()
        assert harness.bot.questions.rows() == []  # nor the one generating when it started
    finally:
        course.end_exams()


@pytest.mark.parametrize("command", ["ask", "hallucination", "compare"])
async def test_questions_an_exam_stopped_cost_no_turn(
    make_harness, guides_services, llm_cache_dir, command
):
    """One turn a minute: the question generating when the exam starts and the one waiting
    for its slot got nothing but the refusal, so once the exam ends both students may ask at
    once."""
    harness = await make_harness(slow_services(guides_services, llm_cache_dir),
                                 max_concurrent=1, rate_burst=1, rate_per_minute=1)
    course = harness.bot.services.course
    try:
        generating, queued = await queued_behind_an_answer(harness, command)
        course.start_exam([CHANNEL_ID])
        await harness.settle()
        for token in (generating, queued):
            assert "exam is on" in reply_text(harness, token)
    finally:
        course.end_exams()
    for person in (STUDENT, OTHER_STUDENT):
        again = harness.command("ask", person, question=OUT_OF_SCOPE)
        await harness.settle()
        assert harness.for_token(again)[0].payload == {"type": 5}, reply_text(harness, again)


# Every other command an exam refuses waits in the same queue, and is checked again there too.
QUEUED = {"sources": {"query": IN_SCOPE}, "tokenize": {"text": "hello"},
          "nexttoken": {"prompt": "The capital of France is"},
          "attention": {"sentence": "The cat sat on the mat"},
          "fewshot": {"task": "Sentiment", "examples": "good => positive", "input": "bad"},
          "fewshot_accuracy": {"models": "smollm2"},
          "compare_accuracy": {"models": "smollm2", "questions": 1}}


@pytest.mark.parametrize("command", sorted(QUEUED))
async def test_a_command_queued_when_an_exam_starts_shows_only_the_refusal_at_no_cost(
    make_harness, guides_services, command
):
    """/sources and the demos asked just before an exam starts, while another answer holds
    the only slot, show nothing of theirs when their turn comes, only the exam's refusal; and,
    like a command refused when it is asked, that costs no turn: four tries in a row (one
    more than the cheap commands' burst of 3) each wait in the queue again."""
    harness = await make_harness(guides_services, max_concurrent=1, rate_burst=1,
                                 rate_per_minute=1)
    course = harness.bot.services.course
    for _ in range(4):
        try:
            async with harness.bot.answerer.queue.slot():  # an answer is generating
                queued = harness.command(command, STUDENT, **QUEUED[command])
                await asyncio.wait_for(until_queued(harness, queued), timeout=30)
                course.start_exam([CHANNEL_ID])
            await harness.settle()
            assert "exam is on here" in reply_text(harness, queued)
            edits = [r.payload for r in harness.for_token(queued) if r.method == "PATCH"]
            assert edits and all("in the queue" in json.dumps(e) for e in edits), edits
        finally:
            course.end_exams()


async def until_queued(harness, token: str) -> None:
    """Wait until a command's reply shows its place in the queue."""
    while "in the queue" not in json.dumps([r.payload for r in harness.for_token(token)]):
        await asyncio.sleep(0.01)


async def test_an_answer_streaming_when_an_exam_starts_shows_no_further_draft(
    make_harness, guides_services, llm_cache_dir
):
    slow = ScriptedModel("A transformer maps tokens to vectors. " * 60, delay_s=0.02)
    harness = await make_harness(scripted_services(guides_services, llm_cache_dir, slow),
                                 edit_interval_s=0.1)
    course = harness.bot.services.course
    try:
        token = harness.command("ask", STUDENT, question=IN_SCOPE)
        while not any(is_draft(r) for r in harness.for_token(token)):
            await asyncio.sleep(0.01)
        course.start_exam([CHANNEL_ID])
        started = len(harness.fake.requests)
        await harness.settle()
        later = [r for r in harness.fake.requests[started:] if token in r.path]
        assert sum(is_draft(r) for r in later) <= 1  # at most one already under way
        assert "exam is on here" in json.dumps(later[-1].payload)
        assert harness.bot.questions.rows() == []
    finally:
        course.end_exams()


@pytest.mark.parametrize(("name", "options"), [
    ("assignments open", {"assignment": "x" * 3000}),
    ("exam start", {"until": "x" * 3000}),
], ids=["assignment-id", "until"])
async def test_course_controls_quote_long_input_within_discords_limits(
    make_harness, empty_services, name, options
):
    harness = await make_harness(empty_services)
    token = harness.feed(command_payload(name, INSTRUCTOR, CHANNEL_ID, options))
    await harness.settle()
    data = harness.for_token(token)[0].payload["data"]
    assert "'xxx" in data["content"] and len(data["content"]) <= 300


async def test_an_exam_over_a_hundred_channels_is_confirmed_within_discords_limits(
    make_harness, empty_services
):
    from bot.limits import payload_problems

    harness = await make_harness(empty_services)
    rooms = [CHANNEL_ID + 1000 + n for n in range(120)]
    for n, room in enumerate(rooms):  # CHANNEL_CREATE: the course's many exam rooms
        harness.bot._connection.parse_channel_create({
            "id": str(room), "type": 0, "name": f"exam-room-{n}", "position": n,
            "permission_overwrites": [], "nsfw": False, "parent_id": None,
            "guild_id": str(GUILD_ID), "rate_limit_per_user": 0, "topic": None})
    channels = " ".join(f"<#{room}>" for room in rooms)
    for name, options in [("exam start", {"channels": channels}), ("exam status", {})]:
        token = harness.feed(command_payload(name, INSTRUCTOR, CHANNEL_ID, options))
        await harness.settle()
        data = harness.for_token(token)[0].payload["data"]
        assert payload_problems(data) == [] and data["allowed_mentions"] == {"parse": []}, name
        named = re.findall(r"<#(\d+)>", data["content"])
        more = re.search(r"and (\d+) more channels", data["content"])
        assert named and more and len(named) + int(more[1]) == len(rooms), data["content"]
        assert named == [str(room) for room in rooms[: len(named)]]
    [exam] = harness.bot.services.course.active_exams()
    assert exam.channels == set(rooms)


async def test_a_semesters_assignments_are_listed_within_discords_limits(
    make_harness, empty_services
):
    from bot.limits import payload_problems

    folder = empty_services.settings.materials_dir / "assignments"
    folder.mkdir(parents=True)
    for week in range(1, 25):  # weekly assignments and labs over a semester
        (folder / f"week{week:02d}-lab.toml").write_text(
            f'title = "Week {week} lab: fine-tuning a small model with LoRA and measuring it"\n'
            'due = "2026-06-30 23:59"\ntasks = ["Fine-tune it."]\nprotected = ["42"]\n')
    harness = await make_harness(empty_services)
    token = harness.feed(command_payload("assignments list", INSTRUCTOR, CHANNEL_ID, {}))
    await harness.settle()
    shown = [r for r in harness.for_token(token) if r.message is not None]
    assert all(payload_problems(r.message) == [] for r in shown)
    text = json.dumps([r.message for r in shown])
    assert "week01-lab" in text and "week24-lab" in text


async def test_the_assignment_list_names_a_file_that_cannot_be_read(make_harness, empty_services):
    folder = empty_services.settings.materials_dir / "assignments"
    folder.mkdir(parents=True)
    (folder / "hw1.toml").write_text(
        'title = "LoRA by hand"\ndue = "2026-06-30 23:59"\ntasks = ["Count it."]\n'
        'protected = ["65,536"]\n')
    (folder / "hw2.toml").write_text('title = "Attention"\ntasks = [unclosed\n')
    harness = await make_harness(empty_services)
    token = harness.feed(command_payload("assignments list", INSTRUCTOR, CHANNEL_ID, {}))
    await harness.settle()
    shown = [r for r in harness.for_token(token) if r.message is not None]
    text = json.dumps([r.message for r in shown], ensure_ascii=False)
    # The good file is still listed (and protected); the broken one is named, with its error.
    assert "`hw1` LoRA by hand" in text and "1 protected items" in text
    assert "`hw2` cannot be read, so none of its items are protected" in text
    assert "assignments/hw2.toml" in text
    assert all(r.message.get("flags") == 64 for r in shown), "private to the instructor"
