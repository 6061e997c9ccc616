"""Cold start: `study-assistant ask` from process start to answer, and `study-assistant bot`
from process start to the end of `setup_hook` (cogs added, commands synced, models warm: the
embedder and the runtime that generates the answers; a model that generates through
onnxruntime-genai has a transformers copy for the logit and attention demos, which loads in a
background thread from then on and is not in the figure).

Run: .venv/bin/python benchmarks/cold_start.py ../shared/course_materials [--runs 3]

Discord is unreachable, so the bot runs with discord.py's HTTP seam replaced by the tests'
recording fake (tests/bot/fake_discord.py): `Client.login` gets the fake installed first, and
`Client.connect` (the gateway, which comes right after `setup_hook`) prints "ready" and ends
the process. Everything before it is the real `study-assistant bot` command. The target is the start
after the first-run model conversion, so one bot start converts (and packs) the models first
and is reported on its own line.

`--baseline DIR` also times another checkout (e.g. `git archive <commit> | tar -x -C DIR`) on
the same index, each run alternating between the two, so that a busy machine weighs on both
alike. Each row also gives the median CPU time (user + system) of the timed processes.

Prints Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
QUESTION = "What is PagedAttention?"

BOT_CHILD = """
import os, sys, discord
from tests.bot.fake_discord import FakeDiscord

_login = discord.Client.login

async def login(self, token):
    FakeDiscord().install(self)
    return await _login(self, token)

async def connect(self, *args, **kwargs):
    print("ready", flush=True)
    os._exit(0)

discord.Client.login = login
discord.Client.connect = connect

# The checkout this script is in, before the one the virtual environment was installed from
# (they differ when it runs from a second worktree).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cli.app import app
app(["bot", "--data-dir", sys.argv[1]])
"""


def env(tree: Path = REPO) -> dict[str, str]:
    """Offline, with a bot token and the checkout `tree` importable."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "DISCORD_TOKEN": "benchmark-token", "PYTHONPATH": str(tree)}


def cli(*args: str) -> list[str]:
    """The `study-assistant` command line, as `python -m cli`."""
    return [sys.executable, "-m", "cli", *args]


def timed_run(command: list[str], until: str | None = None,
              tree: Path = REPO) -> tuple[float, float]:
    """Seconds from starting `command` to its exit (or to a line `until` on its stdout), and
    the CPU seconds the process used until it exited."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    with subprocess.Popen(command, cwd=tree, env=env(tree), stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if until is not None and line.strip() == until:
                break
        seconds = time.perf_counter() - began
        process.wait(timeout=120)
    if process.returncode != 0:
        raise RuntimeError(f"{command} failed with {process.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return seconds, cpu


def main() -> None:
    """Ingest, convert once, then time the cold starts."""
    parser = argparse.ArgumentParser()
    parser.add_argument("materials", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout to time alternately")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="sa-cold-")) / "data"
    subprocess.run(cli("ingest", str(args.materials.resolve()), "--data-dir", str(data)),
                   cwd=REPO, env=env(), check=True, capture_output=True)
    # The bot warms the models, so its first start converts (and packs) the packaged model
    # into the data dir's cache; `ask` answers extractively and never loads it.
    first, _ = timed_run([sys.executable, "-c", BOT_CHILD, str(data)], until="ready")
    trees = [args.baseline.resolve(), REPO] if args.baseline else [REPO]
    times: dict[tuple[Path, str], list[tuple[float, float]]] = {}
    for _ in range(args.runs):
        for tree in trees:
            ask = cli("ask", QUESTION, "--json", "--data-dir", str(data))
            bot = [sys.executable, "-c", BOT_CHILD, str(data)]
            times.setdefault((tree, "ask"), []).append(timed_run(ask, None, tree))
            times.setdefault((tree, "bot"), []).append(timed_run(bot, "ready", tree))
    print(f"Machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end.\n")
    print("| cold start | runs | median | range | CPU (median) | target |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("| `bot`, first start after ingest (converts the model, builds its ONNX model) "
          f"| 1 | {first:.1f} s | | | |")
    for tree in trees:
        label = f" ({tree.name})" if args.baseline else ""
        for kind, name, target in (
            ("ask", "`ask`, process start to answer", "≤ 5 s"),
            ("bot", "`bot`, process start to end of setup_hook", "≤ 10 s"),
        ):
            walls = [wall for wall, _ in times[(tree, kind)]]
            cpu = statistics.median(c for _, c in times[(tree, kind)])
            print(f"| {name}{label} | {len(walls)} | {statistics.median(walls):.1f} s "
                  f"| {min(walls):.1f}–{max(walls):.1f} s | {cpu:.1f} s | {target} |")


if __name__ == "__main__":
    main()
