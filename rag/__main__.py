"""`python -m rag` runs the study-assistant command line."""

from rag.cli import app

app()
