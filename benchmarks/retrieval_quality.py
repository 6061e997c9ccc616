"""Retrieval quality per question class, and follow-up conversations.

Run (an index of the shipped materials in DATA_DIR):
    .venv/bin/python benchmarks/retrieval_quality.py DATA_DIR \
        ../shared/eval/dev_questions_v2.jsonl eval/retrieval_questions.jsonl \
        --followups eval/followup_conversations.jsonl

Per class and overall, over in-scope questions: an expected source in the top 5 (source@5), an
evidence string inside a top-5 passage (evidence@5; "top 5" is what `search(q, 5)` returns:
five fused passages, then BM25's best when fusion left it out, unless
STUDY_ASSISTANT_RETRIEVAL__LEXICAL_EXTRA=0; NFKC, lower case, `*` removed, whitespace
collapsed), mean reciprocal rank of the first passage from an expected source (MRR) and of the
first passage from an expected source that holds an evidence string (evidence MRR), and how
many the abstention gate refuses; for out-of-scope and injection questions, how many it
refuses (with the assistant's other refusals: requests for its instructions, questions made
only of instructions, and versions of model families or names the materials never use).
Follow-ups:
the search query is built as the assistant builds it with the packaged model
(`Assistant.search_query_for`), and source@5 / evidence@5 are counted for it.
Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import unicodedata
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys  # noqa: E402

# The checkout this script is in, before the one the virtual environment was installed from
# (they differ when it runs from a second worktree).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.answering.injection import only_instructions  # noqa: E402
from rag.answering.prompting import asks_for_system_prompt  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.index.documents import Hit  # noqa: E402
from rag.services import Services, build_services  # noqa: E402


def normalised(text: str) -> str:
    """NFKC, lower case, '*' removed, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().replace("*", "").split())


def load(path: Path) -> list[dict]:
    """A JSONL file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def has_evidence(hit: Hit, question: dict) -> bool:
    """Whether a passage holds one of the question's evidence strings."""
    text = normalised(hit.chunk.text)
    return any(normalised(e) in text for e in question["evidence"])


def judge(question: dict, hits: list[Hit], refused: bool) -> dict:
    """One question's figures."""
    row = {"class": question.get("class", question["kind"]), "in": question["kind"] == "in"}
    row["refused"] = refused
    if not row["in"]:
        return row
    expected = [h.chunk.source in question["sources"] for h in hits]
    both = [e and has_evidence(h, question) for e, h in zip(expected, hits, strict=True)]
    row["source"] = any(expected)
    row["evidence"] = any(has_evidence(h, question) for h in hits)
    row["rr"] = next((1 / i for i, e in enumerate(expected, 1) if e), 0.0)
    row["err"] = next((1 / i for i, e in enumerate(both, 1) if e), 0.0)
    return row


def table(rows: list[dict]) -> str:
    """Markdown table per class, then overall."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["class"]].append(r)
    inside = [r for r in rows if r["in"]]
    outside = [r for r in rows if not r["in"]]
    lines = [
        "| class | n | source@5 | evidence@5 | MRR | evidence MRR | gate refused |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    named = sorted(groups.items())
    named += [("**all in scope**", inside), ("**all out of scope**", outside)]
    for name, group in named:
        if group:
            lines.append(row_line(name, group))
    return "\n".join(lines)


def row_line(name: str, group: list[dict]) -> str:
    """One table row."""
    n = len(group)
    refused = f"{sum(r['refused'] for r in group)}/{n}"
    if not group[0]["in"]:
        return f"| {name} | {n} | | | | | {refused} |"
    share = lambda key: f"{sum(r[key] for r in group) / n:.0%}"  # noqa: E731
    mean = lambda key: f"{sum(r[key] for r in group) / n:.3f}"  # noqa: E731
    return (
        f"| {name} | {n} | {share('source')} | {share('evidence')} | {mean('rr')} | "
        f"{mean('err')} | {refused} |"
    )


def questions_table(services: Services, path: Path) -> str:
    """Search every question of a set and tabulate."""
    rows = []
    for q in load(path):
        hits = services.retriever.search(q["question"], 5)
        # As the assistant refuses: a request for its instructions or a question made only
        # of instructions is declined before the search, the rest by the gate.
        declined = asks_for_system_prompt(q["question"]) or only_instructions(q["question"])
        unknown = services.assistant.unknown_to_materials(q["question"])
        refused = declined or bool(unknown) or not services.assistant.covers(q["question"], hits)
        rows.append(judge(q, hits, refused))
    return table(rows)


async def followups_line(services: Services, path: Path) -> str:
    """Source@5 and evidence@5 of follow-ups searched as the assistant searches them."""
    chat = services.models.get()
    found = evidence = refused = 0
    conversations = load(path)
    for c in conversations:
        query = await services.assistant.search_query_for(c["question"], c["history"], chat, {})
        hits = services.retriever.search(query, 5)
        found += any(h.chunk.source in c["sources"] for h in hits)
        evidence += any(has_evidence(h, c) for h in hits)
        refused += not services.assistant.covers(query, hits)
    n = len(conversations)
    return (
        f"follow-ups ({n} conversations, model {chat.name}): source@5 {found}/{n} "
        f"({found / n:.0%}), evidence@5 {evidence}/{n} ({evidence / n:.0%}), "
        f"gate refused {refused}/{n}"
    )


def main() -> None:
    """Print the tables."""
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("sets", type=Path, nargs="+")
    parser.add_argument("--followups", type=Path)
    args = parser.parse_args()
    services = build_services(Settings(data_dir=args.data_dir))
    for path in args.sets:
        print(f"\n{path.name}:\n\n{questions_table(services, path)}", flush=True)
    if args.followups:
        print("\n" + asyncio.run(followups_line(services, args.followups)))


if __name__ == "__main__":
    main()
