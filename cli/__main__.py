"""`python -m cli` runs the study-assistant command line."""

from cli.app import run

run()
