"""Server mode for real: a `chroma run` server, the real embedder, the real pipeline, CLI and
bot, including outages (killed, frozen, restarted) and an ingest running in another process."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from rag.answering.assistant import Answer
from rag.config import Settings, StoreSettings
from rag.index import versions
from rag.index.chroma_store import (
    ChromaStore,
    StoreBusy,
    StoreUnavailable,
    WriterLease,
    make_client,
)
from rag.index.documents import Chunk, Hit
from rag.index.embedder import Embedder
from rag.llm.registry import ModelRegistry
from rag.retrieval.retriever import Retriever
from rag.services import Services, build_services
from tests.bot.conftest import FAST_LLM, make_harness  # noqa: F401  (the bot harness fixture)
from tests.bot.fake_discord import Person
from tests.conftest import PAPER, REPO, run, services_for
from tests.deploy.conftest import ChromaServer, free_port
from tests.ingest.test_reingest import (
    LORA_Q,
    NOTES,
    gated_settings,
    ingested,
    regate,
    sources,
)

QUESTIONS = (
    "What is attention in a Transformer?",
    "How is a large language model pre-trained and then fine-tuned?",
    "What does the week 2 support guide recommend?",
    "multi-head attention positional encoding",
)
OUT_OF_SCOPE = "Who painted the Mona Lisa?"
STUDENT = Person(1001, "ana")
EDITED = "guides/week2-support-guide.md"
ADDED = "guides/week2-support-guide.md"
RETITLED = "guides/llm-complete-guide.md"
EXTRA = "\n\n## Office hours on Chroma\n\nThe Chroma server keeps the course index for the bot.\n"


def server_settings(chroma: ChromaServer, data_dir: Path, **overrides: object) -> Settings:
    """Settings that point at the test server, in a collection of the test's own."""
    store = StoreSettings(host=chroma.host, port=chroma.port,
                          collection=f"t{uuid.uuid4().hex[:12]}")
    return Settings(data_dir=data_dir, store=store, **overrides)


def server_services(chroma: ChromaServer, data_dir: Path, embedder: Embedder) -> Services:
    """Services over the test server, built by the one composition root."""
    return build_services(server_settings(chroma, data_dir), embedder=embedder)


def guides_root(small_root: Path) -> Path:
    """The small corpus without its paper: the guides only (fast to ingest)."""
    (small_root / "papers" / PAPER).unlink()
    return small_root


def where(hits: list[Hit]) -> list[tuple[str, int | None, str, int]]:
    """What a result list cites, in order."""
    return [(h.chunk.source, h.chunk.page, h.chunk.section, h.chunk.start) for h in hits]


def ids_by_source(services: Services) -> dict[str, tuple[str, ...]]:
    """The manifest: each file's live chunk ids."""
    return {s: e.chunk_ids for s, e in services.store.manifest().items()}


def test_search_through_the_server_equals_the_embedded_store(
    chroma, small_root, embedder, tmp_path
):
    remote = server_services(chroma, tmp_path / "remote", embedder)
    local = services_for(tmp_path / "local", embedder)
    assert remote.store.server == chroma.address and local.store.server is None
    for services in (remote, local):
        report = run(small_root, services)
        assert report.ok and not report.skipped and len(report.indexed) == 6
    assert not (tmp_path / "remote" / "chroma").exists()  # nothing went to an embedded store
    assert ids_by_source(remote) == ids_by_source(local)
    for question in QUESTIONS:
        over_http = remote.retriever.search(question, 5)
        embedded = local.retriever.search(question, 5)
        assert where(over_http) == where(embedded), question
        assert [h.score for h in over_http] == pytest.approx([h.score for h in embedded], abs=1e-5)


def test_reingest_through_the_server_touches_only_what_changed(
    chroma, small_root, counting, tmp_path
):
    services = server_services(chroma, tmp_path / "data", counting.inner)
    run(small_root, services)
    first = ids_by_source(services)

    counting.texts = 0
    again = run(small_root, services, counting)
    assert counting.texts == 0 and len(again.plan.unchanged) == 6 and again.chunks_added == 0

    with (small_root / EDITED).open("a", encoding="utf-8") as fh:
        fh.write(EXTRA)
    edited = run(small_root, services, counting)
    after = ids_by_source(services)
    assert [f.source for f in edited.plan.changed] == [EDITED]
    assert counting.texts == edited.chunks_added > 0
    assert {s: ids for s, ids in after.items() if s != EDITED} == {
        s: ids for s, ids in first.items() if s != EDITED
    }
    hits = services.retriever.search("Office hours on the Chroma server", 3)
    assert hits[0].chunk.source == EDITED and "Chroma server keeps" in hits[0].chunk.text

    (small_root / "guides" / "llm-basics.md").unlink()
    removed = run(small_root, services, counting)
    assert removed.plan.removed == ["guides/llm-basics.md"]
    assert "guides/llm-basics.md" not in services.store.manifest()
    assert services.store.existing_ids(first["guides/llm-basics.md"]) == set()
    cited = {h.chunk.source for q in QUESTIONS for h in services.retriever.search(q, 5)}
    assert "guides/llm-basics.md" not in cited


def test_a_killed_server_gives_a_typed_error_and_search_recovers_after_restart(
    chroma, small_root, embedder, tmp_path
):
    services = server_services(chroma, tmp_path / "data", embedder)
    run(guides_root(small_root), services)
    before = services.retriever.search(QUESTIONS[0], 5)

    chroma.stop()
    with pytest.raises(StoreUnavailable, match=chroma.address):
        services.retriever.search(QUESTIONS[0], 5)
    with pytest.raises(StoreUnavailable, match="not reachable"):
        asyncio.run(services.assistant.answer(OUT_OF_SCOPE))

    chroma.start()  # same path, same port; our process and its client are not rebuilt
    assert where(services.retriever.search(QUESTIONS[0], 5)) == where(before)
    answer = asyncio.run(services.assistant.answer(OUT_OF_SCOPE))
    assert answer.refused and answer.retrieved


def test_a_frozen_server_times_out_with_a_typed_error(chroma, small_root, embedder, tmp_path):
    settings = server_settings(chroma, tmp_path / "data")
    store = ChromaStore(make_client(settings, timeout_s=1.0), settings.store.collection,
                        embedder.name)
    version = store.version()
    chroma.pause()
    try:
        began = time.monotonic()
        with pytest.raises(StoreUnavailable, match="did not answer in time"):
            store.version()
        assert time.monotonic() - began < 5
    finally:
        chroma.resume()
    assert store.version() == version


@pytest.mark.parametrize("command", ["search", "ask"])
def test_the_cli_prints_one_clear_line_when_the_server_is_down(command, tmp_path):
    port = free_port()  # nothing listens there
    env = {"STUDY_ASSISTANT_STORE__HOST": "127.0.0.1", "STUDY_ASSISTANT_STORE__PORT": str(port),
           "STUDY_ASSISTANT_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(app, [command, "What is attention?"], env=env)
    text = " ".join(result.output.split())  # rich wraps long lines at the runner's width
    assert result.exit_code == 1, result.output
    assert text.startswith("error:") and f"127.0.0.1:{port}" in text
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


async def test_the_bot_says_the_index_is_unreachable_then_answers_after_restart(
    chroma, make_harness, small_root, embedder, llm_cache_dir, tmp_path  # noqa: F811
):
    settings = server_settings(chroma, tmp_path / "data", llm=FAST_LLM)
    services = build_services(settings, embedder=embedder,
                              models=ModelRegistry(FAST_LLM, llm_cache_dir))
    run(guides_root(small_root), services)
    # One turn a minute (three for /sources): a command the index failed got only the error,
    # so it gives its turn back, and the commands after the restart still run.
    harness = await make_harness(services, rate_burst=1, rate_per_minute=1)

    chroma.stop()
    for command, options in [("sources", {"query": "attention"})] * 4 + [
            ("ask", {"question": OUT_OF_SCOPE})] * 2:
        token = harness.command(command, STUDENT, **options)
        await harness.settle()  # one after the other: each ends before the next is asked
        reply = harness.for_token(token)[-1].payload
        assert "index is not reachable right now" in reply["content"], reply
        # Told privately (the public "thinking…" is removed), without any passage.
        assert reply["flags"] & 64 and not reply.get("embeds")
        assert "httpx" not in reply["content"]

    chroma.start()
    sources = harness.command("sources", STUDENT, query="attention")
    ask = harness.command("ask", STUDENT, question=OUT_OF_SCOPE)
    await harness.settle()
    assert harness.for_token(sources)[-1].payload["embeds"][0]["title"] == "Passages for: attention"
    assert harness.bot.questions.rows()[0]["abstained"] == 1  # answered (by abstaining)
    assert harness.fake.originals[ask]["embeds"]


def test_a_second_ingest_is_refused_while_another_holds_the_writer_lease(
    chroma, small_root, embedder, tmp_path
):
    settings = server_settings(chroma, tmp_path / "a")
    first = build_services(settings, embedder=embedder)
    second = build_services(settings.model_copy(update={"data_dir": tmp_path / "b"}),
                            embedder=embedder)  # another process: its own client
    root = guides_root(small_root)
    with first.store.writer_lease():
        with pytest.raises(StoreBusy, match=rf"pid {os.getpid()} .* running for"):
            run(root, second)
        assert second.store.manifest() == {} and second.store.count() == 0
    assert run(root, second).ok and len(second.store.manifest()) == 5


def test_the_lease_of_a_killed_ingest_lapses(chroma, small_root, embedder, tmp_path):
    services = server_services(chroma, tmp_path / "data", embedder)
    root = guides_root(small_root)
    WriterLease(services.store, ttl_s=2.0).acquire()  # taken, then never renewed nor released
    lapses_at = time.monotonic() + 2.0
    with pytest.raises(StoreBusy, match="lapses in"):
        run(root, services)
    time.sleep(max(0.0, lapses_at - time.monotonic()) + 0.2)
    assert run(root, services).ok and len(services.store.manifest()) == 5


def test_a_running_ingests_lease_is_renewed_past_its_lifetime(chroma, embedder, tmp_path):
    services = server_services(chroma, tmp_path / "data", embedder)
    rival = WriterLease(services.store)
    with services.store.writer_lease(ttl_s=1.0):
        time.sleep(2.5)  # two and a half lifetimes
        with pytest.raises(StoreBusy):
            rival.acquire()
    rival.acquire()  # released on exit: free at once
    rival.release()


def test_searches_during_an_ingest_in_another_process_only_see_whole_files(
    chroma, small_root, embedder, tmp_path
):
    settings = server_settings(chroma, tmp_path / "data")
    services = build_services(settings, embedder=embedder)
    root = guides_root(small_root)
    added = root / ADDED
    shutil.move(added, tmp_path / added.name)
    run(root, services)
    old = ids_by_source(services)
    # The ingest commits the small added guide first, then spends seconds re-embedding the big
    # one (a new title renames every section): searches meanwhile see the middle state too.
    shutil.move(tmp_path / added.name, added)
    big = root / RETITLED
    big.write_text("# The Complete LLM Guide\n" + big.read_text(encoding="utf-8").split("\n", 1)[1])
    retriever = Retriever(services.store, embedder, settings.retrieval, refresh_interval_s=0.0)

    log = tmp_path / "ingest.log"
    proc = _ingest_process(root, settings, log)
    seen, answers = _search_while(proc, retriever, services)
    assert proc.wait(timeout=120) == 0, log.read_text()
    seen.append(_observe(retriever, QUESTIONS[0]))
    new = ids_by_source(services)
    assert set(new) == set(old) | {ADDED}
    assert not set(new[RETITLED]) & set(old[RETITLED])  # every chunk of it was replaced

    totals = _consistent_totals(old, new)
    for _, live, chunks in seen:
        assert live in totals, f"{live} live chunks: some file is half-indexed"
        for chunk in chunks:
            assert chunk.id in old.get(chunk.source, ()) + new.get(chunk.source, ()), chunk.source
    assert seen[0][1] == sum(map(len, old.values())) and seen[-1][1] == sum(map(len, new.values()))
    # The searches really ran across both commits: old, added guide only, then both files.
    assert len({version for version, _, _ in seen}) == 3
    assert answers and all(a.refused and a.retrieved for a in answers)


def _ingest_process(root: Path, settings: Settings, log: Path) -> subprocess.Popen:
    """`study-assistant ingest` in another process, configured by the environment only."""
    env = dict(
        os.environ,
        STUDY_ASSISTANT_STORE__HOST=str(settings.store.host),
        STUDY_ASSISTANT_STORE__PORT=str(settings.store.port),
        STUDY_ASSISTANT_STORE__COLLECTION=settings.store.collection,
        STUDY_ASSISTANT_DATA_DIR=str(settings.data_dir),
        # One file per commit group, so the two files go live at different moments.
        STUDY_ASSISTANT_EMBEDDING__BATCH_SIZE="8",
        STUDY_ASSISTANT_INGEST__GROUP_CHUNKS="1",
        # One torch thread: on a small, shared machine, the ingest's and the searches' thread
        # pools would otherwise fight over the same cores and slow both down many times over.
        OMP_NUM_THREADS="1",
    )
    command = [str(Path(sys.executable).with_name("study-assistant")), "ingest", str(root)]
    with log.open("w") as out:  # a file, not a pipe: a full pipe would stall the ingest
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


Observation = tuple[str, int, list[Chunk]]


def _observe(retriever: Retriever, question: str) -> Observation:
    """One search: the index version, how many chunks were live, and the chunks returned."""
    hits = retriever.search(question, 5)
    return retriever.store.version(), retriever.live_count(), [h.chunk for h in hits]


def _search_while(
    proc: subprocess.Popen, retriever: Retriever, services: Services
) -> tuple[list[Observation], list[Answer]]:
    """Search (and now and then, answer) until the ingest process ends; all must succeed."""
    seen: list[Observation] = []
    answers: list[Answer] = []
    for question in itertools.cycle(QUESTIONS):
        if proc.poll() is not None:
            return seen, answers
        seen.append(_observe(retriever, question))
        time.sleep(0.2)  # leave the ingest process a core
        if len(seen) % 20 == 1:
            answers.append(asyncio.run(services.assistant.answer(OUT_OF_SCOPE)))
    raise AssertionError("unreachable")


def _consistent_totals(old: dict[str, tuple[str, ...]], new: dict[str, tuple[str, ...]]) -> set:
    """Every live-chunk count possible when each file is wholly at its old or new version."""
    choices = [{len(old.get(s, ())), len(new.get(s, ()))} for s in set(old) | set(new)]
    return {sum(combo) for combo in itertools.product(*choices)}


def test_a_gated_reingest_on_the_server_switches_another_clients_searches(
    chroma, embedder, tmp_path
):
    base = gated_settings(tmp_path)
    store = StoreSettings(host=chroma.host, port=chroma.port,
                          collection=f"t{uuid.uuid4().hex[:12]}")
    writer = ingested(base.model_copy(update={"store": store}), embedder)
    reader = build_services(base.model_copy(update={"store": store, "data_dir": tmp_path / "b"}),
                            embedder=embedder)  # another process: its own client
    reader.retriever.refresh_interval_s = 0.0
    (base.materials_dir / "notes.md").write_text(NOTES)
    first = regate(writer).gate
    assert first is not None and not first.held
    assert "lora.md" in sources(reader, LORA_Q)
    (base.materials_dir / "lora.md").unlink()
    gate = regate(writer).gate
    assert gate is not None and [c.before.question for c in gate.regressed] == [LORA_Q]
    assert "lora.md" in sources(reader, LORA_Q)  # held: the live version stays
    versions.promote(writer.store)
    assert "lora.md" not in sources(reader, LORA_Q)
    assert versions.rollback(writer.store) == (gate.built, first.built)
    assert "lora.md" in sources(reader, LORA_Q)
    assert not (tmp_path / "data" / "chroma").exists()
