"""`ingest` gated by gold questions, and `index versions|promote|rollback|gold`, through Typer's
runner on real indexes."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from cli.core import HELD_EXIT
from tests.ingest.test_reingest import LORA_Q, gated_settings

runner = CliRunner()


@pytest.fixture
def held(tmp_path: Path) -> tuple[dict[str, str], str]:
    """A gated index whose second re-ingest (lora.md deleted) was held: env and its output."""
    settings = gated_settings(tmp_path)
    env = {"STUDY_ASSISTANT_MATERIALS_DIR": str(settings.materials_dir),
           "STUDY_ASSISTANT_DATA_DIR": str(settings.data_dir)}
    first = runner.invoke(app, ["ingest", str(settings.materials_dir)], env=env)
    assert first.exit_code == 0 and "live: version 1 (was 0)" in first.output, first.output
    (settings.materials_dir / "lora.md").unlink()
    second = runner.invoke(app, ["ingest", str(settings.materials_dir)], env=env)
    assert second.exit_code == HELD_EXIT, second.output
    return env, " ".join(second.output.split())


def test_a_held_ingest_names_the_question_and_how_to_promote(held):
    _, output = held
    assert "held: version 2 is NOT live; version 1 stays" in output
    assert LORA_Q in output and "study-assistant index promote 2" in output


def test_promote_rollback_and_the_version_list(held):
    env, _ = held
    listed = runner.invoke(app, ["index", "versions"], env=env)
    assert listed.exit_code == 0 and "held" in listed.output and "live" in listed.output
    promoted = runner.invoke(app, ["index", "promote"], env=env)
    assert promoted.exit_code == 0 and "version 2 is live" in promoted.output
    gold = runner.invoke(app, ["index", "gold"], env=env)
    assert "1/2 gold questions pass" in " ".join(gold.output.split())
    back = runner.invoke(app, ["index", "rollback"], env=env)
    assert back.exit_code == 0 and "version 1 is live (was 2)" in back.output
    again = runner.invoke(app, ["index", "promote"], env=env)
    assert again.exit_code == 1 and "No re-ingest is waiting" in again.output
