"""`study-assistant bot` and `study-assistant export`, through Typer's runner."""

from __future__ import annotations

import csv
import io
import json

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from bot.app import MissingToken, discord_token
from bot.storage import QuestionLog
from cli.app import app
from rag.config import DiscordSettings, Settings
from tests.bot.test_storage import entry

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path):
    data = tmp_path / "data"
    log = QuestionLog(data / "bot.sqlite3")
    log.vote(log.record(entry("What is LoRA?")), "u", 1)
    log.record(entry("What is the capital of France?", abstained=True, sources=()))
    log.close()
    return data


def test_export_writes_jsonl_to_stdout(data_dir):
    result = runner.invoke(app, ["export", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["question"] for r in rows] == ["What is LoRA?", "What is the capital of France?"]
    assert rows[0]["up"] == 1 and rows[1]["abstained"] is True


def test_export_writes_csv_to_a_file(data_dir, tmp_path):
    out = tmp_path / "log.csv"
    result = runner.invoke(
        app, ["export", "--format", "csv", "--out", str(out), "--data-dir", str(data_dir)]
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert len(rows) == 2 and rows[0]["model"] == "smollm2"


def test_export_without_a_log_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["export", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "no question log" in result.output


def test_bot_without_a_token_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    monkeypatch.delenv("STUDY_ASSISTANT_DISCORD__TOKEN", raising=False)
    result = runner.invoke(app, ["bot", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "DISCORD_TOKEN" in result.output
    assert "Traceback" not in result.output


def test_the_token_comes_from_settings_first_then_discord_token():
    settings = Settings(discord=DiscordSettings(token=SecretStr("from-settings")))
    assert discord_token(settings, {"DISCORD_TOKEN": "env"}) == "from-settings"
    assert discord_token(Settings(), {"DISCORD_TOKEN": " env "}) == "env"
    with pytest.raises(MissingToken):
        discord_token(Settings(), {})


def test_the_token_never_shows_in_the_settings_repr(monkeypatch):
    monkeypatch.setenv("STUDY_ASSISTANT_DISCORD__TOKEN", "very-secret-token")
    settings = Settings()
    assert settings.discord.token.get_secret_value() == "very-secret-token"
    assert "very-secret-token" not in repr(settings) and "very-secret-token" not in str(settings)


def test_bot_refuses_to_start_while_another_process_writes_the_data_dir(tmp_path, monkeypatch):
    from rag.index.locking import DataDirLock

    monkeypatch.setenv("DISCORD_TOKEN", "very-secret-token")
    with DataDirLock(tmp_path):
        result = runner.invoke(app, ["bot", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "is writing to" in " ".join(result.output.split())
    assert "very-secret-token" not in result.output
