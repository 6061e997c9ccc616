"""Gated re-ingests (gold questions, index versions) against the plain incremental ingest.

Run: .venv/bin/python benchmarks/gated_reingest.py ../shared/course_materials [--rounds 3]

On a copy of the materials, with the gold set eval/gold_questions_shared.toml:
- a full plain ingest into index P (timed: the reference for "nothing changed");
- the same corpus into index G (not timed: its vectors come from P's run);
- a gated re-ingest of G with nothing changed;
- `--rounds` rounds of one edited file, applied once and ingested into P (plain incremental)
  and into G (gated), alternating which goes first: a section appended to a guide (a few new
  chunks), then a guide retitled (every chunk of it re-embedded);
- disk: G's data dir with one version, after a re-ingest that changes every chunk (chunk size
  1000 → 900) with both versions kept, and after pruning to one.

Prints a Markdown report. The embedding model is loaded once, before any timing.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys  # noqa: E402

import numpy as np  # noqa: E402

# The checkout this script is in, before the one the virtual environment was installed from
# (they differ when it runs from a second worktree).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingest.pipeline import Target  # noqa: E402
from ingest.reingest import ReingestResult, reingest  # noqa: E402
from rag.config import EmbeddingSettings, IngestSettings, Settings, StoreSettings  # noqa: E402
from rag.index import versions  # noqa: E402
from rag.index.embedder import Embedder  # noqa: E402
from rag.services import Services, build_services  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
GOLD = REPO / "eval" / "gold_questions_shared.toml"
APPENDED = "guides/week2-support-guide.md"
RETITLED = "guides/llm-basics.md"


class Memo:
    """The real embedder, remembering vectors (only to build the second index cheaply)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner, self.name = inner, inner.name
        self.memo: dict[str, np.ndarray] = {}

    def embed_documents(
        self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None
    ) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.memo]
        for text, vec in zip(missing, self.inner.embed_documents(missing), strict=True):
            self.memo[text] = vec
        return np.stack([self.memo[t] for t in texts]) if texts else self.inner.embed_documents([])

    def embed_query(self, text: str) -> np.ndarray:
        return self.inner.embed_query(text)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.embed_queries(texts)

    def holds_word(self, word: str) -> bool:
        return self.inner.holds_word(word)


def timed(fn: Callable[[], ReingestResult]) -> tuple[ReingestResult, float]:
    """Run fn; its result and wall seconds."""
    began = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - began


def du(path: Path) -> int:
    """Bytes on disk under path (du -sb)."""
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True,
                              check=True).stdout.split()[0])


def services(work: Path, name: str, root: Path, embedder: Embedder, gated: bool,
             **ingest: object) -> Services:
    """An index in work/name over root; gated only if `gated` (the gold file is in root)."""
    gold = GOLD.name if gated else "no-gold-questions.toml"
    settings = Settings(data_dir=work / name, materials_dir=root,
                        store=StoreSettings(keep_versions=2),
                        ingest=IngestSettings(gold_file=gold, **ingest))  # type: ignore[arg-type]
    return build_services(settings, embedder=embedder)


def run(svc: Services, embedder: object, root: Path) -> ReingestResult:
    """One re-ingest of the whole root through the one entry point."""
    return reingest([Target(root)], svc.store, embedder, svc.settings)  # type: ignore[arg-type]


def edit(root: Path, kind: str, round_: int) -> None:
    """Change one file: append a section to a guide, or retitle another guide."""
    if kind == "append":
        with (root / APPENDED).open("a", encoding="utf-8") as fh:
            fh.write(f"\n\n## Review {round_}\n\nRound {round_}: revise attention, the KV cache "
                     "and next-token prediction before the quiz; bring one question each.\n")
    else:
        path = root / RETITLED
        body = path.read_text(encoding="utf-8").split("\n", 1)[1]
        path.write_text(f"# LLM basics, revision {round_}\n{body}", encoding="utf-8")


def one_file_rounds(root: Path, plain: Services, gated: Services, embedder: Embedder,
                    kind: str, rounds: int) -> list[tuple[float, float, ReingestResult]]:
    """(plain s, gated s, gated result) per round of one edited file."""
    rows = []
    for r in range(rounds):
        edit(root, kind, r)
        order = [("plain", plain), ("gated", gated)]
        seconds: dict[str, float] = {}
        results: dict[str, ReingestResult] = {}
        for name, svc in order if r % 2 == 0 else order[::-1]:
            results[name], seconds[name] = timed(lambda s=svc: run(s, embedder, root))
        rows.append((seconds["plain"], seconds["gated"], results["gated"]))
    return rows


def disk_report(work: Path, root: Path, gated: Services, embedder: Embedder) -> None:
    """Disk of the gated index: one version, two versions of every chunk, pruned to one."""
    one = du(work / "G")
    chunks_one = gated.store.count()
    resized = services(work, "G", root, embedder, True, chunk_chars=900)
    result, seconds = timed(lambda: run(resized, embedder, root))
    two = du(work / "G")
    chunks_two = resized.store.count()
    held = result.gate is not None and result.gate.held
    versions.prune(resized.store, 1)
    resized.store.collect_garbage()
    pruned = du(work / "G")
    print(f"| data dir, one version ({chunks_one} chunks) | {one / 2**20:.1f} MiB | |")
    print(f"| after a re-ingest changing every chunk (chunk size 900; {seconds:.0f} s; "
          f"{'held' if held else 'went live'}), both versions kept ({chunks_two} chunks) | "
          f"{two / 2**20:.1f} MiB (**+{(two - one) / 2**20:.1f} MiB**, {two / one:.2f}×) | |")
    print(f"| after pruning to one version ({resized.store.count()} chunks) | "
          f"{pruned / 2**20:.1f} MiB | |")


def main() -> None:
    """Run every measurement and print the Markdown report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("materials", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sa-gated-"))
    root = work / "materials"
    shutil.copytree(args.materials, root)
    shutil.copy(GOLD, root / GOLD.name)
    embedder = Embedder(EmbeddingSettings())
    embedder.embed_query("warm up")
    memo = Memo(embedder)

    plain = services(work, "P", root, embedder, False)
    gated = services(work, "G", root, embedder, True)
    full, full_s = timed(lambda: run(plain, memo, root))
    run(gated, memo, root)  # vectors from the memo: not timed
    nothing, nothing_s = timed(lambda: run(gated, embedder, root))
    rows = {kind: one_file_rounds(root, plain, gated, embedder, kind, args.rounds)
            for kind in ("append", "retitle")}

    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average before: "
          f"{os.getloadavg()[0]:.2f}; corpus: {args.materials.name} ({len(full.report.indexed)} "
          f"files, {plain.store.count()} chunks); gold set: {GOLD.name}.\n")
    print("| measurement | value | target |\n| --- | --- | --- |")
    print(f"| full ingest (plain) | {full_s:.2f} s | |")
    print(f"| gated re-ingest, nothing changed | {nothing_s * 1000:.0f} ms "
          f"(**{100 * nothing_s / full_s:.2f}%** of full; new version: "
          f"{'yes' if nothing.gate else 'none'}) | ≤ 5% |")
    for kind, label in (("append", f"a section appended to {APPENDED}"),
                        ("retitle", f"{RETITLED} retitled (every chunk re-embedded)")):
        plain_s = statistics.median(r[0] for r in rows[kind])
        gated_s = statistics.median(r[1] for r in rows[kind])
        held = sum(r[2].gate is not None and r[2].gate.held for r in rows[kind])
        embedded = rows[kind][-1][2].report.embedded
        print(f"| one file changed: {label}; median of {args.rounds} | plain {plain_s:.2f} s, "
              f"gated {gated_s:.2f} s (**{gated_s / plain_s:.2f}×**; embedded {embedded}; "
              f"held {held}/{args.rounds}) | ≤ 1.5× |")
    print(f"\nLoad average after the timings: {os.getloadavg()[0]:.2f}\n", flush=True)
    print("| disk | value | |\n| --- | --- | --- |")
    disk_report(work, root, gated, embedder)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
