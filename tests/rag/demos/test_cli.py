"""`study-assistant demo …` in-process through Typer's runner, on the session's model cache."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.app import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "says"),
    [(["nexttoken", "Hi", "--top-k", "0"], "top_k must be between 1 and 20"),
     (["nexttoken", "Hi", "--model", "nope"], "Unknown model 'nope'"),
     (["fewshot", "x", "--task", "t", "--examples", "a -> b"], "has no `=>`")],
    ids=["top-k", "unknown-model", "examples"],
)
def test_bad_input_is_one_line_and_exit_code_one(tmp_path, args, says):
    result = runner.invoke(app, ["demo", *args, "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and says in result.output
    assert "Traceback" not in result.output


def test_nexttoken_prints_plain_tables_and_writes_the_chart(llm_cache_dir, smollm2, tmp_path):
    png = tmp_path / "out.png"
    result = runner.invoke(app, [
        "demo", "nexttoken", "The capital of France is", "--top-k", "3", "--steps", "2",
        "--temperature", "0.8", "--model", "smollm2", "--png", str(png), "--chat",
        "--data-dir", str(llm_cache_dir),
    ])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(line.startswith("1  ␣Paris") and line.endswith("← greedy") for line in lines)
    assert "Raw text beside the chat template" in result.stdout
    assert any(line.startswith("Raw, the model continues your text (␣Paris") for line in lines)
    assert "p(T=0.8)" in result.stdout and "sampled (seed 0)" in result.stdout
    assert any(line.startswith("greedy:  ") for line in lines)
    assert Image.open(io.BytesIO(png.read_bytes())).format == "PNG"


def test_tokenize_json_has_the_pieces_and_counts(llm_cache_dir, smollm2):
    result = runner.invoke(app, ["demo", "tokenize", "The cat sat", "--model", "smollm2",
                                 "--json", "--data-dir", str(llm_cache_dir)])
    assert result.exit_code == 0, result.output
    (tokens,) = json.loads(result.stdout)["tokenizations"]
    assert tokens["model"] == "smollm2"
    assert [t["piece"] for t in tokens["tokens"]] == ["The", "Ġcat", "Ġsat"]
