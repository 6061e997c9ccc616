"""Parse course files in a child process that can be stopped.

A crafted PDF can keep pypdf busy for minutes or make it allocate gigabytes. Files are
therefore parsed in a child process, one at a time, under limits the kernel enforces:

- CPU time per file (`parse_cpu_seconds`, RLIMIT_CPU): the child is killed when a file
  needs more, and a fresh child parses the next file. CPU time, not wall time, so a real
  paper is not cut short because the embedder is busy on the same cores;
- memory (`parse_memory_mb`, RLIMIT_AS): an allocation beyond the cap fails inside the child
  with MemoryError, and the file is skipped.

The child is a plain `python -m ingest.parse_worker` process talking over a socket pair: no
multiprocessing pool, so no resource tracker, and no pipe end of its own that would keep it
waiting. It exits when its parent dies, even in the middle of a file.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

from ingest.chunking import chunk_document
from ingest.loaders import PdfLimits, SkipFile, load_document
from rag.config import IngestSettings
from rag.index.documents import Chunk

_NICENESS = 10
_STARTUP_TIMEOUT_S = 120.0
_PARENT_POLL_S = 0.5
_MB = 1024 * 1024


def chunks_of(path: Path, root: Path, settings: IngestSettings) -> list[Chunk]:
    """Load, clean and chunk one file (raises SkipFile); exact repeats are dropped."""
    limits = PdfLimits(settings.max_pdf_pages, settings.max_text_chars)
    doc = load_document(path, root, int(settings.max_file_mb * _MB), limits)
    chunks = chunk_document(
        doc, settings.chunk_chars, settings.chunk_overlap, settings.min_chunk_chars
    )
    if not chunks:
        raise SkipFile("no indexable text after cleaning")
    unique: dict[str, Chunk] = {}  # repeats (same id) would collide in the store
    for chunk in chunks:
        unique.setdefault(chunk.id, chunk)
    return list(unique.values())


def parse_outcome(path: Path, root: Path, settings: IngestSettings) -> list[Chunk] | SkipFile:
    """`chunks_of`, with a skip returned rather than raised."""
    try:
        return chunks_of(path, root, settings)
    except SkipFile as exc:
        return exc
    except MemoryError:
        return SkipFile(f"needs more than the {settings.parse_memory_mb:,} MB parse memory cap")


class ParseWorker:
    """A child process that parses one file at a time within the settings' limits."""

    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._shut = False

    def parse(self, path: Path, root: Path) -> list[Chunk] | SkipFile:
        """The file's chunks, or why it was skipped (CPU limit, memory cap, crash…)."""
        try:
            conn = self._started()
            conn.send((path, root, self.settings))
            # The CPU limit is the real bound; this only catches a child stuck off-CPU.
            if not conn.poll(10 * self.settings.parse_cpu_seconds + 30):
                self.close()
                return SkipFile("the parser stopped responding")
            return conn.recv()  # type: ignore[no-any-return]
        except (EOFError, OSError):
            return SkipFile(self._died())

    def close(self) -> None:
        """Stop the child, killing it if it is busy; a later parse starts a new one."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # first: its death wakes a thread waiting on the socket
            proc.wait()
        if conn is not None:
            conn.close()

    def shutdown(self) -> None:
        """Stop the child for good: later parses are skipped instead of starting another."""
        self._shut = True
        self.close()

    def __enter__(self) -> ParseWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def _started(self) -> Connection:
        """The connection to a running child, starting one if needed."""
        if self._conn is not None:
            return self._conn
        if self._shut:
            raise OSError("the parse worker was shut down")
        ours, theirs = socket.socketpair()
        # The child imports what this process imports, from the same places.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        limits = (str(self.settings.parse_cpu_seconds), str(self.settings.parse_memory_mb))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "ingest.parse_worker", str(theirs.fileno()), *limits],
            pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self._conn = Connection(ours.detach())
        if not self._conn.poll(_STARTUP_TIMEOUT_S) or self._conn.recv() != "ready":
            raise OSError("the parse worker did not start")
        return self._conn

    def _died(self) -> str:
        """Reap a child that died or could not start, and say why in words."""
        proc = self._proc
        if proc is not None:  # let it finish dying, so that its exit status tells why
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.close()
        code = proc.returncode if proc is not None else None
        if code == -signal.SIGXCPU:
            return f"parsing needed more than the {self.settings.parse_cpu_seconds:g} s CPU limit"
        if code is not None and code < 0:
            return f"the parser was killed by signal {-code}"
        return "the parser stopped on this file" if proc else "the parser could not start"


def _exit_with_parent(parent: int) -> None:
    """Exit as soon as the process that started this one is gone (we were reparented)."""
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_S)
    os._exit(1)


def _cap_memory(megabytes: int) -> None:
    """Limit the address space to what is mapped now plus `megabytes` (Linux only)."""
    try:
        with open("/proc/self/statm") as fh:
            mapped = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        cap = mapped + megabytes * _MB
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    except (OSError, ValueError):  # no /proc: the CPU limit still holds
        pass


def _limit_cpu(seconds: float) -> None:
    """Let the kernel stop this process (SIGXCPU) after `seconds` more CPU time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime + seconds)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.RLIM_INFINITY))


def _serve(fd: int, cpu_seconds: float, memory_mb: int) -> None:
    """The child's loop: parse each file sent, answer with its chunks or a skip."""
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    with contextlib.suppress(OSError):
        # The embedder is the bottleneck and parsing only has to keep ahead of it; torch's
        # threads lose more than their share when preempted mid-batch.
        os.nice(_NICENESS)
    _cap_memory(memory_mb)
    if hasattr(signal, "SIGXCPU"):  # its default action ends the process, without a core file
        signal.signal(signal.SIGXCPU, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    conn = Connection(fd)
    conn.send("ready")
    while True:
        try:
            path, root, settings = conn.recv()
        except (EOFError, OSError):
            return
        _limit_cpu(cpu_seconds)
        conn.send(parse_outcome(path, root, settings))


if __name__ == "__main__":
    _serve(int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]))
