"""Charts for the demos as PNG bytes: matplotlib's object API on the Agg canvas.

No pyplot: a `Figure` per chart keeps no global state, so charts can be drawn in worker
threads. Sizes stay within 1000×800 px (well under 1 MB).
"""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING

from rag.demos.attention import AttentionResult
from rag.demos.common import visible
from rag.demos.fewshot_accuracy import AccuracyResult, chance
from rag.demos.nexttoken import NextTokenResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
TITLE_CHARS = 60
GREEDY_COLOUR = "#d62728"
AT_T_COLOUR = "#1f77b4"
AT_1_COLOUR = "#aec7e8"


def label(text: str, limit: int = 24) -> str:
    """Token text safe for a chart label: visible spaces, no mathtext, not too long."""
    shown = visible(text) if not text.startswith("<") else text
    shown = shown if len(shown) <= limit else shown[: limit - 1] + "…"
    return shown.replace("$", r"\$")


def next_token_chart(result: NextTokenResult) -> bytes:
    """The next-token bar chart as PNG."""
    return png_bytes(next_token_figure(result))


def next_token_figure(result: NextTokenResult) -> Figure:
    """Bars of the top-k next tokens (at T and at 1, greedy choice in red); with the chat
    option, the chat-template view in a second panel beside the raw one."""
    from matplotlib.figure import Figure

    views = [result] if result.chat_view is None else [result, result.chat_view]
    rows = max(len(v.top) for v in views)
    fig = Figure(figsize=(8 if len(views) == 1 else 10, 1.6 + 0.32 * max(rows, 3)), dpi=DPI,
                 layout="constrained")
    axes = fig.subplots(1, len(views), squeeze=False)[0]
    for ax, view in zip(axes, views, strict=True):
        _draw_bars(ax, view)
        ax.set_title(view.view if len(views) > 1 else "", fontsize=10)
    prompt = result.request.prompt.strip()
    short = prompt if len(prompt) <= TITLE_CHARS else "…" + prompt[-(TITLE_CHARS - 1):]
    plain = " ".join(short.split()).replace("$", r"\$")
    fig.suptitle(f"Next token after “{plain}”\nmodel: {result.model}")
    return fig


def _draw_bars(ax: Axes, result: NextTokenResult) -> None:
    top = list(result.top)
    t = result.request.temperature
    rows = list(range(len(top)))[::-1]  # most likely at the top
    side_by_side = 0 < t != 1.0
    height = 0.4 if side_by_side else 0.7
    at_t = [c.prob for c in top]
    colours = [GREEDY_COLOUR if i == 0 else AT_T_COLOUR for i in range(len(top))]
    shift = height / 2 if side_by_side else 0.0
    ax.barh([r + shift for r in rows], at_t, height=height, color=colours,
            label=f"T = {t:g}" if t else "T = 1 (greedy picks the red bar)")
    if side_by_side:
        ax.barh([r - shift for r in rows], [c.prob_at_1 for c in top], height=height,
                color=AT_1_COLOUR, label="T = 1")
    ax.set_yticks(rows, [label(c.text) for c in top])
    ax.set_xlabel("probability")
    ax.set_ylabel("next token")
    ax.set_xlim(0, min(1.0, max([*at_t, *(c.prob_at_1 for c in top), 0.01]) * 1.15))
    ax.legend(loc="lower right")


def attention_heatmap(result: AttentionResult) -> bytes:
    """The attention heatmap as PNG."""
    return png_bytes(attention_figure(result))


def attention_figure(result: AttentionResult) -> Figure:
    """The [query × key] attention weights as a heatmap with token labels on both axes."""
    from matplotlib.figure import Figure

    n = len(result.tokens)
    side = min(8.0, 3.5 + 0.16 * n)
    fig = Figure(figsize=(side + 1.2, side), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(result.weights, cmap="viridis", vmin=0.0, aspect="auto")
    labels = [label(t, 14) for t in result.tokens]
    ax.set_xticks(range(n), labels, rotation=90, fontsize=_font(n))
    ax.set_yticks(range(n), labels, fontsize=_font(n))
    ax.set_xlabel("attended-to token (key)")
    ax.set_ylabel("attending token (query)")
    ax.set_title(f"Attention · {result.model} · layer {result.layer}, {result.head_label}")
    fig.colorbar(image, ax=ax, label="attention weight")
    return fig


def _font(n: int) -> float:
    return 9.0 if n <= 20 else 7.0 if n <= 36 else 6.0


MODEL_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")


def accuracy_chart(result: AccuracyResult) -> bytes:
    """The few-shot accuracy bar chart as PNG."""
    return png_bytes(accuracy_figure(result))


def accuracy_figure(result: AccuracyResult) -> Figure:
    """Accuracy per k, one bar per model, the chance level dashed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(result.models)
    for m, model in enumerate(result.models):
        xs = [i + (m - (len(result.models) - 1) / 2) * width for i in range(len(result.ks))]
        values = [result.accuracy(model, k) for k in result.ks]
        bars = ax.bar(xs, values, width=width, label=label(model, 30),
                      color=MODEL_COLOURS[m % len(MODEL_COLOURS)])
        ax.bar_label(bars, labels=[f"{v:.0%}" for v in values], fontsize=8)
    ax.axhline(chance(result), color="grey", linestyle="--", linewidth=1,
               label=f"chance ({chance(result):.0%})")
    ax.set_xticks(range(len(result.ks)), [f"k = {k}" for k in result.ks])
    ax.set_xlabel("examples in the prompt (k)")
    ax.set_ylabel("accuracy (exact label)")
    ax.set_ylim(0, 1.1)
    ax.legend(loc="upper left", fontsize=8)
    items = len({r.item for r in result.results})
    ax.set_title(f"Few-shot accuracy · {label(result.task.name, 40)} · {items} items")
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG; glyphs missing from the font (emoji, CJK) draw as boxes, quietly."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing")
        fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()
