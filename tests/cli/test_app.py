"""`run`, the entry point of `study-assistant` and `python -m cli`."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from cli.app import run

REPO = Path(__file__).resolve().parents[2]


def test_run_exits_with_the_command_code_and_leaves_the_collector_nothing(monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["study-assistant", "ask"])
    try:
        with pytest.raises(SystemExit) as exit_info:
            run()
        assert exit_info.value.code == 1
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_python_dash_m_cli_reports_a_usage_error_and_exits_1() -> None:
    done = subprocess.run([sys.executable, "-m", "cli", "ask"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert done.returncode == 1
    assert "give either a QUESTION or --batch FILE" in done.stderr
