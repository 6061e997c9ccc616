"""The escalation log: one escalation per answer, the hourly limit, TA answers, FAQ records."""

from __future__ import annotations

import time

import pytest

from bot.escalation_log import AlreadyEscalated, EscalationLog, TooManyEscalations
from bot.storage import LoggedAnswer, QuestionLog


@pytest.fixture
def logs(tmp_path):
    questions = QuestionLog(tmp_path / "bot.sqlite3")
    escalations = EscalationLog(questions.path)
    yield questions, escalations
    escalations.close()
    questions.close()


def logged(questions: QuestionLog, question: str = "Who painted the Mona Lisa?") -> int:
    return questions.record(LoggedAnswer("u1", "42", question, "Not covered.", (), (), "m", 1.0,
                                         True))


def claim(escalations: EscalationLog, question_id: int, user: str = "u1", per_hour: int = 3):
    return escalations.claim(question_id, user, 1001, per_hour, guild_id=7, channel_id=42,
                             message_id=99, private=False)


def test_an_answer_is_escalated_once(logs):
    questions, escalations = logs
    qid = logged(questions)
    first = claim(escalations, qid)
    with pytest.raises(AlreadyEscalated) as raised:
        claim(escalations, qid, user="u2")
    assert raised.value.escalation.id == first
    assert raised.value.escalation.question == "Who painted the Mona Lisa?"


def test_the_hourly_limit_counts_one_users_escalations_and_says_when_it_frees(logs):
    questions, escalations = logs
    started = time.time()
    claim(escalations, logged(questions), per_hour=2)
    claim(escalations, logged(questions), per_hour=2)
    with pytest.raises(TooManyEscalations) as raised:
        claim(escalations, logged(questions), per_hour=2)
    assert raised.value.count == 2
    assert started + 3600 <= raised.value.until <= time.time() + 3600
    claim(escalations, logged(questions), user="u2", per_hour=2)  # another user may


def test_a_released_claim_can_be_made_again_and_does_not_count(logs):
    questions, escalations = logs
    qid = logged(questions)
    escalations.release(claim(escalations, qid, per_hour=1))
    claim(escalations, qid, per_hour=1)


def test_an_open_escalation_is_listed_until_a_ta_answer_reaches_the_student(logs):
    questions, escalations = logs
    eid = claim(escalations, logged(questions))
    assert escalations.unanswered() == []  # no thread yet
    escalations.opened(eid, ta_channel_id=5, ta_thread_id=6)
    assert [e.id for e in escalations.unanswered()] == [eid]
    assert escalations.for_thread(6).id == eid
    answer_id = escalations.add_answer(eid, "tina", "Leonardo da Vinci.")
    assert [e.id for e in escalations.unanswered()] == [eid]  # not delivered yet
    escalations.mark_answered(eid)
    assert escalations.unanswered() == []
    answer = escalations.answer(answer_id)
    assert (answer.ta_name, answer.answer, answer.faq_path) == ("tina", "Leonardo da Vinci.", "")
    escalations.approved(answer_id, "faq/x.md", "prof", 123.0)
    assert escalations.answer(answer_id).faq_path == "faq/x.md"


def test_sent_since_gives_the_times_of_escalations_that_reached_the_tas(logs):
    questions, escalations = logs
    opened = claim(escalations, logged(questions))
    escalations.opened(opened, 5, 6)
    claim(escalations, logged(questions, "Still sending?"))  # no thread yet: not sent
    sent = escalations.sent_since(time.time() - 60)
    assert len(sent) == 1 and sent[0] == escalations.get(opened).created_at
    assert escalations.sent_since(time.time() + 60) == []
