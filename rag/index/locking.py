"""One writer per embedded data dir.

Chroma's embedded mode belongs to one process: two processes writing the same directory can
corrupt it, and a reader in another process does not see new writes. So every process that
writes (an ingest, the bot, which runs re-ingests in-process) holds an exclusive lock on the
data dir for as long as it writes. A second writer gets a clear message instead of a corrupt
index. With a Chroma server (`store.host`) no file lock is taken: processes on other machines
share the server, and ingests are serialised by a writer lease on the server itself
(`WriterLease` in rag/index/chroma_store.py).
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path
from types import TracebackType


class DataDirBusy(RuntimeError):
    """Another process is writing to the same data dir."""


class DataDirLock:
    """An exclusive, non-blocking advisory lock on `<data_dir>/.writer.lock`."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / ".writer.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise DataDirBusy naming the process that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirBusy(
                f"Another study-assistant process ({holder}) is writing to {self.path.parent}. "
                "If the bot is running, re-ingest from Discord with /reingest; otherwise wait "
                "for the other ingest to finish."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv[:3])}".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Release the lock (closing the descriptor drops it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
