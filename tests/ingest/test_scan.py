"""The scan stage of ingest/pipeline.py: what is a candidate file, and why others are skipped."""

from __future__ import annotations

import os
import socket
import stat
import threading
from pathlib import Path

import pytest

from ingest.pipeline import SourceFile, Target, scan
from rag.config import IngestSettings

NOTES = "# Attention\n\nAttention weighs every token of the sequence against every other token.\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A materials root with one good note."""
    path = tmp_path / "materials"
    path.mkdir()
    (path / "notes.md").write_text(NOTES, encoding="utf-8")
    return path


def scan_within(targets: list[Target], seconds: float = 20) -> tuple[list[SourceFile], dict]:
    """Scan on a thread; fail (instead of hanging the suite) if it blocks."""
    result: list = []
    thread = threading.Thread(
        target=lambda: result.append(scan(targets, IngestSettings(), "salt")), daemon=True
    )
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for target in targets:  # a FIFO: a writer lets the blocked reader go
            for fifo in target.root.glob("*.md"):
                if fifo.is_fifo():
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("the scan blocked")
    return result[0]


def test_a_fifo_named_like_a_guide_is_skipped_without_blocking(root: Path) -> None:
    os.mkfifo(root / "x.md")
    files, skipped = scan_within([Target(root)])
    assert [f.source for f in files] == ["notes.md"]
    assert skipped == {"x.md": "not a regular file (a FIFO)"}


def test_a_socket_named_like_a_guide_is_skipped_with_a_reason(root: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "s.md"))
        files, skipped = scan_within([Target(root)])
    assert [f.source for f in files] == ["notes.md"]
    assert skipped == {"s.md": "not a regular file (a socket)"}


def test_a_device_named_like_a_guide_is_skipped_without_reading_it(root: Path) -> None:
    try:  # like /dev/zero: reading it never ends
        os.mknod(root / "zero.md", 0o600 | stat.S_IFCHR, os.makedev(1, 5))
    except PermissionError:
        pytest.skip("creating a device node needs privileges")
    files, skipped = scan_within([Target(root)])
    assert [f.source for f in files] == ["notes.md"]
    assert skipped == {"zero.md": "not a regular file (a device)"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a file without read permission")
def test_an_unreadable_file_is_skipped_with_a_reason(root: Path) -> None:
    (root / "secret.md").write_text(NOTES, encoding="utf-8")
    (root / "secret.md").chmod(0)
    files, skipped = scan_within([Target(root)])
    assert [f.source for f in files] == ["notes.md"]
    assert skipped == {"secret.md": "unreadable: permission denied"}


def test_a_file_deleted_during_the_scan_is_skipped_with_that_reason(root: Path) -> None:
    files, skipped = scan_within([Target(root, root / "gone.md")])
    assert files == [] and skipped == {"gone.md": "deleted during the scan"}


def test_a_symlinked_folder_is_listed_as_skipped_with_a_reason(root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "more.md").write_text(NOTES, encoding="utf-8")
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    files, skipped = scan_within([Target(root)])
    assert [f.source for f in files] == ["notes.md"]
    assert skipped == {"linked/": "symlinked folder (not followed)"}
