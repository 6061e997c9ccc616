"""/reingest and /upload with a real index: progress, summaries, refusals."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from types import SimpleNamespace

import discord
import pytest

from bot.errors import friendly_message
from rag.index.chroma_store import StoreBusy
from rag.index.embedder import Embedder
from rag.index.locking import DataDirBusy
from rag.services import Services, build_services
from tests.bot.conftest import FAST_LLM
from tests.bot.fake_discord import CHANNEL_ID, MANAGE_GUILD_PERMISSIONS, Fault, Person
from tests.bot.test_commands import attachment, callback
from tests.conftest import make_settings, run
from tests.ingest.test_pipeline import assert_consistent
from tests.ingest.test_pipeline_concurrency import GatedEmbedder
from tests.ingest.test_reingest import FILES, LORA_Q, ZORBLAX, gated_settings, ingested, regate
from tests.ingest.test_reingest import NOTES as COURSE_NOTES

INSTRUCTOR = Person(2001, "prof", roles=(), permissions=MANAGE_GUILD_PERMISSIONS)
STUDENT = Person(1001, "ana")
NOTES = b"# Zorblax attention\n\nZorblax attention is a made-up variant used only in this test.\n"


@pytest.fixture
def course(tmp_path, shared_materials, embedder: Embedder) -> Services:
    """Two real guides, already ingested, in a materials folder the test may change."""
    root = tmp_path / "materials"
    root.mkdir()
    for name in ("llm-basics.md", "week2-support-guide.md"):
        shutil.copy(shared_materials / "guides" / name, root / name)
    settings = make_settings(tmp_path / "data", llm=FAST_LLM, materials_dir=root)
    services = build_services(settings, embedder=embedder)
    assert run(root, services).ok
    return services


async def test_reingest_reports_changes_and_a_second_one_is_refused(
    make_harness, course, shared_materials
):
    root = course.settings.materials_dir
    (root / "llm-basics.md").unlink()
    shutil.copy(shared_materials / "guides" / "class2-llm-overview.md", root)
    (root / "empty.md").write_text("")
    harness = await make_harness(course)
    harness.bot.reingester.progress_interval_s = 0.05  # show progress even for a quick ingest
    first = harness.command("reingest", INSTRUCTOR)
    second = harness.command("reingest", INSTRUCTOR)
    search = harness.command("sources", STUDENT, query="attention")  # questions go on
    await harness.settle()
    refusal = callback(harness, second)
    assert refusal.payload["data"]["flags"] & 64
    assert "already running" in refusal.payload["data"]["content"]
    progress = [r.payload["embeds"][0] for r in harness.for_token(first)[1:-1]]
    assert progress and all(p["title"] == "Re-ingesting…" for p in progress)
    summary = harness.for_token(first)[-1].payload["embeds"][0]
    fields = {f["name"]: f["value"] for f in summary["fields"]}
    assert fields["Added (1)"] == "class2-llm-overview.md"
    assert fields["Removed (1)"] == "llm-basics.md"
    assert fields["Unchanged"] == "1"
    assert fields["Skipped (1)"].startswith("empty.md: ")
    assert "embedded" in summary["footer"]["text"]
    assert harness.for_token(search)[-1].payload["embeds"]


async def test_upload_saves_and_ingests_the_file_and_keeps_existing_ones(make_harness, course):
    harness = await make_harness(course)
    notes = attachment("Zorblax notes.md", len(NOTES))
    harness.fake.cdn[notes["url"]] = NOTES
    token = harness.command("upload", INSTRUCTOR, _attachment=notes)
    await harness.settle()
    saved = course.settings.materials_dir / "uploads" / "Zorblax notes.md"
    assert saved.read_bytes() == NOTES
    summary = harness.for_token(token)[-1].payload["embeds"][0]
    assert summary["title"] == "Added uploads/Zorblax notes.md"
    assert summary["fields"][0]["value"] == "uploads/Zorblax notes.md"
    hits = course.retriever.search("What is Zorblax attention?", 1)
    assert hits[0].chunk.source == "uploads/Zorblax notes.md"

    again = harness.command("upload", INSTRUCTOR, _attachment=notes)
    await harness.settle()
    assert "already exists" in callback(harness, again).payload["data"]["content"]


async def test_uploading_the_same_file_again_says_it_is_unchanged(make_harness, course):
    harness = await make_harness(course)
    notes = attachment("notes.md", len(NOTES))
    harness.fake.cdn[notes["url"]] = NOTES
    harness.command("upload", INSTRUCTOR, _attachment=notes)
    await harness.settle()
    again = harness.command("upload", INSTRUCTOR, _attachment=notes, overwrite=True)
    await harness.settle()
    summary = harness.for_token(again)[-1].payload["embeds"][0]
    # It was titled "Added uploads/notes.md" above fields saying nothing was added.
    assert summary["title"] == "Unchanged: uploads/notes.md is the file already there"


async def test_an_attachment_discord_fails_to_hand_over_is_said_to_be_so(make_harness, course):
    harness = await make_harness(course)

    async def gone(url: str) -> bytes:
        raise discord.NotFound(SimpleNamespace(status=404, reason="Not Found"),
                               {"code": 0, "message": "404: Not Found"})

    harness.fake.get_from_cdn = gone
    token = harness.command("upload", INSTRUCTOR, _attachment=attachment("notes.md", 50))
    await harness.settle()
    told = harness.for_token(token)[-1].payload["content"]
    # It said "Discord did not accept my reply (HTTP 404), so your answer may be incomplete."
    assert "could not download the file" in told and "answer" not in told
    assert not (course.settings.materials_dir / "uploads").exists()


async def test_a_file_whose_bytes_do_not_match_its_type_is_not_kept(make_harness, course):
    harness = await make_harness(course)
    fake_pdf = attachment("paper.pdf", 20, "application/pdf")
    harness.fake.cdn[fake_pdf["url"]] = b"<html>not a pdf</html>"
    token = harness.command("upload", INSTRUCTOR, _attachment=fake_pdf)
    await harness.settle()
    assert "not a PDF" in harness.for_token(token)[-1].payload["content"]
    assert not (course.settings.materials_dir / "uploads").exists()


def progress_edit(payload: dict) -> bool:
    """An edit showing re-ingest progress."""
    return (payload.get("embeds") or [{}])[0].get("title") == "Re-ingesting…"


async def until(condition, timeout: float = 60.0) -> None:
    """Wait (letting the bot run) until a condition holds."""
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(poll(), timeout)


@pytest.mark.parametrize(("status", "code"), [(404, 10008), (401, 50027), (503, 0)],
                         ids=["message-deleted", "token-expired", "discord-5xx"])
async def test_a_failed_progress_edit_keeps_the_slot_until_the_ingest_ends(
    make_harness, course, embedder, status, code
):
    (course.settings.materials_dir / "zorblax.md").write_bytes(NOTES)
    gated = GatedEmbedder(embedder)
    harness = await make_harness(dataclasses.replace(course, embedder=gated))
    harness.bot.reingester.progress_interval_s = 0.05
    harness.fake.faults.append(Fault("PATCH", r"/webhooks/\d+/[^/]+/messages/@original",
                                     status, code, when=progress_edit))
    first = harness.command("reingest", INSTRUCTOR)
    await until(lambda: gated.entered.is_set() and any(
        r.status == status for r in harness.for_token(first)))
    notes = attachment("more notes.md", len(NOTES))
    harness.fake.cdn[notes["url"]] = NOTES
    upload = harness.command("upload", INSTRUCTOR, _attachment=notes)
    second = harness.command("reingest", INSTRUCTOR)
    await until(lambda: harness.for_token(upload) and harness.for_token(second))
    for token in (upload, second):
        assert "already running" in callback(harness, token).payload["data"]["content"]
    gated.gate.set()
    await harness.settle()
    assert harness.bot.reingester.running is False
    summary = harness.for_token(first)[-1].payload["embeds"][0]
    assert summary["fields"][0]["value"] == "zorblax.md"
    assert course.retriever.search("What is Zorblax attention?", 1)[0].chunk.source == "zorblax.md"
    assert_consistent(course)


async def test_a_summary_whose_interaction_expired_is_sent_to_the_instructor_by_dm(
    make_harness, course
):
    (course.settings.materials_dir / "zorblax.md").write_bytes(NOTES)
    harness = await make_harness(course)
    harness.bot.reingester.progress_interval_s = 0.05
    # The ingest outlived its interaction token: every edit of the reply is refused.
    harness.fake.faults.append(Fault("PATCH", r"/webhooks/\d+/[^/]+/messages/@original",
                                     401, 50027))
    harness.command("reingest", INSTRUCTOR)
    await harness.settle()
    assert not [r for r in harness.fake.requests if r.path == f"/channels/{CHANNEL_ID}/messages"]
    posted = [r for r in harness.fake.delivered()
              if r.path == f"/channels/{INSTRUCTOR.id + 1}/messages"]  # the DM channel
    assert [r.payload["embeds"][0]["title"] for r in posted] == ["Re-ingest finished"]
    assert posted[0].payload["embeds"][0]["fields"][0]["value"] == "zorblax.md"
    assert posted[0].payload["allowed_mentions"] == {"parse": []}


@pytest.mark.parametrize("command", ["reingest", "upload"])
async def test_instructor_summaries_are_private(make_harness, course, command):
    harness = await make_harness(course)
    notes = attachment("zorblax.md", len(NOTES))
    harness.fake.cdn[notes["url"]] = NOTES
    options = {"_attachment": notes} if command == "upload" else {}
    token = harness.command(command, INSTRUCTOR, **options)
    await harness.settle()
    assert callback(harness, token).payload["data"]["flags"] & 64
    assert harness.for_token(token)[-1].payload["embeds"][0]["fields"]


async def test_a_held_reingest_names_the_question_and_instructors_promote_then_roll_back(
    make_harness, tmp_path, embedder
):
    settings = gated_settings(tmp_path).model_copy(update={"llm": FAST_LLM})
    services = ingested(settings, embedder)
    services.retriever.refresh_interval_s = 0.0
    (settings.materials_dir / "notes.md").write_text(COURSE_NOTES)
    first = regate(services).gate
    assert first is not None
    (settings.materials_dir / "lora.md").unlink()
    harness = await make_harness(services)
    token = harness.command("reingest", INSTRUCTOR)
    await harness.settle()
    summary = harness.fake.originals[token]
    embed = summary["embeds"][0]
    assert embed["title"] == "Re-ingest finished: held, not live"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert LORA_Q in fields["Got worse (1)"] and "stays live" in fields["Gold questions"]
    button = summary["components"][0]["components"][0]
    built = button["custom_id"].rsplit(":", 1)[1]
    assert services.store.live_version() == first.built != built

    refused = harness.click(summary, button["custom_id"], STUDENT)
    await harness.settle()
    assert "Only instructors" in harness.for_token(refused)[-1].payload["data"]["content"]
    assert services.store.live_version() == first.built

    harness.click(summary, button["custom_id"], INSTRUCTOR)
    await harness.settle()
    assert services.store.live_version() == built
    assert "lora.md" not in {h.chunk.source for h in services.retriever.search(LORA_Q, 5)}

    back = harness.command("reingest", INSTRUCTOR, action="rollback")
    await harness.settle()
    assert harness.fake.originals[back]["content"] == (
        f"Rolled back: version {first.built} is live (was {built}).")
    assert "lora.md" in {h.chunk.source for h in services.retriever.search(LORA_Q, 5)}


async def held_reingest(make_harness, tmp_path, embedder):
    """A bot over a gated course whose /reingest was held (lora.md deleted): the harness, the
    summary message with its promote button, and the held version."""
    settings = gated_settings(tmp_path).model_copy(update={"llm": FAST_LLM})
    services = ingested(settings, embedder)
    (settings.materials_dir / "notes.md").write_text(COURSE_NOTES)
    assert regate(services).gate is not None
    (settings.materials_dir / "lora.md").unlink()
    harness = await make_harness(services)
    token = harness.command("reingest", INSTRUCTOR)
    await harness.settle()
    summary = harness.fake.originals[token]
    held = summary["components"][0]["components"][0]["custom_id"].rsplit(":", 1)[1]
    assert services.store.live_version() != held
    return harness, summary, held


async def press_promote(harness, summary: dict, version: str) -> str:
    """An instructor presses "Promote version N anyway" on a summary; the private reply."""
    token = harness.click(summary, f"sa:promote:{version}", INSTRUCTOR)
    await harness.settle()
    reply = harness.for_token(token)[-1].payload
    assert callback(harness, token).payload["data"]["flags"] & 64
    return reply.get("content") or ""


async def test_an_old_promote_button_changes_nothing_once_a_newer_version_went_live(
    make_harness, tmp_path, embedder
):
    harness, summary, held = await held_reingest(make_harness, tmp_path, embedder)
    store = harness.bot.services.store
    harness.command("reingest", INSTRUCTOR, action="promote")
    await harness.settle()
    assert store.live_version() == held
    (harness.bot.settings.materials_dir / "lora.md").write_text(FILES["lora.md"])
    newer = harness.command("reingest", INSTRUCTOR)
    await harness.settle()
    live = store.live_version()
    assert live != held and "held" not in harness.fake.originals[newer]["embeds"][0]["title"]

    reply = await press_promote(harness, summary, held)
    assert reply == (f"Version {held} is no longer the held re-ingest, so nothing was changed: "
                     f"version {live} is live now.")
    assert store.live_version() == live


async def test_an_old_promote_button_changes_nothing_once_a_newer_version_is_held(
    make_harness, tmp_path, embedder
):
    harness, summary, held = await held_reingest(make_harness, tmp_path, embedder)
    store = harness.bot.services.store
    live = store.live_version()
    (harness.bot.settings.materials_dir / "zorblax.md").write_text(ZORBLAX)
    token = harness.command("reingest", INSTRUCTOR)
    await harness.settle()
    button = harness.fake.originals[token]["components"][0]["components"][0]
    newer = button["custom_id"].rsplit(":", 1)[1]
    assert newer != held

    reply = await press_promote(harness, summary, held)
    assert reply.startswith(f"Version {held} is no longer the held re-ingest, so nothing was "
                            f"changed: version {live} is live now, and version {newer} is held")
    assert store.live_version() == live
    promoted = await press_promote(harness, harness.fake.originals[token], newer)
    assert promoted.startswith(f"Version {newer} is live")  # the newer button still works
    assert store.live_version() == newer


async def test_a_broken_gold_file_is_named_without_its_server_path(make_harness, course):
    root = course.settings.materials_dir
    (root / "gold_questions.toml").write_text("[[question]\nquestion = 'x'\n")  # bad TOML
    (root / "zorblax.md").write_bytes(NOTES)
    harness = await make_harness(course)
    token = harness.command("reingest", INSTRUCTOR)
    await harness.settle()
    reply = harness.for_token(token)[-1].payload["content"]
    assert "Cannot read the gold questions in gold_questions.toml" in reply
    assert str(root.parent) not in reply


@pytest.mark.parametrize("error", [
    DataDirBusy("Another study-assistant process (pid 1) is writing to /srv/data/secret."),
    StoreBusy("Another ingest is writing to the Chroma server at http://10.0.0.5:8000."),
], ids=["data-dir", "chroma"])
def test_a_busy_index_is_reported_without_server_paths(error):
    message = friendly_message(error)
    assert "Another ingest is writing" in message
    assert "/srv" not in message and "10.0.0.5" not in message


CORRUPT_PDF = b"%PDF-1.7\n" + b"\x00garbage\xff" * 200


async def test_a_corrupt_pdf_upload_is_not_added_nor_kept(make_harness, course):
    harness = await make_harness(course)
    pdf = attachment("broken.pdf", len(CORRUPT_PDF), "application/pdf")
    harness.fake.cdn[pdf["url"]] = CORRUPT_PDF
    token = harness.command("upload", INSTRUCTOR, _attachment=pdf)
    await harness.settle()
    summary = harness.for_token(token)[-1].payload["embeds"][0]
    assert summary["title"] == "Not added: uploads/broken.pdf"
    assert not (course.settings.materials_dir / "uploads" / "broken.pdf").exists()


async def test_a_corrupt_pdf_overwriting_a_good_one_puts_the_good_one_back(
    make_harness, course, shared_materials
):
    good = next((shared_materials / "papers").glob("*.pdf")).read_bytes()
    saved = course.settings.materials_dir / "uploads" / "paper.pdf"
    saved.parent.mkdir()
    saved.write_bytes(good)
    harness = await make_harness(course)
    pdf = attachment("paper.pdf", len(CORRUPT_PDF), "application/pdf")
    harness.fake.cdn[pdf["url"]] = CORRUPT_PDF
    token = harness.command("upload", INSTRUCTOR, _attachment=pdf, overwrite=True)
    await harness.settle()
    assert harness.for_token(token)[-1].payload["embeds"][0]["title"].startswith("Not added")
    assert saved.read_bytes() == good
