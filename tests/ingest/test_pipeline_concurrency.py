"""Ingests that overlap inside one process, and a manifest that lists chunks the store lost:
the index stays consistent and repairs itself (real embedder, real Chroma)."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from rag.index.chroma_store import ManifestEntry, MissingChunks
from rag.index.embedder import Embedder
from tests.conftest import run, services_for
from tests.ingest.test_pipeline import assert_consistent, stored

GUIDE = "guides/llm-basics.md"


@pytest.fixture
def small_root(tmp_path: Path, shared_materials: Path) -> Path:
    """Two real guides (Markdown only: quick to ingest again and again)."""
    root = tmp_path / "materials"
    (root / "guides").mkdir(parents=True)
    for name in ("llm-basics.md", "week2-support-guide.md"):
        shutil.copy(shared_materials / "guides" / name, root / "guides" / name)
    return root


class GatedEmbedder:
    """The real embedder behind a gate the test opens: an ingest that lasts as long as the
    test needs (the embedder is a dependency here; the pipeline is under test)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.gate = threading.Event()
        self.entered = threading.Event()

    def embed_documents(
        self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None
    ) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(60), "the test never opened the gate"
        return self.inner.embed_documents(texts, on_batch)

    def embed_query(self, text: str) -> np.ndarray:
        return self.inner.embed_query(text)


def test_a_manifest_record_is_never_committed_for_chunks_the_store_lacks(
    small_root, embedder, tmp_path
):
    services = services_for(tmp_path / "data", embedder)
    run(small_root, services)
    before = stored(services)
    with pytest.raises(MissingChunks):
        services.store.commit_file(ManifestEntry(GUIDE, "h", ("no-such-chunk",), "root"))
    assert stored(services) == before


def test_an_ingest_repairs_a_file_whose_chunks_went_missing(small_root, embedder, tmp_path):
    services = services_for(tmp_path / "data", embedder)
    run(small_root, services)
    lost = sorted(stored(services)[GUIDE])[:3]
    services.store.chunks.delete(ids=lost)  # what an overlapping ingest's clean-up once did
    report = run(small_root, services)
    assert report.embedded == len(lost)
    assert_consistent(services)
    assert report.plan.repaired == [GUIDE]


def test_two_ingests_in_one_process_run_one_after_the_other(small_root, embedder, tmp_path):
    services = services_for(tmp_path / "data", embedder)
    run(small_root, services)
    (small_root / "guides" / "zorblax.md").write_text(
        "# Zorblax\n\nZorblax attention is a made-up variant used only in this test.\n")
    gated = GatedEmbedder(embedder)
    first = threading.Thread(target=run, args=(small_root, services, gated))
    first.start()
    assert gated.entered.wait(60), "the first ingest never started embedding"
    second_done = threading.Event()

    def second() -> None:
        run(small_root, services)
        second_done.set()

    threading.Thread(target=second).start()
    assert not second_done.wait(1.0), "the second ingest ran while the first was writing"
    gated.gate.set()
    first.join(60)
    assert second_done.wait(60)
    assert "guides/zorblax.md" in stored(services)
    assert_consistent(services)
