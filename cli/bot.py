"""The bot's commands: `bot` runs the Discord bot, `export` writes its question log."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from bot.storage import QuestionLog, question_log_path
from cli.common import USER_ERRORS, DataDir, console, fail, load_settings


def register(app: typer.Typer) -> None:
    """Add `bot` and `export` to the app."""
    app.command(name="bot")(run_discord_bot)
    app.command()(export)


def run_discord_bot(data_dir: DataDir = None) -> None:
    """Run the Discord bot (token from DISCORD_TOKEN or STUDY_ASSISTANT_DISCORD__TOKEN)."""
    # discord.py and the cogs are only needed here; importing them at start-up would cost every
    # other command about two seconds on two cores.
    from bot.app import MissingToken, run_bot

    try:
        run_bot(load_settings(data_dir))
    except (MissingToken, *USER_ERRORS) as exc:
        raise fail(str(exc)) from None


def export(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="File to write [default: stdout]")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or jsonl")] = "jsonl",
    days: Annotated[
        float | None, typer.Option("--days", min=0, help="Only the last N days")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Export the bot's question log (questions, answers, sources, feedback) to CSV or JSONL."""
    if fmt not in ("csv", "jsonl"):
        raise fail(f"unknown format '{fmt}': use csv or jsonl")
    path = question_log_path(load_settings(data_dir).data_dir)
    if not path.exists():
        raise fail(f"no question log at {path}: the bot has not answered anything yet")
    since = time.time() - days * 86400 if days is not None else 0.0
    log = QuestionLog(path)
    try:
        if out is None:
            count = log.export(sys.stdout, fmt, since)
        else:
            with out.open("w", encoding="utf-8", newline="") as fh:
                count = log.export(fh, fmt, since)
    finally:
        log.close()
    console.print(f"exported {count} questions" + (f" to {out}" if out else ""))
