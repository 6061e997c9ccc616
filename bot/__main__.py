"""`python -m bot`: the same command line as `study-assistant`."""

from bot.cli import app

app()
