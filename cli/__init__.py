"""The terminal adapter: the `study-assistant` command line (Typer), on top of rag and ingest.

Importing the package is cheap (`python -m cli.health` relies on it); `cli.app` builds the
app and registers every command group.
"""
