"""/upload: names, types and sizes are checked before anything is saved."""

from __future__ import annotations

import re

import pytest

from bot.uploads import (
    UploadRejected,
    check_content,
    check_type_and_size,
    destination,
    safe_filename,
    save_atomically,
)
from tests.bot.fake_discord import MANAGE_GUILD_PERMISSIONS, Person
from tests.bot.test_commands import attachment, callback

INSTRUCTOR = Person(2001, "prof", roles=(), permissions=MANAGE_GUILD_PERMISSIONS)


@pytest.mark.parametrize(
    "name", ["../../etc/passwd.md", "..\\..\\boot.ini.txt", "/abs/notes.md", ".hidden.md", "..",
             "notes"],
)
def test_names_that_leave_the_folder_or_hide_are_rejected(name):
    with pytest.raises(UploadRejected):
        safe_filename(name)


@pytest.mark.parametrize(("name", "says"), [
    # Both cleaned to "upload.md", so a second one was told to overwrite the first.
    ("🧠🧠.md", "no letters or digits"),
    ("📚📚.md", "no letters or digits"),
    # "not ''": the extension was empty, or so long that the name became a dot-file.
    ("notes.md.", "needs an extension"),
    ("notes." + "x" * 300, "not '.xxxxxxxxxx…'"),
])
def test_a_name_that_cleans_to_nothing_or_has_no_real_extension_is_refused(name, says):
    with pytest.raises(UploadRejected, match=re.escape(says)):
        check_type_and_size(name, 10, 100)


def test_odd_characters_are_replaced_and_the_extension_lowercased():
    assert safe_filename("Week 3: <LoRA>*notes.MD") == "Week 3_ _LoRA_notes.md"
    assert safe_filename("ｐａｐｅｒ.pdf") == "paper.pdf"  # NFKC


def test_type_and_size_are_checked():
    assert check_type_and_size("lora.pdf", 10, 100) == "lora.pdf"
    with pytest.raises(UploadRejected, match="only ingest"):
        check_type_and_size("run.exe", 10, 100)
    with pytest.raises(UploadRejected, match="limit"):
        check_type_and_size("big.pdf", 101, 100)
    with pytest.raises(UploadRejected, match="empty"):
        check_type_and_size("empty.md", 0, 100)


def test_content_must_match_the_extension():
    check_content("a.pdf", b"%PDF-1.7 ...")
    with pytest.raises(UploadRejected, match="not a PDF"):
        check_content("a.pdf", b"<html>")
    with pytest.raises(UploadRejected, match="binary"):
        check_content("a.md", b"\x00\x01ELF")


def test_an_existing_file_is_kept_unless_overwrite_is_asked(tmp_path):
    target = destination(tmp_path, "uploads", "notes.md", overwrite=False)
    save_atomically(target, b"# Notes\n")
    with pytest.raises(UploadRejected, match="already exists"):
        destination(tmp_path, "uploads", "notes.md", overwrite=False)
    assert destination(tmp_path, "uploads", "notes.md", overwrite=True) == target
    assert [p.name for p in target.parent.iterdir()] == ["notes.md"]  # no temp file left


@pytest.mark.parametrize(
    ("name", "size", "says"),
    [
        ("../../materials/evil.md", 100, "without folders"),
        ("payload.exe", 100, "only ingest"),
        ("huge.pdf", 30 * 1024 * 1024, "limit is"),
        # Just over the 20 MB (2**20 bytes each) limit: never "21.0 MB; the limit is 21 MB".
        ("big.pdf", 21_000_000, "That file is 20.03 MB; the limit is 20 MB."),
    ],
    ids=["traversal", "wrong-type", "oversize", "just-over"],
)
async def test_upload_rejects_bad_files_before_saving_anything(
    make_harness, empty_services, tmp_path, name, size, says
):
    harness = await make_harness(empty_services, upload_max_mb=20)
    token = harness.command("upload", INSTRUCTOR, _attachment=attachment(name, size))
    await harness.settle()
    reply = callback(harness, token)
    assert reply.payload["data"]["flags"] & 64 and says in reply.payload["data"]["content"]
    assert not (tmp_path / "materials").exists()


def test_a_long_non_ascii_name_is_cut_to_fit_the_file_system(tmp_path):
    name = safe_filename("注意力機構の解説" * 12 + ".md")  # 96 characters, 288 bytes
    assert name.startswith("注意力機構の解説") and name.endswith(".md")
    save_atomically(tmp_path / name, b"# Notes\n")  # within the 255-byte limit of a name
    assert (tmp_path / name).read_bytes() == b"# Notes\n"


def test_utf16_text_with_its_byte_order_mark_is_accepted():
    check_content("notes.md", "# Zorblax attention\n\nA made-up variant.\n".encode("utf-16"))
