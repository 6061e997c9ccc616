"""The `study-assistant` command line: one Typer app, every command group registered here.

Each command module exposes `register(app)`; nothing registers itself on import. The console
script (`study-assistant`) and `python -m cli` both run `app`.
"""

from __future__ import annotations

import typer

from cli import bot, checks, core, demos


def create_app() -> typer.Typer:
    """Build the app with all command groups: core, demos (with checks), bot and export."""
    app = typer.Typer(
        name="study-assistant",
        help="A study assistant for the LLM course: ingest the materials, then search or ask.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    core.register(app)
    demo_app = demos.register(app)
    checks.register(demo_app)
    bot.register(app)
    return app


app = create_app()
