"""Few-shot accuracy: task files, leave-one-out examples, scoring, and a real run of both
local models on a built-in task (a few items, to keep the suite fast)."""

from __future__ import annotations

import io
import json
from collections import defaultdict

import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.app import app
from rag.demos import plots
from rag.demos.common import DemoInputError
from rag.demos.fewshot_accuracy import (
    BUILT_IN,
    LabelledItem,
    LabelledTask,
    accuracy_table,
    built_in_task,
    choose_examples,
    fewshot_accuracy,
    is_correct,
    normalise_label,
    parse_task,
)


def task_bytes(rows: list[dict]) -> bytes:
    return "\n".join(json.dumps(r) for r in rows).encode()


SIX = [{"input": f"text {i}", "label": "yes" if i % 2 else "no"} for i in range(6)]


@pytest.mark.parametrize(("answer", "label", "right"), [
    ("Positive.", "positive", True), ("**negative**", "negative", True),
    ("  “Fine-Tuning” ", "fine-tuning", True), ("positive review", "positive", False),
    ("", "positive", False), ("ｐｏｓｉｔｉｖｅ", "positive", True),
])
def test_answers_match_labels_exactly_after_normalisation(answer, label, right):
    assert is_correct(answer, label) is right


def test_normalisation_keeps_inner_hyphens_and_collapses_spaces():
    assert normalise_label(" Fine-tuning\t now ") == "fine-tuning now"


def test_examples_are_other_items_cycling_through_the_labels():
    task = LabelledTask("t", "i", tuple(LabelledItem(f"x{i}", "ab"[i % 2]) for i in range(6)))
    assert choose_examples(task, 0, 0) == ()
    assert choose_examples(task, 0, 4) == (2, 1, 4, 3)  # a, b, a, b; never item 0 itself
    assert choose_examples(task, 1, 1) == (3,)  # item 1 starts at the second label
    for item in range(6):
        for k in (1, 2, 4):
            shown = choose_examples(task, item, k)
            assert len(shown) == k and item not in shown and len(set(shown)) == k


def test_built_in_tasks_are_small_and_labelled():
    for name in BUILT_IN:
        task = built_in_task(name)
        assert 10 <= len(task.items) <= 20 and len(task.labels) >= 2
        assert all(label in task.instruction for label in task.labels)
    assert built_in_task("topics").labels == ("attention", "fine-tuning", "serving")


def test_a_file_without_an_instruction_gets_one_naming_the_labels():
    task = parse_task("mine.jsonl", task_bytes(SIX))
    assert task.instruction == "Answer with one of: no, yes." and len(task.items) == 6


@pytest.mark.parametrize(("data", "says"), [
    (b'{"input": "a", "label": "b"}\nnot json', "Line 2 of the task file is not JSON"),
    (task_bytes([*SIX[:5], {"input": "x"}]), 'Line 6 has no text for "label"'),
    (task_bytes(SIX[:4]), "needs 6 to 40 labelled items (got 4)"),
    (task_bytes([{**r, "label": "same"} for r in SIX]), "2 to 8 different labels (got 1)"),
    (task_bytes(SIX) + b"\n" + b" " * 70_000, "the limit is 65,536"),
    (b"\xff\xfe\x00", "not UTF-8"),
    (b"[1, 2]", "should be an object"),
], ids=["not-json", "no-label", "too-few", "one-label", "too-big", "binary", "not-object"])
def test_bad_task_files_get_a_clear_message(data, says):
    with pytest.raises(DemoInputError) as caught:
        parse_task("mine.jsonl", data)
    assert says in str(caught.value)


def recomputed(items: list[dict]) -> dict[tuple[str, int], float]:
    """Accuracy per (model, k) from the per-item answers alone."""
    cells: dict[tuple[str, int], list[bool]] = defaultdict(list)
    for row in items:
        cells[row["model"], row["k"]].append(is_correct(row["answer"], row["label"]))
    return {key: sum(v) / len(v) for key, v in cells.items()}


async def test_base_and_instruct_models_are_scored_on_a_built_in_task(smollm2, gemma3):
    task = built_in_task("sentiment")
    notes: list[str] = []

    async def progress(status: str) -> None:
        notes.append(status)

    result = await fewshot_accuracy([gemma3, smollm2], task, (0, 2), limit=3, progress=progress)
    data = result.as_json()
    assert len(data["items"]) == 2 * 2 * 3 and data["models"] == ["gemma3-base", "smollm2"]
    again = recomputed(data["items"])
    for cell in data["accuracy"]:
        assert again[cell["model"], cell["k"]] == pytest.approx(cell["accuracy"])
    assert all(r.examples == choose_examples(task, r.item, r.k) for r in result.results)
    assert notes[0] == "Scoring 12 answers (2 models × 2 k × 3 items)…"
    assert notes[-1].startswith("smollm2, k=2 done: 12/12 answers in ")
    header, rows = accuracy_table(result)
    assert header == ("model", "k=0", "k=2") and [r[0] for r in rows] == data["models"]
    png = plots.accuracy_chart(result)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size[0] <= 1000 and len(png) < 1_000_000
    labels = [t.get_text() for t in plots.accuracy_figure(result).axes[0].get_xticklabels()]
    assert labels == ["k = 0", "k = 2"]


def test_the_cli_prints_json_whose_numbers_recompute_from_the_items(llm_cache_dir, smollm2):
    result = CliRunner().invoke(app, [
        "demo", "fewshot-accuracy", "--task", "topics", "--items", "2", "--k", "0", "--k", "1",
        "-m", "smollm2", "--json", "--data-dir", str(llm_cache_dir)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["task"] == "topics" and data["ks"] == [0, 1] and len(data["items"]) == 4
    again = recomputed(data["items"])
    assert {(c["model"], c["k"]): c["accuracy"] for c in data["accuracy"]} == pytest.approx(again)
    assert all(row["correct"] == is_correct(row["answer"], row["label"]) for row in data["items"])
