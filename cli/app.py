"""The `study-assistant` command line: one Typer app, every command group registered here.

Each command module exposes `register(app)`; nothing registers itself on import. The console
script (`study-assistant`) and `python -m cli` both call `run`, which runs `app`.
"""

from __future__ import annotations

import gc
from typing import Annotated

import typer

from cli import bot, checks, core, demos, report, terminal, versions

# Long-running services log as services do; every other command keeps the terminal quiet.
SERVICES = {"bot"}
Verbose = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        help="Show the libraries' log lines, warnings and progress bars, and full tracebacks.",
    ),
]


def main(ctx: typer.Context, verbose: Verbose = False) -> None:
    """A study assistant for the LLM course: ingest the materials, then search or ask."""
    if ctx.invoked_subcommand not in SERVICES:
        terminal.configure(verbose)


def create_app() -> typer.Typer:
    """Build the app with all command groups: core, demos (with checks), bot and export, report."""
    app = typer.Typer(
        name="study-assistant",
        help="A study assistant for the LLM course: ingest the materials, then search or ask.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    app.callback()(main)
    core.register(app)
    demo_app = demos.register(app)
    checks.register(demo_app)
    bot.register(app)
    report.register(app)
    versions.register(app)
    return app


app = create_app()


def run() -> None:
    """Run the command line, then leave without a last garbage collection."""
    try:
        app()
    finally:
        # When the interpreter exits, the cycle collector walks every object that torch,
        # chromadb and the rest created: 1.2–1.3 s of an `ask` on 2 busy cores. Frozen objects
        # are skipped and go with the process; atexit handlers and buffered output still run.
        gc.freeze()
