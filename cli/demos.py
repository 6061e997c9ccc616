"""`study-assistant demo …`: the teaching demos in the terminal.

Rich tables on a terminal, plain text otherwise, `--json` for scripts. `register(app)` mounts
the `demo` group and returns it, so that `cli.checks` can add its commands to the same group.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table as RichTable

from cli.common import AsJson, Model, load_settings, out, reported
from rag.demos import attention as attention_demo
from rag.demos import fewshot as fewshot_demo
from rag.demos import fewshot_accuracy as accuracy_demo
from rag.demos import nexttoken as nexttoken_demo
from rag.demos import tokenize as tokenize_demo
from rag.demos.common import DemoInputError, Table, pick_local_model, pick_model, text_table
from rag.demos.nexttoken import NextTokenResult
from rag.demos.plots import accuracy_chart, attention_heatmap, next_token_chart
from rag.llm.registry import ModelRegistry
from rag.services import build_models


def register(app: typer.Typer) -> typer.Typer:
    """Mount the `demo` group on the app and return it."""
    demo_app = typer.Typer(
        name="demo",
        help="Teaching demos on the course's models: next token, tokenize, attention, few-shot.",
        no_args_is_help=True,
    )
    demo_app.command("nexttoken")(nexttoken_command)
    demo_app.command("tokenize")(tokenize_command)
    demo_app.command("attention")(attention_command)
    demo_app.command("fewshot")(fewshot_command)
    demo_app.command("fewshot-accuracy")(fewshot_accuracy_command)
    app.add_typer(demo_app, name="demo")
    return demo_app


DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Where models are cached [env: STUDY_ASSISTANT_DATA_DIR; default: ./.study-assistant]",
        show_default=False,
    ),
]
Png = Annotated[Path | None, typer.Option("--png", help="Write the chart to this PNG file")]


def demo_registry(data_dir: Path | None) -> ModelRegistry:
    """The configured models (only the models: the demos need no index)."""
    return build_models(load_settings(data_dir))


def show(title: str, table: Table) -> None:
    """A table: rich on a terminal, fixed-width text otherwise."""
    console = out
    if not console.is_terminal:
        print(f"{title}\n{text_table(table)}\n", flush=True)
        return
    header, rows = table
    rich = RichTable(title=escape(title), title_justify="left")
    for name in header:
        rich.add_column(escape(name))
    for row in rows:
        rich.add_row(*(escape(cell) for cell in row))
    console.print(rich)


def say(text: str) -> None:
    """A line of plain text (never rich markup)."""
    out.print(text, markup=False, highlight=False)


def print_json(result: Any) -> None:
    """A result dataclass as JSON."""
    print(json.dumps(dataclasses.asdict(result), ensure_ascii=False, indent=2), flush=True)


def write_png(path: Path, png: bytes, err: bool = False) -> None:
    """Write a chart and say where it went (on stderr when stdout carries JSON)."""
    path.write_bytes(png)
    note = f"chart: {path} ({len(png) / 1024:.0f} KiB)"
    if err:
        typer.echo(note, err=True)
    else:
        say(note)


def nexttoken_command(
    prompt: Annotated[str, typer.Argument(help="The text whose next token to predict")],
    top_k: Annotated[int, typer.Option("--top-k", help="How many candidates (1-20)")] = 10,
    temperature: Annotated[
        float, typer.Option("--temperature", "-t", help="0 (greedy) to 5")
    ] = 1.0,
    steps: Annotated[int, typer.Option("--steps", help="Tokens to generate (1-32)")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sampled run")] = 0,
    chat: Annotated[
        bool, typer.Option("--chat", help="Also show the distribution under the chat template")
    ] = False,
    model: Model = None,
    png: Png = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """The most likely next tokens of the raw text and their probabilities; greedy vs sampled."""
    with reported():
        request = nexttoken_demo.NextTokenRequest.checked(
            prompt, top_k, temperature, steps, seed, chat)
        chat = pick_model(demo_registry(data_dir), model)
        result = asyncio.run(nexttoken_demo.next_token(chat, request))
    if png is not None and result.top:
        write_png(png, next_token_chart(result))
    if as_json:
        print_json(result)
        return
    print_next_token(result)


def print_next_token(result: NextTokenResult) -> None:
    """The top-k table, the step table and both continuations."""
    if result.unavailable:
        say(result.unavailable)
        return
    req = result.request
    show(f"Next token after {req.prompt!r} · {result.model} · raw text",
         nexttoken_demo.top_table(result))
    if result.entropy_bits is not None and result.entropy_at_1_bits is not None:
        say(f"entropy: {result.entropy_bits:.2f} bits at T={req.temperature or 1:g}, "
            f"{result.entropy_at_1_bits:.2f} bits at T=1")
    if not result.exact:
        say("(the server returns only its top tokens: probabilities at T are renormalised "
            "over those)")
    if req.steps > 1:
        show(f"{len(result.greedy)} steps, one token at a time", nexttoken_demo.steps_table(result))
    shown = req.prompt if result.continues_prompt else ""  # a chat reply starts afresh
    say(f"greedy:  {shown}{result.greedy_text}")
    if result.sampled:
        say(f"sampled: {shown}{result.sampled_text}")
    if result.chat_view is not None:
        print_chat_view(result, result.chat_view)
    say(f"[{result.model} · {result.seconds:.1f} s]")


def print_chat_view(result: NextTokenResult, chat: NextTokenResult) -> None:
    """The raw and chat-template distributions side by side, and why they differ."""
    if chat.unavailable:
        say(chat.unavailable)
        return
    show(f"Raw text beside the chat template · {result.model} (p at T=1)",
         nexttoken_demo.views_table(result))
    say(result.why)
    say(f"greedy under the chat template: {chat.greedy_text}")


def tokenize_command(
    text: Annotated[str, typer.Argument(help="The text to tokenize")],
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="A model from the registry (repeat; default: all local)"),
    ] = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """How each model's tokenizer cuts the text: pieces, ids and counts side by side."""
    with reported():
        result = asyncio.run(tokenize_demo.tokenize(demo_registry(data_dir), text, model))
    if as_json:
        print_json(result)
        return
    show("Token counts", tokenize_demo.counts_table(result))
    for tokenization in result.tokenizations:
        say(f"{tokenization.model}: {tokenize_demo.pieces_line(tokenization)}")
    say("")
    for tokenization in result.tokenizations:
        title = f"{tokenization.model} · {tokenization.kind}"
        show(title, tokenize_demo.tokens_table(tokenization))


def attention_command(
    sentence: Annotated[str, typer.Argument(help="A short sentence")],
    layer: Annotated[
        int | None, typer.Option("--layer", help="From 0 [default: the middle layer]")
    ] = None,
    head: Annotated[
        int | None, typer.Option("--head", help="From 0 [default: the mean of all heads]")
    ] = None,
    model: Model = None,
    png: Png = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """A heatmap of one layer's attention over a sentence (local models only)."""
    with reported():
        request = attention_demo.AttentionRequest.checked(sentence, layer, head)
        chat = pick_local_model(demo_registry(data_dir), model, "Attention")
        result = asyncio.run(attention_demo.attention(chat, request))
    if png is not None:
        write_png(png, attention_heatmap(result))
    if as_json:
        print_json(result)
        return
    say(result.summary())
    show(f"{result.model} · layer {result.layer}/{result.layers - 1}, {result.head_label}",
         attention_demo.focus_table(result))


def fewshot_command(
    input: Annotated[str, typer.Argument(help="The input to answer")],
    task: Annotated[str, typer.Option("--task", help="What to do, in one sentence")],
    examples: Annotated[
        str, typer.Option("--examples", help="'input => output; input => output'")
    ],
    model: Model = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """Zero-shot versus few-shot answers from the same model (greedy)."""
    with reported():
        request = fewshot_demo.FewShotRequest.checked(task, examples, input)
        chat = pick_model(demo_registry(data_dir), model)
        result = asyncio.run(fewshot_demo.few_shot(chat, request))
    if as_json:
        print_json(result)
        return
    show(f"{result.model} · {request.task}", fewshot_demo.comparison_table(result))
    say(f"few-shot prompt:\n{result.few_shot.prompt}")


def fewshot_accuracy_command(
    task: Annotated[
        str, typer.Option("--task", help=f"A built-in task: {', '.join(accuracy_demo.BUILT_IN)}")
    ] = "sentiment",
    file: Annotated[
        Path | None,
        typer.Option("--file", help='Your own task: JSONL lines {"input": ..., "label": ...}, '
                     'optionally a first line {"instruction": ...}'),
    ] = None,
    models: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="A model (repeat; default: gemma3-base and smollm2)"),
    ] = None,
    ks: Annotated[
        list[int] | None, typer.Option("--k", help="Examples per prompt (repeat; default 0 1 2 4)")
    ] = None,
    items: Annotated[
        int | None, typer.Option("--items", min=1, help="Score only the first N items")
    ] = None,
    png: Png = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """Accuracy of zero-shot vs few-shot prompts (k = 0, 1, 2, 4) on a labelled task."""
    with reported():
        labelled = (accuracy_demo.parse_task(file.name, read_task_file(file)) if file
                    else accuracy_demo.built_in_task(task))
        registry = demo_registry(data_dir)
        names = accuracy_demo.check_models(models, registry.names())
        chosen_ks = accuracy_demo.check_ks(ks)
        chats = [pick_model(registry, n) for n in names]
        result = asyncio.run(accuracy_demo.fewshot_accuracy(
            chats, labelled, chosen_ks, limit=items, progress=to_stderr))
    if png is not None:
        write_png(png, accuracy_chart(result), err=as_json)
    if as_json:
        print(json.dumps(result.as_json(), ensure_ascii=False, indent=2), flush=True)
        return
    show(f"Few-shot accuracy · {result.task.name} · exact label match",
         accuracy_demo.accuracy_table(result))
    say(f"task: {result.task.instruction}")
    say(f"chance: {accuracy_demo.chance(result):.0%} · {len(result.results)} answers in "
        f"{result.seconds:.0f} s (greedy, first line; examples are other items of the task)")


def read_task_file(path: Path) -> bytes:
    """The bytes of a task file, or a one-line error."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DemoInputError(f"Cannot read {path}: {exc.strerror or exc}") from exc


async def to_stderr(status: str) -> None:
    """Progress on stderr, so that `--json` output stays clean."""
    typer.echo(status, err=True)
