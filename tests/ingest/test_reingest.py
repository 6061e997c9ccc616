"""Gold questions gate re-ingests: index versions built beside the live one, switched only when
no gold question got worse, promoted, rolled back, pruned; never half-built in a search (real
embedder, real embedded Chroma, tiny material folders)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from ingest import reingest as reingest_module
from ingest.pipeline import Target, ingest
from ingest.reingest import ReingestResult, StoredQueryVectors, reingest
from rag.config import Settings, StoreSettings
from rag.index import versions
from rag.index.chroma_store import ChromaStore
from rag.index.embedder import Embedder
from rag.retrieval.gold import judge, load_gold_set, results_from_json
from rag.retrieval.retriever import Retriever
from rag.services import Services, build_services
from tests.conftest import REPO, CountingEmbedder, SameQueryVectors
from tests.ingest.test_pipeline import _wait_for_line
from tests.rag.retrieval.test_lexical import assert_same_index

FILES = {
    "kv-cache.md": "# KV cache\n\nDuring decoding the key-value cache keeps the attention keys and "
    "values of earlier tokens, so each new token attends to them without recomputing them. "
    "PagedAttention stores this cache in fixed-size blocks.\n",
    "lora.md": "# LoRA\n\nLow-rank adaptation freezes the pretrained weights and trains two small "
    "matrices whose product is added to a weight matrix, so fine-tuning updates very few "
    "parameters.\n",
    "tokenizers.md": "# Byte-pair encoding\n\nA byte-pair encoding tokenizer starts from bytes and "
    "repeatedly merges the most frequent adjacent pair into a new vocabulary entry.\n",
}
KV_Q = "Why does decoding keep a key-value cache?"
LORA_Q = "What does LoRA train instead of the full weights?"
BPE_Q = "How does a byte-pair encoding tokenizer build its vocabulary?"
GOLD = f"""
[[question]]
question = "{KV_Q}"
sources = ["kv-cache.md"]
evidence = ["earlier tokens"]

[[question]]
question = "{LORA_Q}"
sources = ["lora.md"]
evidence = ["low-rank"]
"""
NOTES = "# Notes\n\nRead the transformer chapter before the lecture on serving.\n"
ZORBLAX = "# Zorblax\n\nZorblax attention is a made-up variant used only in this test.\n"


def gated_settings(tmp_path: Path, keep: int = 3, files: Sequence[str] = tuple(FILES),
                   **ingest: object) -> Settings:
    """Settings over a materials folder with the gold questions and the tiny files."""
    root = tmp_path / "materials"
    root.mkdir(exist_ok=True)
    for name in files:
        (root / name).write_text(FILES[name])
    (root / "gold_questions.toml").write_text(GOLD)
    return Settings(data_dir=tmp_path / "data", materials_dir=root,
                    store=StoreSettings(keep_versions=keep),
                    ingest={"group_chunks": 1, **ingest})


def ingested(settings: Settings, embedder: Embedder) -> Services:
    """Services over the tiny course, ingested in place (version 0), one file at a time: a
    single Markdown file is parsed in this process, several would start a parse worker."""
    services = build_services(settings, embedder=embedder)
    root = settings.materials_dir
    for name in sorted(FILES):
        if (root / name).exists():
            ingest([Target(root, root / name)], services.store, embedder, settings.ingest)
    return services


def regate(services: Services, embedder: object = None, **kw: object) -> ReingestResult:
    """A re-ingest of the materials folder through the one entry point."""
    return reingest([Target(services.settings.materials_dir)], services.store,
                    embedder or services.embedder, services.settings, **kw)  # type: ignore[arg-type]


def sources(services: Services, question: str) -> set[str]:
    """The files the live version's top 5 passages come from."""
    return {h.chunk.source for h in services.retriever.search(question, 5)}


def no_garbage(services: Services) -> bool:
    """The pool holds exactly the chunks some version lists."""
    store = services.store
    return store.all_chunk_ids() == store.listed_ids(store.known_versions())


@pytest.fixture
def course(tmp_path: Path, embedder: Embedder) -> Services:
    """The tiny course in version 0, then a first gated re-ingest (a new file goes live)."""
    services = ingested(gated_settings(tmp_path), embedder)
    services.retriever.refresh_interval_s = 0.0  # a long-lived retriever, as in the bot
    (services.settings.materials_dir / "notes.md").write_text(NOTES)
    first = regate(services)
    assert first.gate is not None and not first.gate.held
    assert "gold questions" in first.report.skipped["gold_questions.toml"]
    assert services.store.live_version() == first.gate.built == "1"
    return services


def test_a_reingest_that_deletes_a_gold_questions_source_is_held_naming_it(course):
    live = course.store.live_version()
    (course.settings.materials_dir / "lora.md").unlink()
    gate = regate(course).gate
    assert gate is not None and gate.held
    assert [c.before.question for c in gate.regressed] == [LORA_Q]
    assert "no longer in the top k" in gate.regressed[0].why()
    assert course.store.live_version() == live == gate.live_after
    assert "lora.md" in sources(course, LORA_Q)
    held = versions.held(course.store)
    assert held is not None and held.version == gate.built and LORA_Q in held.note


def test_promote_then_rollback(course):
    live = course.store.live_version()
    (course.settings.materials_dir / "lora.md").unlink()
    gate = regate(course).gate
    assert gate is not None and gate.held
    assert versions.promote(course.store).version == gate.built
    assert course.store.live_version() == gate.built
    assert "lora.md" not in sources(course, LORA_Q)  # the same retriever saw the switch
    assert versions.rollback(course.store) == (gate.built, live)
    assert "lora.md" in sources(course, LORA_Q)


def test_nothing_changed_costs_no_version_and_no_embedding(course, counting: CountingEmbedder):
    before = versions.records(course.store)
    result = regate(course, counting)
    assert result.gate is None and counting.texts == 0 and result.report.embedded == 0
    assert versions.records(course.store) == before


def test_a_change_that_keeps_every_gold_question_goes_live_reusing_embeddings(
    course, counting: CountingEmbedder
):
    (course.settings.materials_dir / "zorblax.md").write_text(ZORBLAX)
    result = regate(course, counting)
    assert result.gate is not None and not result.gate.held
    assert course.store.live_version() == result.gate.built
    assert counting.texts == 1 and result.report.chunks_reused == 0
    assert "zorblax.md" in sources(course, "What is Zorblax attention?")
    assert no_garbage(course)


class BlockFirstBatch:
    """The real embedder, stopping at its first call until the test lets it go on."""

    def __init__(self, inner: Embedder) -> None:
        self.inner, self.name = inner, inner.name
        self.blocked, self.go = threading.Event(), threading.Event()

    def embed_documents(
        self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None
    ) -> np.ndarray:
        self.blocked.set()
        assert self.go.wait(60), "the test never let the build go on"
        return self.inner.embed_documents(texts, on_batch)

    def embed_query(self, text: str) -> np.ndarray:
        return self.inner.embed_query(text)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.embed_queries(texts)

    def holds_word(self, word: str) -> bool:
        return self.inner.holds_word(word)


def test_searches_during_a_gated_build_see_only_the_live_version(course, embedder):
    root = course.settings.materials_dir
    (root / "tokenizers.md").unlink()  # removed first, then zorblax.md is embedded
    (root / "zorblax.md").write_text(ZORBLAX)
    live, token = course.store.live_version(), course.store.version()
    registered = [r.version for r in versions.records(course.store)]
    slow = BlockFirstBatch(embedder)
    worker = threading.Thread(target=regate, args=(course, slow))
    worker.start()
    try:
        assert slow.blocked.wait(60), "the build never started embedding"
        # Nothing of the new version is written while it is built: no record, no manifest.
        assert [r.version for r in versions.records(course.store)] == registered
        building = str(int(live) + 1)
        assert not course.store.control.get(where={"manifest_of": building})["ids"]
        # In this process its manifest is in memory, half built.
        assert course.store.pending(building) is not None
        assert "tokenizers.md" not in course.store.at(building).manifest()
        assert "tokenizers.md" in sources(course, BPE_Q)
        assert "zorblax.md" not in sources(course, "What is Zorblax attention?")
        assert course.store.version() == token
    finally:
        slow.go.set()
        worker.join(60)
    assert course.store.live_version() != live
    assert "zorblax.md" in sources(course, "What is Zorblax attention?")
    assert "tokenizers.md" not in sources(course, BPE_Q)


def test_a_crash_before_the_switch_leaves_the_live_version_serving(course, monkeypatch):
    live = course.store.live_version()
    (course.settings.materials_dir / "zorblax.md").write_text(ZORBLAX)

    def crash(*_: object) -> None:
        raise RuntimeError("injected crash")

    monkeypatch.setattr(versions, "switch", crash)
    with pytest.raises(RuntimeError, match="injected"):
        regate(course)
    assert course.store.live_version() == live
    assert "zorblax.md" not in sources(course, "What is Zorblax attention?")
    monkeypatch.undo()
    gate = regate(course).gate
    assert gate is not None and not gate.held
    assert [r.state for r in versions.records(course.store)].count(versions.BUILDING) == 0
    assert no_garbage(course)


def test_a_crash_while_pruning_leaves_the_new_version_serving(course, monkeypatch):
    (course.settings.materials_dir / "zorblax.md").write_text(ZORBLAX)

    def crash(*_: object) -> None:
        raise RuntimeError("injected crash")

    monkeypatch.setattr(versions, "prune", crash)
    with pytest.raises(RuntimeError, match="injected"):
        regate(course)
    assert "zorblax.md" in sources(course, "What is Zorblax attention?")
    monkeypatch.undo()
    (course.settings.materials_dir / "tokenizers.md").unlink()
    assert regate(course).gate is not None
    assert no_garbage(course)


def test_prune_keeps_n_versions(tmp_path, embedder):
    services = ingested(gated_settings(tmp_path, keep=2), embedder)
    note = services.settings.materials_dir / "zorblax.md"
    for round_ in range(4):
        note.write_text(ZORBLAX + f"\nRound {round_} of edits.\n")
        gate = regate(services).gate
        assert gate is not None and not gate.held
    kept = versions.records(services.store)
    assert [r.version for r in kept] == ["3", "4"] and services.store.live_version() == "4"
    assert no_garbage(services)
    assert versions.rollback(services.store) == ("4", "3")
    with pytest.raises(versions.VersionError, match="no earlier version"):
        versions.rollback(services.store)


# Two `study-assistant ingest` runs in one process (one start-up, one model load): kv-cache.md
# alone (version 1 goes live), then the whole folder.
TWO_INGESTS = """
import sys
from cli.app import app
root, data = sys.argv[1:]
for target in (root + "/kv-cache.md", root):
    try:
        app(["ingest", target, "--data-dir", data])
    except SystemExit as done:
        if done.code:
            raise
"""


def test_killing_a_gated_ingest_process_leaves_the_live_version_serving(tmp_path, embedder):
    settings = gated_settings(tmp_path)
    root = settings.materials_dir
    for i in range(3):  # several chunks each: the build is still embedding when it is killed
        paragraphs = [f"Paragraph {j} of extra file {i}: " + " ".join(
            f"word{i}x{j}x{w}" for w in range(60)) for j in range(8)]
        (root / f"extra-{i}.md").write_text(f"# Extra {i}\n\n" + "\n\n".join(paragraphs))
    for name in ("lora.md", "tokenizers.md"):
        (root / name).unlink()
    env = dict(os.environ, STUDY_ASSISTANT_MATERIALS_DIR=str(root),
               STUDY_ASSISTANT_INGEST__GROUP_CHUNKS="1", STUDY_ASSISTANT_EMBEDDING__BATCH_SIZE="1",
               OMP_NUM_THREADS="1")  # a shared machine: torch threads would fight the tests'
    proc = subprocess.Popen([sys.executable, "-c", TWO_INGESTS, str(root), str(settings.data_dir)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    _wait_for_line(proc, r"^ingest: 1/3 ")  # one file committed into version 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    services = build_services(settings, embedder=embedder)  # opened only now: sees it all
    assert services.store.live_version() == "1"
    assert set(services.store.manifest()) == {"kv-cache.md"}
    # The killed build registered nothing: its chunks are garbage until the next write.
    assert [r.version for r in versions.records(services.store)] == ["0", "1"]
    assert not no_garbage(services)
    assert "kv-cache.md" in sources(services, KV_Q)
    for i in (1, 2):  # (one file left to parse: no parse worker in this process)
        (root / f"extra-{i}.md").unlink()
    gate = regate(services).gate
    assert gate is not None and gate.live_after == gate.built != "1"
    assert set(services.store.manifest()) == {"kv-cache.md", "extra-0.md"}
    assert no_garbage(services)


def test_the_live_versions_gold_results_are_reused_until_the_gold_set_changes(
    course, monkeypatch
):
    measured: list[str] = []
    real = reingest_module._evaluate

    def counting(gold, store, embedder, settings):  # type: ignore[no-untyped-def]
        measured.append(store.bound_version)
        return real(gold, store, embedder, settings)

    monkeypatch.setattr(reingest_module, "_evaluate", counting)
    root = course.settings.materials_dir
    (root / "zorblax.md").write_text(ZORBLAX)
    first = regate(course).gate
    assert first is not None and measured == [first.built]  # the live side came from storage
    (root / "gold_questions.toml").write_text(GOLD.replace("earlier tokens", "keys and values"))
    (root / "zorblax.md").unlink()
    second = regate(course).gate
    assert second is not None and measured[1:] == [second.built, first.built]


def test_gold_questions_are_embedded_once_per_text(course, counting: CountingEmbedder):
    root = course.settings.materials_dir
    (root / "zorblax.md").write_text(ZORBLAX)
    regate(course, counting)
    assert counting.queries == 0  # stored by the fixture's first gated re-ingest
    (root / "gold_questions.toml").write_text(GOLD.replace(KV_Q, KV_Q.replace("Why", "Why ever")))
    (root / "zorblax.md").unlink()
    regate(course, counting)
    assert counting.queries == 1


def test_batched_searches_equal_single_ones(course):
    questions = [KV_Q, LORA_Q, BPE_Q]
    batched = course.retriever.search_many(questions, 3)
    for question, hits in zip(questions, batched, strict=True):
        single = course.retriever.search(question, 3)
        assert [h.chunk for h in hits] == [h.chunk for h in single]
        assert [h.score for h in hits] == pytest.approx([h.score for h in single], abs=1e-5)


def test_the_new_versions_lexical_index_is_derived_and_equals_a_scratch_build(
    tmp_path, small_root, embedder, monkeypatch
):
    (small_root / "gold_questions.toml").write_text(
        '[[question]]\nquestion = "What is scaled dot-product attention?"\n'
        'sources = ["papers/attention_is_all_you_need.pdf"]\n')
    settings = Settings(data_dir=tmp_path / "data", materials_dir=small_root,
                        store=StoreSettings(keep_versions=2))
    services = build_services(settings, embedder=embedder)
    assert regate(services).gate is not None  # version 1: its lexical index built from scratch
    before = services.store.listed_ids([services.store.live_version()])
    with (small_root / "guides/week2-support-guide.md").open("a", encoding="utf-8") as fh:
        fh.write("\n\n## Review\n\nRevise attention and the KV cache before the quiz.\n")
    retitled = small_root / "guides/llm-basics.md"
    retitled.write_text("# LLM basics, revised\n" + retitled.read_text().split("\n", 1)[1])
    read: list[str] = []
    real = ChromaStore.iter_chunks

    def spy(store: ChromaStore, ids: Sequence[str]):  # type: ignore[no-untyped-def]
        read.extend(ids)
        return real(store, ids)

    monkeypatch.setattr(ChromaStore, "iter_chunks", spy)
    gate = regate(services).gate
    assert gate is not None and gate.live_after == gate.built
    after = services.store.listed_ids([gate.built])
    assert set(read) == after - before and 0 < len(read) < len(after) / 5  # only new chunks
    fresh = build_services(settings, embedder=embedder)  # a new process's view: scratch build
    questions = ["What is scaled dot-product attention?", "week 2 review of the KV cache",
                 "What are LLM basics?", "multi-head atention"]
    assert fresh.retriever.search_many(questions) == services.retriever.search_many(questions)
    assert set(read) == after  # the fresh retriever did read every chunk back
    assert_same_index(services.store.lexical_indexes[0], fresh.store.lexical_indexes[0])


def test_the_gate_judges_each_gold_question_as_if_it_were_searched_alone(
    tmp_path, small_root, embedder
):
    shutil.copy(REPO / "eval" / "gold_questions_shared.toml", small_root / "gold_questions.toml")
    settings = Settings(data_dir=tmp_path / "data", materials_dir=small_root,
                        store=StoreSettings(keep_versions=2))
    services = build_services(settings, embedder=embedder)
    gate = regate(services).gate
    assert gate is not None and gate.live_after == gate.built
    record = versions.record_of(services.store, gate.built)
    gold = load_gold_set(small_root / "gold_questions.toml", settings.retrieval.k)
    assert record is not None and gold is not None and len(gold.questions) > 5
    # Searched one by one, with the vectors the gate searched with (kept in the index).
    vectors = SameQueryVectors(StoredQueryVectors(embedder, services.store))  # type: ignore[arg-type]
    alone = Retriever(services.store.at(gate.built), vectors, settings.retrieval)  # type: ignore[arg-type]
    alone.search_many([q.question for q in gold.questions], gold.k, preview=True)  # loads them
    each = [judge(q, alone.search(q.question, gold.k, preview=True)) for q in gold.questions]
    assert results_from_json(record.gold) == each
    assert any(r.passed for r in each) and any(r.rank is None for r in each)


class CountingWrites:
    """The store's control collection, counting the writes made through it."""

    def __init__(self, inner: object) -> None:
        self.inner, self.writes = inner, []

    def __getattr__(self, name: str) -> object:
        attr = getattr(self.inner, name)
        if name in ("upsert", "add", "update", "delete"):
            def counted(*args: object, **kwargs: object) -> object:
                self.writes.append(name)
                return attr(*args, **kwargs)
            return counted
        return attr


def test_a_version_is_written_once_with_its_manifest_and_dropped_in_one_write(tmp_path, embedder):
    services = ingested(gated_settings(tmp_path, keep=1), embedder)
    store = services.store
    (services.settings.materials_dir / "notes.md").write_text(NOTES)
    assert regate(services).gate is not None  # version 1 live; version 0 pruned
    counting = CountingWrites(store.control)
    store.control = counting  # type: ignore[assignment]
    (services.settings.materials_dir / "notes.md").write_text(NOTES + "\nA second paragraph.\n")
    gate = regate(services).gate
    assert gate is not None and gate.live_after == gate.built == "2"
    # One upsert makes version 2 (record, manifest, pointer); one delete drops version 1.
    assert counting.writes == ["upsert", "delete"]
    names = {c.name for c in store.client.list_collections()}
    assert not any("__manifest__v" in n for n in names)
    fresh = build_services(services.settings, embedder=embedder).store
    assert fresh.manifest() == store.manifest() and set(fresh.manifest()) == {*FILES, "notes.md"}
    assert [r.version for r in versions.records(fresh)] == ["2"]
    assert no_garbage(services)


def test_a_data_dir_with_a_version_collection_of_its_own_is_read_and_pruned(tmp_path, embedder):
    """Data dirs made before manifests moved into the control collection keep working."""
    settings = gated_settings(tmp_path, keep=1)
    services = ingested(settings, embedder)
    store = services.store
    base = store.manifest()
    # Version 1 as older releases stored it: a manifest collection of its own, then live.
    old = store.client.get_or_create_collection(f"{store.collection}__manifest__v1",
                                                embedding_function=None)
    got = store.manifest_of("0").get(include=["documents", "metadatas"])
    old.upsert(ids=got["ids"], embeddings=[[1.0]] * len(got["ids"]), documents=got["documents"],
               metadatas=got["metadatas"])
    versions._write(store, versions.VersionRecord("1", versions.READY, 1.0, "0", files=len(base)),
                    ("__live__", "", {"kind": "pointer", "version": "1", "switched_at": 1.0}))
    reopened = build_services(settings, embedder=embedder)
    assert reopened.store.live_version() == "1" and reopened.store.manifest() == base
    assert "kv-cache.md" in sources(reopened, KV_Q)
    (settings.materials_dir / "notes.md").write_text(NOTES)
    gate = regate(reopened).gate
    assert gate is not None and gate.live_after == gate.built == "2"
    assert "1" in gate.pruned
    names = {c.name for c in reopened.store.client.list_collections()}
    assert f"{store.collection}__manifest__v1" not in names
    assert set(reopened.store.manifest()) == {*FILES, "notes.md"}
    assert no_garbage(reopened)
