"""Re-ingest bookkeeping without a model: one at a time, and the summary's contents."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import ReingestRunning, friendly_message
from bot.ingesting import IngestStatus, Reingester, StatusProgress, report_embed
from bot.limits import payload_problems
from ingest.pipeline import IngestPlan, IngestReport, SourceFile


def source(name: str) -> SourceFile:
    return SourceFile(name, Path(name), Path("."), 10, "h")


def test_only_one_reingest_at_a_time():
    reingester = Reingester(services=None)  # type: ignore[arg-type]
    with reingester.claim():
        assert reingester.running
        with pytest.raises(ReingestRunning) as refused, reingester.claim():
            pass
        assert "already running" in friendly_message(refused.value)
    assert not reingester.running


async def test_run_outside_a_claim_is_a_programming_error():
    with pytest.raises(RuntimeError):
        await Reingester(services=None).run([])  # type: ignore[arg-type]


def test_progress_lines_follow_the_pipeline_callbacks():
    status = IngestStatus()
    progress = StatusProgress(status)
    assert status.line() == "Scanning the materials…"
    progress.files_started(3)
    progress.embedding_started(100)
    progress.embedded(64)
    progress.file_done("guides/a.md")
    assert status.line() == "Files 1/3 · embedding 64/100 chunks · guides/a.md"


def test_summary_lists_changes_and_skipped_files_with_reasons():
    plan = IngestPlan(added=[source("new.md"), source("empty.md")], changed=[source("c.md")],
                      unchanged=[source("u.md")] * 3, removed=["gone.pdf"])
    report = IngestReport(plan, chunks_added=12, skipped={"empty.md": "empty file"}, seconds=1.5)
    embed = report_embed(report)
    fields = {f.name: f.value for f in embed.fields}
    assert fields["Added (1)"] == "new.md" and fields["Changed (1)"] == "c.md"
    assert fields["Removed (1)"] == "gone.pdf" and fields["Unchanged"] == "3"
    assert fields["Skipped (1)"] == "empty.md: empty file"
    assert payload_problems({"embeds": [embed.to_dict()]}) == []


def test_a_huge_summary_stays_within_the_limits():
    plan = IngestPlan(added=[source(f"papers/{'x' * 80}{i}.pdf") for i in range(300)])
    skipped = {f"bad{i}.pdf": "corrupt PDF " * 5 for i in range(300)}
    embed = report_embed(IngestReport(plan, skipped=skipped))
    assert payload_problems({"embeds": [embed.to_dict()]}) == []


def test_a_held_summary_of_a_reorganised_folder_stays_within_the_message_total():
    from ingest.reingest import GateReport, ReingestResult
    from rag.retrieval.gold import GoldChange, GoldResult

    def files(kind: str) -> list[SourceFile]:
        return [source(f"{kind}/{'x' * 60}{i}.md") for i in range(40)]

    plan = IngestPlan(added=files("new"), changed=files("changed"),
                      removed=[f"old/{'y' * 60}{i}.md" for i in range(40)])
    skipped = {f"bad{i}.pdf": "corrupt PDF " * 5 for i in range(40)}
    scheduled = {f.source: 1.8e9 for f in files("week9")}
    report = IngestReport(plan, skipped=skipped, scheduled=scheduled)
    worse = [GoldChange(GoldResult(f"Gold question {i} " + "q" * 80, 1, (), ()),
                        GoldResult(f"Gold question {i}", None, (), ())) for i in range(40)]
    gate = GateReport(Path("gold.toml"), "1", "2", "1", changes=worse)
    embed = report_embed(ReingestResult(report, gate))
    assert payload_problems({"embeds": [embed.to_dict()]}) == []
