"""Keep the terminal ours: only our own output, unless `--verbose` asks for the libraries' too.

Third-party libraries write to stderr on their own: transformers' "Loading weights" and GGUF
conversion bars (tqdm), deprecation and future warnings, and log lines (transformers has its own
handler; other loggers reach stderr through logging's last-resort handler). A terminal command
switches them off before it imports those libraries; our own loggers (`rag`, `ingest`, `cli`)
still print their warnings, as one `warning:` line each. An error that escapes a command is one
line too, with the traceback only under `--verbose`.

Long-running services (`study-assistant bot`) log as services do and are left alone.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from types import TracebackType

OWN_LOGGERS = ("rag", "ingest", "cli")
# Read by the libraries when they are imported, which a command does after this runs.
QUIET_LIBRARIES = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # huggingface_hub and transformers' own bars
    "TQDM_DISABLE": "1",  # any other tqdm bar (transformers' GGUF conversion)
    "TRANSFORMERS_VERBOSITY": "critical",  # transformers' logger has its own stderr handler
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "ANONYMIZED_TELEMETRY": "False",  # Chroma
}
ExceptHook = Callable[[type[BaseException], BaseException, TracebackType | None], None]


def configure(verbose: bool) -> None:
    """Set this process's output for a terminal command: quiet libraries, or everything."""
    if verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "info")
        warnings.simplefilter("default")
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    else:
        for name, value in QUIET_LIBRARIES.items():
            os.environ.setdefault(name, value)
        warnings.simplefilter("ignore")
        _own_warnings_only()
        _tqdm_off()
    sys.excepthook = one_line_errors(verbose)


def _tqdm_off() -> None:
    """Turn off tqdm bars in a process that has already imported tqdm (torch does, while our
    modules load): tqdm reads `TQDM_DISABLE` only when it is first imported."""
    module = sys.modules.get("tqdm.std")
    if module is not None:
        module.tqdm.__init__ = functools.partialmethod(  # type: ignore[method-assign]
            module.tqdm.__init__, disable=True)


class OwnWarnings(logging.Handler):
    """Our own loggers' warnings as one `warning: ...` line each; other records are dropped.

    Installed on the root logger, it also keeps logging's last-resort handler from printing
    library warnings. It writes to whatever `sys.stderr` is at the time (test runners swap it).
    """

    def emit(self, record: logging.LogRecord) -> None:
        """Print the record if it comes from one of our packages."""
        if record.name.split(".")[0] in OWN_LOGGERS:
            print(f"warning: {record.getMessage()}", file=sys.stderr)


def _own_warnings_only() -> None:
    root = logging.getLogger()
    if not any(isinstance(handler, OwnWarnings) for handler in root.handlers):
        root.addHandler(OwnWarnings(logging.WARNING))


def one_line_errors(verbose: bool) -> ExceptHook:
    """An excepthook printing an unexpected error as one line (the traceback if verbose)."""

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        if verbose:
            traceback.print_exception(kind, error, tb, file=sys.stderr)
        lines = str(error).strip().splitlines()
        what = f"{kind.__name__}: {lines[0]}" if lines else kind.__name__
        hint = "" if verbose else " (run `study-assistant --verbose …` for the details)"
        print(f"error: unexpected {what}{hint}", file=sys.stderr)

    return hook


def verbose_requested() -> bool:
    """Whether this command asked for `--verbose`: `configure` then logs at the info level."""
    return logging.getLogger("cli").isEnabledFor(logging.INFO)
