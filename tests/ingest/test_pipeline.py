"""The incremental ingest pipeline on the real materials, embedder and Chroma."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ingest import chunking, pipeline
from ingest.pipeline import NoProgress
from rag.index.locking import DataDirBusy, DataDirLock
from rag.services import Services
from tests.conftest import PAPER, REPO, CountingEmbedder, run, services_for

PAPER_SOURCE = f"papers/{PAPER}"
MOJIBAKE = re.compile(r"â€|‚Ä|Ã[\x80-\xbf×]|Â|\ufffd")


def stored(services: Services) -> dict[str, set[str]]:
    """source -> chunk ids, as the manifest says."""
    return {s: set(e.chunk_ids) for s, e in services.store.manifest().items()}


def assert_consistent(services: Services) -> None:
    """Every manifest entry has chunks, and every chunk it lists is stored."""
    manifest = services.store.manifest()
    for source, entry in manifest.items():
        assert entry.chunk_ids, f"{source} is listed with zero chunks"
        found = services.store.existing_ids(entry.chunk_ids)
        assert found == set(entry.chunk_ids), f"{source} is half-indexed"


def test_ingest_indexes_guides_and_paper_without_mojibake(small_root, embedder, tmp_path):
    services = services_for(tmp_path / "data", embedder)
    report = run(small_root, services)
    assert sorted(report.indexed) == sorted(
        [f"guides/{p.name}" for p in (small_root / "guides").iterdir()] + [PAPER_SOURCE]
    )
    chunks = services.store.get_chunks(sorted(services.store.all_chunk_ids()))
    assert not [c.chunk.text[:80] for c in chunks if MOJIBAKE.search(c.chunk.text)]
    assert not [c.chunk.section for c in chunks if MOJIBAKE.search(c.chunk.section)]
    pages = {c.chunk.page for c in chunks if c.chunk.source == PAPER_SOURCE}
    assert min(pages) == 1 and max(pages) >= 10
    assert all(c.chunk.page is None for c in chunks if c.chunk.source.endswith(".md"))


def test_unchanged_rerun_embeds_nothing(small_root, counting: CountingEmbedder, tmp_path):
    services = services_for(tmp_path / "data", counting.inner)
    first = run(small_root, services, embedder=counting)
    assert counting.texts == first.chunks_added > 0
    before = stored(services)
    second = run(small_root, services, embedder=counting)
    assert counting.texts == first.chunks_added
    assert second.embedded == 0 and len(second.plan.unchanged) == len(before)
    assert stored(services) == before


def test_edited_file_replaces_only_its_changed_chunks(small_root, counting, tmp_path):
    services = services_for(tmp_path / "data", counting.inner)
    run(small_root, services, embedder=counting)
    before = stored(services)
    guide = small_root / "guides" / "week6-transformers-fundamentals.md"
    guide.write_text(
        guide.read_text()
        + "\n\n## Quiz\n\nExplain in one or two sentences why residual connections help very"
        " deep transformer stacks train stably, and what layer normalisation adds.\n"
    )
    counting.texts = 0
    report = run(small_root, services, embedder=counting)
    after = stored(services)
    assert [f.source for f in report.plan.changed] == ["guides/week6-transformers-fundamentals.md"]
    changed = after["guides/week6-transformers-fundamentals.md"]
    new_ids = changed - before["guides/week6-transformers-fundamentals.md"]
    assert 0 < counting.texts == len(new_ids) < len(changed)
    assert {s: ids for s, ids in after.items() if "week6" not in s} == {
        s: ids for s, ids in before.items() if "week6" not in s
    }
    assert services.store.count() == sum(len(ids) for ids in after.values())


def test_an_index_from_before_chunks_knew_their_code_block_gets_it_without_embedding_again(
    shared_materials, counting, tmp_path, monkeypatch
):
    # The previous pipeline version, whose chunks all seemed to start outside code.
    root = tmp_path / "materials"
    (root / "guides").mkdir(parents=True)
    shutil.copy(shared_materials / "guides" / "llm-complete-guide.md", root / "guides")
    services = services_for(tmp_path / "data", counting.inner)
    with monkeypatch.context() as before:
        before.setattr(pipeline, "PIPELINE_VERSION", "5")
        before.setattr(chunking, "_open_fences", lambda text, start, starts: [""] * len(starts))
        first = run(root, services, embedder=counting)
    counting.texts = 0
    second = run(root, services, embedder=counting)
    assert [f.source for f in second.plan.changed] == ["guides/llm-complete-guide.md"]
    assert counting.texts == 0 and second.chunks_reused == first.chunks_added
    chunks = services.store.get_chunks(sorted(services.store.all_chunk_ids()))
    assert {c.chunk.fence for c in chunks} == {"", "```"}


def test_deleted_file_loses_its_chunks(small_root, embedder, tmp_path):
    services = services_for(tmp_path / "data", embedder)
    run(small_root, services)
    gone = stored(services)[PAPER_SOURCE]
    (small_root / "papers" / PAPER).unlink()
    report = run(small_root, services)
    assert report.plan.removed == [PAPER_SOURCE]
    assert PAPER_SOURCE not in stored(services)
    assert services.store.existing_ids(list(gone)) == set()
    hits = services.retriever.search("scaled dot-product attention and multi-head attention", 5)
    assert all(h.chunk.source != PAPER_SOURCE for h in hits)


def test_dry_run_changes_nothing(small_root, embedder, tmp_path):
    services = services_for(tmp_path / "data", embedder)
    run(small_root, services)
    before, count = stored(services), services.store.count()
    (small_root / "guides" / "new-topic.md").write_text("# New\n\nSomething entirely new here.\n")
    (small_root / "guides" / "llm-basics.md").unlink()
    report = run(small_root, services, dry_run=True)
    assert [f.source for f in report.plan.added] == ["guides/new-topic.md"]
    assert report.plan.removed == ["guides/llm-basics.md"]
    assert stored(services) == before and services.store.count() == count


def test_bad_files_are_skipped_with_reasons_and_good_ones_kept(small_root, embedder, tmp_path):
    services = services_for(tmp_path / "data", embedder)
    bad = small_root / "bad"
    bad.mkdir()
    (bad / "empty.md").write_text("")
    (bad / "corrupt.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(3000))
    (bad / "binary.md").write_bytes(os.urandom(4000))
    (bad / "slides.pptx").write_bytes(b"PK\x03\x04")
    outside = tmp_path / "secret.md"
    outside.write_text("# Secret\n\nThis must never be indexed because it is outside.\n")
    (bad / "link.md").symlink_to(outside)
    report = run(small_root, services)
    assert report.ok
    assert set(report.skipped) == {
        "bad/empty.md",
        "bad/corrupt.pdf",
        "bad/binary.md",
        "bad/slides.pptx",
        "bad/link.md",
    }
    assert all(reason and "\n" not in reason for reason in report.skipped.values())
    assert "guides/llm-basics.md" in report.indexed


def test_file_that_turns_corrupt_keeps_its_previous_chunks(small_root, embedder, tmp_path):
    services = services_for(tmp_path / "data", embedder)
    run(small_root, services)
    before = stored(services)[PAPER_SOURCE]
    (small_root / "papers" / PAPER).write_bytes(b"%PDF-1.5\ngarbage")
    report = run(small_root, services)
    assert PAPER_SOURCE in report.skipped
    assert stored(services)[PAPER_SOURCE] == before
    assert_consistent(services)


def test_nothing_ingestible_is_not_ok(tmp_path, embedder):
    root = tmp_path / "materials"
    root.mkdir()
    (root / "empty.md").write_text("  \n")
    report = run(root, services_for(tmp_path / "data", embedder))
    assert not report.ok and "empty.md" in report.skipped


def test_second_writer_is_refused_with_a_clear_message(tmp_path):
    with DataDirLock(tmp_path), pytest.raises(DataDirBusy, match="/reingest"):
        DataDirLock(tmp_path).acquire()
    DataDirLock(tmp_path).acquire()  # released again once the first holder is done


class EmbeddingStarted(NoProgress):
    """Progress sink that signals when the ingest starts embedding (mid-run, index dirty)."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def embedding_started(self, total: int) -> None:
        self.event.set()


def test_searches_keep_working_during_an_ingest(small_root, embedder, tmp_path):
    services = services_for(tmp_path / "data", embedder)
    run(small_root, services)
    # Fresh text, so the ingest below does real embedding work while we search.
    words = (small_root / "guides" / "llm-complete-guide.md").read_text().split()
    paragraphs = [" ".join(words[i * 150 : i * 150 + 150]) + f" (variant {i})" for i in range(30)]
    (small_root / "guides" / "extra.md").write_text("# Extra\n\n" + "\n\n".join(paragraphs))
    started = EmbeddingStarted()
    errors: list[BaseException] = []

    def ingest_in_background() -> None:
        try:
            run(small_root, services, progress=started)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    worker = threading.Thread(target=ingest_in_background)
    worker.start()
    assert started.event.wait(60), "the ingest never started embedding"
    searched_mid_ingest = 0
    while worker.is_alive():
        assert services.retriever.search("What is a transformer?", 3)
        searched_mid_ingest += worker.is_alive()
    worker.join()
    assert not errors and searched_mid_ingest >= 1
    assert "guides/extra.md" in stored(services)


def _ingest_process(root: Path, data_dir: Path) -> subprocess.Popen:
    # Small batches and commit groups spread the writes over the whole run.
    env = dict(
        os.environ,
        STUDY_ASSISTANT_EMBEDDING__BATCH_SIZE="8",
        STUDY_ASSISTANT_INGEST__GROUP_CHUNKS="16",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "ingest", str(root), "--data-dir", str(data_dir)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_line(proc: subprocess.Popen, pattern: str) -> None:
    """Read the ingest's progress log until a line matches `pattern`."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if re.search(pattern, line):
            return
    raise AssertionError(f"the ingest ended before printing {pattern!r}")


@pytest.mark.parametrize(
    "kill_after",
    [r"files to process", r"^ingest: 2/"],
    ids=["before-any-commit", "after-two-commits"],
)
def test_sigkill_mid_ingest_leaves_a_consistent_index(small_root, embedder, tmp_path, kill_after):
    data_dir = tmp_path / "data"
    proc = _ingest_process(small_root, data_dir)
    _wait_for_line(proc, kill_after)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    services = services_for(data_dir, embedder)
    if "2/" in kill_after:
        assert len(stored(services)) >= 2 and services.store.is_dirty()
    assert_consistent(services)
    if stored(services):
        assert services.retriever.search("What is attention?", 3)
    report = run(small_root, services)
    assert report.ok
    assert_consistent(services)
    live = stored(services)
    assert len(live) == 6 and not services.store.is_dirty()
    assert services.store.count() == sum(len(ids) for ids in live.values())
