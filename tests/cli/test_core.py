"""The command line, driven in-process through Typer's runner on real indexes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from cli.core import PlainIngestProgress

runner = CliRunner()


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, shared_materials: Path) -> Path:
    """A data dir holding the real guides, ingested through the CLI."""
    data = tmp_path_factory.mktemp("cli") / "data"
    result = runner.invoke(
        app, ["ingest", str(shared_materials / "guides"), "--data-dir", str(data)]
    )
    assert result.exit_code == 0, result.output
    return data


def test_ingest_prints_a_summary_and_rerun_changes_nothing(indexed, shared_materials):
    result = runner.invoke(
        app, ["ingest", str(shared_materials / "guides"), "--data-dir", str(indexed)]
    )
    assert result.exit_code == 0
    assert "unchanged │     5" in result.output and "0 embedded" in result.output


def test_dry_run_shows_the_plan(indexed, tmp_path, shared_materials):
    root = tmp_path / "guides"
    shutil.copytree(shared_materials / "guides", root)
    (root / "llm-basics.md").unlink()
    result = runner.invoke(
        app, ["ingest", str(root), "--dry-run", "--data-dir", str(tmp_path / "d")]
    )
    assert result.exit_code == 0 and "dry run" in result.output
    assert "added     │     4" in result.output


def test_ingest_exits_non_zero_only_when_nothing_could_be_ingested(tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    (root / "empty.md").write_text("")
    (root / "bad.pdf").write_bytes(b"%PDF-1.4 nonsense")
    result = runner.invoke(app, ["ingest", str(root), "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 1
    assert "empty.md" in result.output and "bad.pdf" in result.output
    assert "Traceback" not in result.output


def test_ingest_of_a_missing_path_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["ingest", str(tmp_path / "nope"), "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "No such file or folder" in result.output


def test_a_newline_in_a_file_name_keeps_the_progress_log_one_line_per_file(capsys):
    progress = PlainIngestProgress()
    progress.files_started(1)
    progress.file_done("notes\ningest: 9/9 forged.md")
    assert capsys.readouterr().err.splitlines() == [
        "ingest: 1 files to process",
        "ingest: 1/1 notes\\ningest: 9/9 forged.md",
    ]


def test_search_json_has_the_documented_shape(indexed):
    args = ["search", "What is a Transformer?", "--k", "3", "--json", "--data-dir", str(indexed)]
    result = runner.invoke(app, args, env={"STUDY_ASSISTANT_RETRIEVAL__LEXICAL_EXTRA": "0"})
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["question"] == "What is a Transformer?" and len(data["results"]) == 3
    # By default BM25's best follows the k when fusion left it out.
    default = json.loads(runner.invoke(app, args).stdout)["results"]
    assert default[:3] == data["results"] and len(default) <= 4
    assert set(data["results"][0]) == {"source", "page", "section", "score", "text"}
    assert data["results"][0]["source"].endswith(".md")


def test_ask_json_carries_the_style_and_each_sentences_citation_and_verdict(indexed):
    result = runner.invoke(
        app, ["ask", "What is a Transformer, in simple terms?", "--json", "--data-dir",
              str(indexed)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["style"] == "extractive" and data["made"] == "quoted from the materials"
    assert data["sentences"] and all(
        s["verdict"] == "quoted" and isinstance(s["citation"], int) and s["shown"]
        for s in data["sentences"]
    )
    # Each [n] of the text resolves through `citations` by its number, not its position.
    numbers = {c["number"]: c for c in data["citations"]}
    for s in data["sentences"]:
        cited = numbers[s["citation"]]
        assert cited["source"] == data["retrieved"][s["citation"] - 1]["source"]
    assert set(map(int, re.findall(r"\[(\d+)\]", data["answer"]))) <= set(numbers)


def test_ask_says_how_the_answer_was_made_and_rejects_an_unknown_style(indexed):
    ok = runner.invoke(app, ["ask", "What is attention?", "--data-dir", str(indexed)])
    assert ok.exit_code == 0 and "smollm2 · quoted from the materials · " in ok.output
    bad = runner.invoke(app, ["ask", "What is attention?", "--style", "poem", "--data-dir",
                              str(indexed)])
    assert bad.exit_code == 1 and "Unknown answer style 'poem'" in bad.output
    assert "Traceback" not in bad.output


def test_search_batch_reads_stdin_and_reports_bad_lines(indexed):
    lines = "\n".join(
        [
            json.dumps({"question": "What is attention?"}),
            json.dumps({"nope": 1}),
            json.dumps({"question": "What is fine-tuning?"}),
        ]
    )
    result = runner.invoke(
        app, ["search", "--batch", "-", "--k", "2", "--data-dir", str(indexed)], input=lines
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r.get("question") for r in rows] == ["What is attention?", None, "What is fine-tuning?"]
    assert rows[1]["error"] and len(rows[0]["results"]) == 2


def test_search_on_an_empty_data_dir_says_to_ingest_first(tmp_path):
    result = runner.invoke(app, ["search", "anything", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "study-assistant ingest" in result.output


def test_empty_question_is_refused(indexed):
    result = runner.invoke(app, ["search", "   ", "--data-dir", str(indexed)])
    assert result.exit_code == 1 and "empty" in result.output


def test_chat_handles_commands_and_bad_input_without_a_traceback(indexed):
    session = "/help\n/model\n/model nope\n/model gemma3-base\n   \n🤖🤖\n/sources\n/clear\n/quit\n"
    result = runner.invoke(app, ["chat", "--data-dir", str(indexed)], input=session)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "/sources" in out and "unknown model 'nope'" in out
    assert "now answering with gemma3-base" in out and "*smollm2" in out
    assert "no text" in out and "emoji" in out
    assert "conversation cleared" in out and "Traceback" not in out


def test_health_passes_on_an_embedded_store_and_fails_on_an_unreachable_server(
    tmp_path, monkeypatch
):
    healthy = runner.invoke(app, ["health", "--data-dir", str(tmp_path / "data")])
    assert healthy.exit_code == 0, healthy.output
    assert "ok   store: embedded store" in healthy.output
    monkeypatch.setenv("STUDY_ASSISTANT_STORE__HOST", "127.0.0.1")
    monkeypatch.setenv("STUDY_ASSISTANT_STORE__PORT", "9")  # discard: nothing listens there
    down = runner.invoke(app, ["health", "--data-dir", str(tmp_path / "data")])
    assert down.exit_code == 1
    assert "FAIL store: Chroma server at 127.0.0.1:9 unreachable" in down.output
