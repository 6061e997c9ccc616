"""Parsing in a worker process: CPU time and memory bounded per file, gone with its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.loaders import SkipFile
from ingest.pipeline import SourceFile, _parsed
from rag.config import IngestSettings
from tests.conftest import REPO
from tests.ingest.hostile_pdfs import heavy_page_pdf, padded_pdf

NOTES = "# Attention\n\nAttention weighs every token of the sequence against every other token.\n"
# About three seconds of CPU time for pypdf, in a file of a few kilobytes.
HEAVY_LINES = 30_000


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A materials root with one good note and one PDF that is slow to parse."""
    path = tmp_path / "materials"
    path.mkdir()
    (path / "notes.md").write_text(NOTES, encoding="utf-8")
    (path / "heavy.pdf").write_bytes(heavy_page_pdf(HEAVY_LINES))
    return path


def outcomes(root: Path, names: list[str], settings: IngestSettings) -> dict[str, object]:
    """What the pipeline's parse stage makes of each named file."""
    files = [SourceFile(n, root / n, root, (root / n).stat().st_size, n) for n in names]
    return {f.source: outcome for f, outcome in _parsed(files, settings)}


def test_a_pdf_over_the_cpu_limit_is_skipped_and_the_next_file_still_parses(root: Path) -> None:
    out = outcomes(root, ["heavy.pdf", "notes.md"], IngestSettings(parse_cpu_seconds=1))
    assert isinstance(out["heavy.pdf"], SkipFile)
    assert "CPU limit" in str(out["heavy.pdf"])
    assert isinstance(out["notes.md"], list) and out["notes.md"]


def test_a_single_pdf_is_parsed_under_the_limits_too(root: Path) -> None:
    # One file is what /upload ingests: it must not be parsed unbounded in the bot's process.
    out = outcomes(root, ["heavy.pdf"], IngestSettings(parse_cpu_seconds=1))
    assert "CPU limit" in str(out["heavy.pdf"])


def test_a_pdf_over_the_memory_cap_is_skipped_and_the_next_file_still_parses(
    root: Path,
) -> None:
    (root / "padded.pdf").write_bytes(padded_pdf(50))
    out = outcomes(root, ["padded.pdf", "notes.md"], IngestSettings(parse_memory_mb=16))
    assert "memory" in str(out["padded.pdf"])
    assert isinstance(out["notes.md"], list) and out["notes.md"]


_SCRIPT = """
import sys, time
from pathlib import Path
from ingest.pipeline import SourceFile, _parsed
from rag.config import IngestSettings
root = Path(sys.argv[1])
files = [SourceFile(n, root / n, root, 1, n) for n in ("notes.md", "heavy.pdf")]
parsed = _parsed(files, IngestSettings())
next(parsed)
print("parsing", flush=True)
time.sleep(600)
"""


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid`."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat(int(entry.name))[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def _stat(pid: int) -> list[str]:
    """State and parent of a process, from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()


def _alive(pid: int) -> bool:
    try:
        return _stat(pid)[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_the_worker_exits_when_the_ingest_process_is_killed(root: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT, str(root)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, text=True)
    left: set[int] = set()
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "parsing"
        children = _descendants(proc.pid)
        assert children, "the parse stage started no worker process"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(p) for p in children):
            time.sleep(0.2)
        left = {p for p in children if _alive(p)}
        assert not left, f"{len(left)} process(es) outlived the killed ingest"
    finally:
        proc.kill()
        for pid in left:
            os.kill(pid, signal.SIGKILL)
