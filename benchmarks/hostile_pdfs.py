"""Hostile-PDF benchmark: what crafted files cost the ingest's parse stage.

Run: .venv/bin/python benchmarks/hostile_pdfs.py

Builds the files in a temporary folder (tests/ingest/hostile_pdfs.py writes them byte by
byte), then parses each one the way an ingest does (the bounded worker process, default
settings) and prints a Markdown table: file size, wall time, the worker's CPU time and peak
memory, and the outcome. Paste it into docs/benchmarks.md with the date and the load.
"""

from __future__ import annotations

import os
import resource
import sys  # noqa: E402
import tempfile
import time
from pathlib import Path

# The checkout this script is in, before the one the virtual environment was installed from
# (they differ when it runs from a second worktree).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingest.parse_worker import ParseWorker
from rag.config import IngestSettings
from tests.ingest.hostile_pdfs import (
    heavy_page_pdf,
    many_pages_pdf,
    padded_pdf,
    shared_stream_pdf,
)

CASES = {
    "100 pages sharing one stream of 2,000 lines": lambda: shared_stream_pdf(100, 2000),
    "3,000 pages of 40 lines": lambda: many_pages_pdf(3000, lines=40),
    "1 page of 300,000 lines (CPU bomb)": lambda: heavy_page_pdf(300_000),
    "1 page padded to 70 MB once decompressed": lambda: padded_pdf(70),
}


def _measure(worker: ParseWorker, path: Path) -> tuple[float, float, str]:
    """Wall seconds, worker CPU seconds, and the outcome of parsing one file."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    outcome = worker.parse(path, path.parent)
    wall = time.perf_counter() - began
    worker.close()  # reap the child, so that its CPU time is counted
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    shown = f"{len(outcome)} chunks" if isinstance(outcome, list) else f"skipped: {outcome}"
    return wall, cpu, shown


def main() -> None:
    """Print the table."""
    settings = IngestSettings()
    print(f"load average before: {os.getloadavg()[0]:.1f}; limits: {settings.parse_cpu_seconds:g} s"
          f" CPU, {settings.parse_memory_mb} MB, {settings.max_pdf_pages} pages,"
          f" {settings.max_text_chars:,} characters\n")
    print("| file | size | wall | worker CPU | outcome |")
    print("|---|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp, ParseWorker(settings) as worker:
        for name, build in CASES.items():
            path = Path(tmp) / "hostile.pdf"
            path.write_bytes(build())
            wall, cpu, shown = _measure(worker, path)
            size = f"{path.stat().st_size / 1024:.0f} KB"
            print(f"| {name} | {size} | {wall:.1f} s | {cpu:.1f} s | {shown} |")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"\npeak resident memory of any worker: {peak:.0f} MB")


if __name__ == "__main__":
    main()
