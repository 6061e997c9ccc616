"""The terminal shows only our own output: each command runs in a real subprocess, as a user
runs it, and its stderr is checked for library progress bars, warnings and log lines."""

from __future__ import annotations

import os
import pty
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from rag.llm.model_cache import export_packaged_model
from tests.conftest import FirstRun, user_env

REPO = Path(__file__).resolve().parents[2]
GUIDE = "llm-basics.md"
# What libraries print on their own: tqdm bars, warnings, log records, tracebacks.
NOISE = re.compile(
    r"Loading weights|Converting|it/s|%\||Warning|warn\(|INFO|DEBUG|Traceback", re.IGNORECASE
)
TIMEOUT_S = 300


@dataclass(frozen=True)
class Run:
    """A finished command: exit code and what it wrote."""

    code: int
    stdout: str
    stderr: str


cli_env = user_env


def study_assistant(*args: str, stdin: str = "", **env: str) -> Run:
    """Run `python -m cli ARGS` and wait for it."""
    done = subprocess.run(
        [sys.executable, "-m", "cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=cli_env(**env),
        cwd=REPO,
        timeout=TIMEOUT_S,
    )
    return Run(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def materials(tmp_path_factory, shared_materials: Path) -> Path:
    """One real guide: enough to embed, small enough to be quick."""
    root = tmp_path_factory.mktemp("one-guide")
    shutil.copy(shared_materials / "guides" / GUIDE, root / GUIDE)
    return root


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, materials: Path, llm_cache_dir: Path) -> tuple[Path, Run]:
    """A data dir after `ingest` (not on a terminal), sharing the session's converted model."""
    data = tmp_path_factory.mktemp("terminal") / "data"
    run = study_assistant("ingest", str(materials), "--data-dir", str(data))
    models = export_packaged_model("smollm2", llm_cache_dir).parent
    (data / "models").symlink_to(models, target_is_directory=True)
    return data, run


def test_ingest_off_a_terminal_prints_plain_lines_and_no_library_output(ingested) -> None:
    _, run = ingested
    assert run.code == 0, run.stderr
    assert f"ingest: 1/1 {GUIDE}" in run.stderr.splitlines()
    assert not NOISE.search(run.stderr), run.stderr


def test_ingest_on_a_terminal_keeps_its_own_progress_bars(tmp_path, materials: Path) -> None:
    screen = on_a_terminal("ingest", str(materials), "--data-dir", str(tmp_path / "data"))
    assert "embedding" in screen and "━" in screen  # rich's bar
    assert not NOISE.search(screen), screen


def on_a_terminal(*args: str) -> str:
    """Run a command with stderr on a pseudo-terminal; return what it drew there."""
    main, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=secondary,
        env=cli_env(TERM="xterm-256color"),
        cwd=REPO,
    )
    os.close(secondary)
    screen = bytearray()
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # the terminal closed: the command has ended
            break
        if not data:
            break
        screen += data
    os.close(main)
    assert process.wait(timeout=TIMEOUT_S) == 0, screen.decode(errors="replace")
    return screen.decode(errors="replace")


def test_search_prints_results_and_nothing_on_stderr(ingested) -> None:
    data, _ = ingested
    run = study_assistant("search", "What is a transformer?", "--k", "2", "--data-dir", str(data))
    assert run.code == 0 and GUIDE in run.stdout
    assert run.stderr == ""


def test_ask_prints_its_answer_and_nothing_on_stderr(ingested) -> None:
    data, _ = ingested
    run = study_assistant(
        "ask",
        "What is a transformer?",
        "--data-dir",
        str(data),
        STUDY_ASSISTANT_LLM__MAX_NEW_TOKENS="8",
    )
    assert run.code == 0 and "Sources" in run.stdout
    assert run.stderr == ""


def test_chat_prints_only_its_own_banner_on_stderr(ingested) -> None:
    data, _ = ingested
    run = study_assistant(
        "chat",
        "--data-dir",
        str(data),
        stdin="What is a transformer?\n/quit\n",
        STUDY_ASSISTANT_LLM__MAX_NEW_TOKENS="8",
    )
    assert run.code == 0 and "Sources" in run.stdout
    assert run.stderr.strip() == "study-assistant chat · /help for commands · /quit to leave"


def test_a_demo_prints_its_table_and_nothing_on_stderr(ingested) -> None:
    data, _ = ingested
    run = study_assistant(
        "demo", "nexttoken", "The capital of France is", "--top-k", "3", "--data-dir", str(data)
    )
    assert run.code == 0 and "Paris" in run.stdout
    assert run.stderr == ""


def test_the_first_run_model_conversion_prints_no_progress_bar(first_run: FirstRun) -> None:
    # The session's first run (tests/conftest.py): on an empty data dir, this demo converted
    # the packaged model from its GGUF file before answering.
    assert first_run.code == 0 and "Paris" in first_run.stdout
    assert first_run.stderr == ""


def test_bad_settings_are_one_line_naming_the_variable(tmp_path) -> None:
    run = study_assistant(
        "search", "x", "--data-dir", str(tmp_path), STUDY_ASSISTANT_LLM__MAX_NEW_TOKENS="lots"
    )
    assert run.code == 1
    assert run.stderr.startswith("error: invalid settings: STUDY_ASSISTANT_LLM__MAX_NEW_TOKENS")
    assert len(run.stderr.strip().splitlines()) == 1


def test_an_unexpected_error_is_one_line_and_verbose_adds_the_traceback(tmp_path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("not a data dir")
    quiet = study_assistant("search", "x", "--data-dir", str(not_a_folder))
    assert quiet.code == 1
    assert quiet.stderr.startswith("error: unexpected NotADirectoryError")
    assert len(quiet.stderr.strip().splitlines()) == 1 and "--verbose" in quiet.stderr
    verbose = study_assistant("--verbose", "search", "x", "--data-dir", str(not_a_folder))
    assert verbose.code == 1 and "Traceback" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1].startswith("error: unexpected")
