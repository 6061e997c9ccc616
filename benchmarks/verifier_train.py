"""The verifier's training sentences, eval/verifier_train.jsonl: check every evidence locator
and print what the set holds.

Run: .venv/bin/python benchmarks/verifier_train.py ../shared/course_materials

2,399 sentences (1,199 supported, 1,200 unsupported), written in session 35 by fourteen
writers who read only their materials: no code and no other labelled set (the one sentence
that matched a labelled set's word for word was dropped). The materials were cut into seven
groups of files (two guides, one guide, two guides, three pairs of papers, one paper); one
writer of each group spread the passages over the whole of each file, another took most of
them from the second half and wrote a third of the paraphrases in few shared words. The set
is training data for an entailment judge and is never fitted together with the verifier's
labelled sets (`eval/verifier_sentences*.jsonl`), which stay its measure; docs/benchmarks.md
(run 43) has the experiment it was written for.

Each row: `id`, `writer` (1-14), `question`, `sentence`, `label`, `kind` (supported:
`paraphrase`, `near_quote`, `summary`; unsupported: `negation`, `exchanged_entity`,
`swapped_relation`, `wrong_number`, `half_true`, `invented_detail`, `wrong_fact`), `file`,
and the evidence the sentence restates or distorts, given by place rather than copied (the
materials stay outside the repository): `evidence_at` is [start, end) in the file's text with
every run of whitespace collapsed to one space (a guide as read; a paper as pypdf extracts its
pages, joined by newlines), and `evidence_sha1` the first 12 hex digits of that span's SHA-1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROWS = REPO / "eval" / "verifier_train.jsonl"


def material_text(root: Path, name: str) -> str:
    """A guide's or paper's text as the locators count it: whitespace runs collapsed."""
    if name.endswith(".md"):
        text = (root / "guides" / name).read_text(encoding="utf-8")
    else:
        from pypdf import PdfReader

        pages = PdfReader(root / "papers" / name).pages
        text = "\n".join(page.extract_text() or "" for page in pages)
    return " ".join(text.split())


def read_rows(path: Path = ROWS) -> list[dict]:
    """The rows of the training set."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def evidence(row: dict, texts: dict[str, str]) -> str:
    """The evidence span of a row, checked against its hash (ValueError when the text read
    differs from the one the row was written against, e.g. another pypdf's extraction)."""
    start, end = row["evidence_at"]
    span = texts[row["file"]][start:end]
    if hashlib.sha1(span.encode("utf-8")).hexdigest()[:12] != row["evidence_sha1"]:
        raise ValueError(f"{row['id']}: the evidence at {start}-{end} of {row['file']} differs "
                         "from the text the row was written against")
    return span


def main() -> None:
    """Resolve every locator; print the counts by label, kind and file."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("materials", type=Path, help="the course_materials folder (guides/, papers/)")
    args = p.parse_args()
    if not (args.materials / "guides").is_dir() or not (args.materials / "papers").is_dir():
        p.error(f"{args.materials} has no guides/ and papers/ folders: give the course_materials "
                "folder the sentences were written from (../shared/course_materials)")
    rows = read_rows()
    texts = {name: material_text(args.materials, name) for name in {r["file"] for r in rows}}
    spans = [evidence(row, texts) for row in rows]
    print(f"{len(rows)} sentences, {len(set(spans))} evidence spans, all resolved")
    for field in ("label", "kind", "file"):
        print(f"{field}: " + ", ".join(f"{k} {v}" for k, v in Counter(r[field] for r in rows)
                                      .most_common()))


if __name__ == "__main__":
    main()
