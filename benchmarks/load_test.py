"""Load test: simulated students asking at once through the bot's answering core, against an
OpenAI-compatible model server.

Run (starts `transformers serve` on loopback with the packaged SmolLM2; about 5 minutes on two
idle cores, most of it 16 answers generated one after another by the server):
    .venv/bin/python benchmarks/load_test.py --data-dir /tmp/sa-load
Against a server that is already running (vLLM):
    .venv/bin/python benchmarks/load_test.py --base-url http://gpu-host:8000/v1 \
        --model course-llm --api-key-env VLLM_API_KEY --context-window 8192 --max-concurrent 16
Without --data-dir, the index and the model export go to a temporary folder removed at the end.

Every question goes the way `/ask` sends it: `Answerer.admit` (question checks, per-user rate
limit), then `Answerer.answer` (generation queue, retrieval, abstention gate, streamed
generation with throttled edits, the SQLite question log). Only Discord itself is replaced, by
a `Reply` that records when each message would have been shown; Discord's API latency is
therefore not in these figures. Prints a Markdown section for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import discord  # noqa: E402
import httpx  # noqa: E402

# The checkout this script is in, before the one the virtual environment was installed from
# (they differ when it runs from a second worktree).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot import render  # noqa: E402
from bot.answering import Answerer  # noqa: E402
from bot.errors import friendly_message  # noqa: E402
from bot.ratelimit import QueueFull, RateLimited  # noqa: E402
from bot.storage import QuestionLog, percentile  # noqa: E402
from ingest.pipeline import Target, ingest  # noqa: E402
from rag.config import DiscordSettings, Settings  # noqa: E402
from rag.llm.local import export_packaged_model  # noqa: E402
from rag.llm.settings import LLMSettings, ModelSpec  # noqa: E402
from rag.services import Services, build_services  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
DEFAULT_PAPERS = ("lora.pdf", "vllm_pagedattention.pdf")
SERVER_START_TIMEOUT_S = 180.0
SAMPLE_EVERY_S = 0.1


# ----- what one question did -----


@dataclass
class Outcome:
    """One question from one student, and what the bot did with it."""

    student: int
    question: str
    asked: float
    kind: str = "dropped"  # answered | abstained | busy | rate_limited | error | dropped
    first_text: float | None = None
    finished: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    message: str = ""
    places: list[int] = field(default_factory=list)


class RecordingReply:
    """The `Reply` the bot writes to, recording when each message would have been shown."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome

    async def begin(self, question: str) -> None:
        """Nothing to show: a slash command's deferred response already says "thinking"."""

    async def show(self, embeds: list[discord.Embed], view: discord.ui.View | None = None) -> None:
        """Record the first streamed text and every queue position shown."""
        text = (embeds[0].description or "") if embeds else ""
        if view is None and text.endswith(render.CURSOR) and self.outcome.first_text is None:
            self.outcome.first_text = time.monotonic()
        if match := re.match(r"You're #(\d+) in the queue", text):
            self.outcome.places.append(int(match.group(1)))

    async def more(self, embeds: list[discord.Embed]) -> None:
        """A further page of a long answer: nothing to time."""


async def ask(answerer: Answerer, outcome: Outcome) -> None:
    """Ask one question the way `/ask` does; record the answer or the message the user gets."""
    user_id = 10_000 + outcome.student
    try:
        question = answerer.admit(user_id, outcome.question)
        answer = await answerer.answer(
            question, RecordingReply(outcome), user_id=user_id, channel_id=1
        )
    except RateLimited as exc:
        outcome.kind, outcome.message = "rate_limited", exc.user_message()
    except QueueFull as exc:
        outcome.kind, outcome.message = "busy", friendly_message(exc) or str(exc)
    except Exception as exc:  # what the bot's error handler would turn into a reply
        outcome.kind = "error"
        told = friendly_message(exc) or "Something went wrong on my side (error id …)."
        outcome.message = f"{told} ({type(exc).__name__}: {str(exc)[:120]})"
    else:
        outcome.kind = "abstained" if answer.refused else "answered"
        outcome.timings = dict(answer.timings)
    outcome.finished = time.monotonic()


async def student(
    number: int, questions: Sequence[str], answerer: Answerer, args: argparse.Namespace,
    outcomes: list[Outcome], rng: random.Random,
) -> None:
    """Ask `questions` one after another, thinking between an answer and the next question."""
    await asyncio.sleep(rng.uniform(0, args.think_time))  # students do not arrive in lockstep
    for i, question in enumerate(questions):
        if i:
            await asyncio.sleep(args.think_time * rng.uniform(0.5, 1.5))
        outcome = Outcome(number, question, asked=time.monotonic())
        outcomes.append(outcome)
        await ask(answerer, outcome)


# ----- the model server -----


@dataclass
class Server:
    """Where the model is served, and the process if this script started it."""

    base_url: str
    model: str
    description: str
    label: str
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def stop(self) -> None:
        """Stop the server this script started (kill it if it will not stop)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)


def free_port() -> int:
    """A loopback port nothing listens on (at the time of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_transformers_serve(model_dir: Path, log: Path, extra: Sequence[str]) -> Server:
    """`transformers serve` pinned to the exported model on loopback, once /health says ok."""
    port = free_port()
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(model_dir),
               "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", *extra]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}/v1", str(model_dir),
                    "`transformers serve " + " ".join(["<model dir>", *extra]) + "` on loopback",
                    "SmolLM2-135M-Instruct (packaged GGUF, served from its safetensors copy)",
                    process, log)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"transformers serve exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    server.stop()
    raise SystemExit(f"transformers serve not healthy in {SERVER_START_TIMEOUT_S:.0f} s")


def external_server(base_url: str, model: str | None) -> Server:
    """A server that is already running; the model id comes from /v1/models if not given."""
    if model is None:
        listed = httpx.get(base_url.rstrip("/") + "/models", timeout=10).json()
        model = str(listed["data"][0]["id"])
    return Server(base_url, model, f"already running at {base_url}", f"`{model}`")


# ----- the index and the questions -----


def build_index(services: Services, materials: Path, papers: Sequence[str]) -> None:
    """Ingest the guides and the named papers (incremental: a ready data dir costs a hash)."""
    files = sorted((materials / "guides").glob("*.md"))
    files += [materials / "papers" / name for name in papers]
    targets = [Target(materials.resolve(), f.resolve()) for f in files]
    ingest(targets, services.store, services.embedder, services.settings.ingest)


def in_scope_questions(path: Path, services: Services) -> list[str]:
    """The dev set's in-scope questions whose expected sources are (partly) in the index."""
    indexed = set(services.store.manifest())
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    chosen = [r["question"] for r in rows
              if r.get("kind") == "in" and indexed & set(r.get("sources", []))]
    if not chosen:
        raise SystemExit(f"No in-scope question of {path} has its sources in the index.")
    return chosen


def settings_for(args: argparse.Namespace, server: Server) -> Settings:
    """The configuration under test: one `openai` model, the bot's queue and rate limit."""
    spec = ModelSpec(name="served", backend="openai", model=server.model,
                     base_url=server.base_url, api_key_env=args.api_key_env,
                     context_window=args.context_window)
    llm = LLMSettings(default="served", models={"served": spec},
                      max_new_tokens=args.max_tokens, temperature=0.0)
    discord_settings = DiscordSettings(
        max_concurrent=args.max_concurrent, max_waiting=args.max_waiting,
        rate_burst=args.rate_burst, rate_per_minute=args.rate_per_minute)
    return Settings(data_dir=args.data_dir, llm=llm, discord=discord_settings)


# ----- observing while the load runs -----


@dataclass
class Samples:
    """Gauges sampled every SAMPLE_EVERY_S while the students ask."""

    generating: list[int] = field(default_factory=list)
    waiting: list[int] = field(default_factory=list)
    server_running: list[float] = field(default_factory=list)
    server_waiting: list[float] = field(default_factory=list)
    metrics_note: str = ""


def metric_sum(text: str, name: str) -> float | None:
    """The sum of a Prometheus gauge over its label sets, or None if it is absent."""
    values = [float(m.group(1)) for m in
              re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.eE+-]+)$", text, re.M)]
    return sum(values) if values else None


async def watch(answerer: Answerer, server: Server, samples: Samples, stop: asyncio.Event) -> None:
    """Sample the bot's queue, and the server's own gauges where it has them (vLLM /metrics)."""
    metrics_url = server.base_url.rstrip("/").removesuffix("/v1") + "/metrics"
    async with httpx.AsyncClient(timeout=2.0) as client:
        tick = 0
        while not stop.is_set():
            samples.generating.append(answerer.queue.active)
            samples.waiting.append(answerer.queue.waiting)
            if tick % 5 == 0 and samples.metrics_note == "":
                await poll_metrics(client, metrics_url, samples)
            tick += 1
            await asyncio.sleep(SAMPLE_EVERY_S)


async def poll_metrics(client: httpx.AsyncClient, url: str, samples: Samples) -> None:
    """One reading of vLLM's running/waiting gauges; note once why there are none."""
    try:
        response = await client.get(url)
    except httpx.HTTPError as exc:
        samples.metrics_note = f"{url} unreachable ({type(exc).__name__})"
        return
    running = metric_sum(response.text, "vllm:num_requests_running")
    if response.status_code != 200 or running is None:
        samples.metrics_note = f"{url} answered HTTP {response.status_code} without vLLM gauges"
        return
    samples.server_running.append(running)
    samples.server_waiting.append(metric_sum(response.text, "vllm:num_requests_waiting") or 0.0)


def overlap(intervals: Sequence[tuple[float, float]], start: float, end: float) -> list[int]:
    """How many intervals contain each instant of a SAMPLE_EVERY_S grid over [start, end]."""
    counts = []
    t = start
    while t <= end:
        counts.append(sum(1 for a, b in intervals if a <= t < b))
        t += SAMPLE_EVERY_S
    return counts


def server_intervals(outcomes: Sequence[Outcome]) -> tuple[list, list]:
    """Per generated answer: (request sent, stream ended) and (first token, stream ended).

    The first streamed text is timed by the recording reply; the request's start and the
    stream's end follow from the assistant's own timings of the same generation.
    """
    open_, streaming = [], []
    for o in outcomes:
        if o.kind != "answered" or o.first_text is None or "first_token_ms" not in o.timings:
            continue
        sent = o.first_text - o.timings["first_token_ms"] / 1000
        ended = sent + o.timings["generate_ms"] / 1000
        open_.append((sent, ended))
        streaming.append((o.first_text, ended))
    return open_, streaming


# ----- the report -----


def seconds(values: Sequence[float], *qs: float) -> str:
    """`p50 / p95 / …` of a list of seconds, or "–" when empty."""
    if not values:
        return "–"
    return " / ".join(f"{percentile(values, q):.2f}" for q in qs) + " s"


def gauge(values: Sequence[float]) -> str:
    """`max / mean` of sampled gauge values."""
    if not values:
        return "–"
    return f"{max(values):g} / {sum(values) / len(values):.2f}"


def machine_line(server: Server, load_before: tuple[float, ...]) -> str:
    """Versions, cores and how busy the machine was before and after the run."""
    import torch
    import transformers

    after = os.getloadavg()
    return (
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}; load average (1 min) {load_before[0]:.2f} before, "
        f"{after[0]:.2f} after. Server: {server.description}."
    )


def report(args: argparse.Namespace, outcomes: list[Outcome], waits: list[float],
           samples: Samples, window: tuple[float, float], context: dict[str, str]) -> str:
    """The Markdown section: command, machine, configuration, the figures."""
    kinds = {k: sum(1 for o in outcomes if o.kind == k) for k in
             ("answered", "abstained", "busy", "rate_limited", "error", "dropped")}
    done = [o for o in outcomes if o.kind in ("answered", "abstained")]
    answered = [o for o in outcomes if o.kind == "answered"]
    wall = window[1] - window[0]
    latency = [o.finished - o.asked for o in done if o.finished is not None]
    visible = [o.first_text - o.asked for o in answered if o.first_text is not None]
    model_ttft = [o.timings["first_token_ms"] / 1000 for o in answered
                  if "first_token_ms" in o.timings]
    open_, streaming = server_intervals(outcomes)
    rows = [
        ("questions asked", f"{len(outcomes)} ({args.students} students × "
                            f"{args.questions_per_student}, think time ~{args.think_time:g} s)"),
        ("answered by the model / abstained by the gate", f"{kinds['answered']} / "
                                                          f"{kinds['abstained']}"),
        ("busy (queue full) / rate-limited / errors / **dropped**",
         f"{kinds['busy']} / {kinds['rate_limited']} / {kinds['error']} / "
         f"**{kinds['dropped']}**"),
        ("wall time, first question to last reply", f"{wall:.1f} s"),
        ("throughput", f"**{60 * len(done) / wall:.1f} answers/min**" if wall > 0 else "–"),
        ("end-to-end latency p50 / p95 / max (ask → finished reply)",
         seconds(latency, 50, 95, 100)),
        ("time to first token p50 / p95, as the student sees it (ask → first text)",
         seconds(visible, 50, 95)),
        ("time to first token p50 / p95, model request → first token (incl. any wait "
         "inside the server)",
         seconds(model_ttft, 50, 95)),
        ("queue wait p50 / p95 / max (`GenerationQueue.on_granted`)", seconds(waits, 50, 95, 100)),
        ("bot: generating / waiting at once, max / mean", f"{gauge(samples.generating)}; "
                                                         f"{gauge(samples.waiting)}"),
        ("largest queue place shown to a student",
         str(max((p for o in outcomes for p in o.places), default=0))),
        ("server: requests open at once, max / mean (answered requests)",
         gauge(overlap(open_, *window))),
        ("server: streams receiving tokens at once, max / mean (answered requests)",
         gauge(overlap(streaming, *window))),
        ("server's own gauges (vLLM `num_requests_running`; `_waiting`), max / mean",
         f"{gauge(samples.server_running)}; {gauge(samples.server_waiting)}"
         if samples.server_running else f"not available: {samples.metrics_note or 'none read'}"),
    ]
    return render_report(args, rows, outcomes, context)


def render_report(args: argparse.Namespace, rows: list[tuple[str, str]],
                  outcomes: list[Outcome], context: dict[str, str]) -> str:
    """Format the rows and the notes as the Markdown section."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"### Load test, {args.students} students ({stamp})", "",
        "Command:", "", "```bash", context["command"], "```", "",
        context["machine"], "",
        context["config"], "",
        "| measurement | value |", "| --- | --- |",
        *(f"| {name} | {value} |" for name, value in rows),
    ]
    told = Counter(o.message for o in outcomes if o.kind != "answered" and o.message)
    if told:
        lines += ["", "What students were told instead of an answer (how often):", ""]
        lines += [f"- {count}×: {message}" for message, count in sorted(told.items())]
    return "\n".join(lines)


# ----- the run -----


async def run_load(services: Services, questions: list[str], args: argparse.Namespace,
                   server: Server) -> tuple[list[Outcome], list[float], Samples, tuple]:
    """Warm up, then let the students ask; return what happened."""
    for question in questions[:5]:  # warm-up: loads the embedder and the tokenizer
        if not (await services.assistant.answer(question)).refused:
            break
    log_dir = Path(tempfile.mkdtemp(prefix="sa-load-log-"))
    log = QuestionLog(log_dir / "bot.sqlite3")
    answerer = Answerer(services.assistant, services.checker, log, services.settings.discord)
    waits: list[float] = []
    answerer.queue.on_granted = waits.append
    outcomes: list[Outcome] = []
    samples, stop = Samples(), asyncio.Event()
    rng = random.Random(args.seed)
    per = args.questions_per_student
    plans = [[questions[(s * per + j) % len(questions)] for j in range(per)]
             for s in range(args.students)]
    watcher = asyncio.create_task(watch(answerer, server, samples, stop))
    began = time.monotonic()
    tasks = [asyncio.create_task(student(s, plans[s], answerer, args, outcomes, rng))
             for s in range(args.students)]
    _, late = await asyncio.wait(tasks, timeout=args.deadline)
    for task in late:  # what is still running now counts as dropped
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    ended = max((o.finished for o in outcomes if o.finished is not None), default=began)
    stop.set()
    await watcher
    log.close()
    shutil.rmtree(log_dir, ignore_errors=True)
    await services.models.aclose()
    return outcomes, waits, samples, (began, ended)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    defaults = DiscordSettings()
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--materials", type=Path, default=SHARED / "course_materials")
    p.add_argument("--papers", nargs="*", default=list(DEFAULT_PAPERS),
                   help="papers/ files ingested besides the guides")
    p.add_argument("--questions", type=Path, default=SHARED / "eval" / "dev_questions.jsonl")
    p.add_argument("--data-dir", type=Path,
                   help="index and model export, kept for the next run (default: a temporary one)")
    p.add_argument("--students", type=int, default=16)
    p.add_argument("--questions-per-student", type=int, default=1)
    p.add_argument("--think-time", type=float, default=5.0, help="seconds between questions")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--base-url", help="an OpenAI-compatible server already running (vLLM)")
    p.add_argument("--model", help="the served model id (default: the first of /v1/models)")
    p.add_argument("--api-key-env", help="name of the variable holding the server's API key")
    p.add_argument("--context-window", type=int, default=2048)
    p.add_argument("--serve-arg", action="append", default=[],
                   help="extra transformers serve argument: --serve-arg=--continuous-batching")
    p.add_argument("--max-concurrent", type=int, default=defaults.max_concurrent)
    p.add_argument("--max-waiting", type=int, default=defaults.max_waiting)
    p.add_argument("--rate-burst", type=int, default=defaults.rate_burst)
    p.add_argument("--rate-per-minute", type=float, default=defaults.rate_per_minute)
    p.add_argument("--deadline", type=float, default=900.0, help="seconds before giving up")
    p.add_argument("--seed", type=int, default=7)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Prepare the index and the server, run the load, print the report."""
    args = parse_args(argv)
    scratch = args.data_dir is None
    args.data_dir = (args.data_dir or Path(tempfile.mkdtemp(prefix="sa-load-"))).resolve()
    load_before = os.getloadavg()
    if args.base_url:
        server = external_server(args.base_url, args.model)
    else:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        model_dir = export_packaged_model("smollm2", args.data_dir)
        server = start_transformers_serve(model_dir, args.data_dir / "serve.log", args.serve_arg)
    try:
        services = build_services(settings_for(args, server))
        build_index(services, args.materials, args.papers)
        questions = in_scope_questions(args.questions, services)
        outcomes, waits, samples, window = asyncio.run(run_load(services, questions, args, server))
        context = describe(args, services, questions, server, load_before)
        print(report(args, outcomes, waits, samples, window, context))
    finally:
        server.stop()
        if scratch:
            shutil.rmtree(args.data_dir, ignore_errors=True)


def describe(args: argparse.Namespace, services: Services, questions: list[str],
             server: Server, load_before: tuple[float, ...]) -> dict[str, str]:
    """The command line, the machine, and the configuration under test."""
    manifest = services.store.manifest()
    chunks = sum(len(e.chunk_ids) for e in manifest.values())
    d = services.settings.discord
    config = (
        f"Model: {server.label}, greedy, max {args.max_tokens} new tokens. Bot: "
        f"`max_concurrent` {d.max_concurrent}, `max_waiting` {d.max_waiting}, rate limit "
        f"{d.rate_burst} at once then {d.rate_per_minute:g}/min per student. Index: "
        f"{len(manifest)} files, {chunks} chunks (guides + {', '.join(args.papers) or 'no papers'})"
        f"; {len(questions)} in-scope dev questions, cycled."
    )
    command = ".venv/bin/python benchmarks/load_test.py " + shlex.join(sys.argv[1:])
    return {"command": command.strip(), "machine": machine_line(server, load_before),
            "config": config}


if __name__ == "__main__":
    main()
