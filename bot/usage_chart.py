"""The usage chart as PNG: questions per day (answered and not covered, and those sent to a TA)
above, 👍/👎 below.

matplotlib's object API on the Agg canvas, no pyplot (no global state: safe in worker threads).
700×500 px with large type, so it stays readable at the size Discord previews an embed image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from bot.usage import UsageReport
from rag.demos.plots import DPI, png_bytes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SIZE_INCHES = (7.0, 5.0)
ANSWERED = "#1f77b4"
NOT_COVERED = "#ff7f0e"
UP = "#2ca02c"
DOWN = "#d62728"
ESCALATED = "#7f3fbf"
LABEL_PT = 13
TICK_PT = 12
TITLE_PT = 15
DAILY_TICKS = 9  # periods of up to this many days get a tick per day


def usage_chart(report: UsageReport, title: str) -> bytes:
    """The usage chart as PNG bytes."""
    return png_bytes(usage_figure(report, title))


def usage_figure(report: UsageReport, title: str) -> Figure:
    """Two panels over the same days: questions (answered + not covered, stacked), votes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
    questions, votes = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    days = report.days
    x = np.arange(len(days))
    abstained = np.array([d.abstained for d in days])
    answered = np.array([d.questions for d in days]) - abstained
    questions.bar(x, answered, color=ANSWERED, label="answered")
    questions.bar(x, abstained, bottom=answered, color=NOT_COVERED,
                  label="not covered (abstained)")
    escalated = [d.escalated for d in days]
    if any(escalated):
        questions.plot(x, escalated, color=ESCALATED, marker="o", linewidth=2,
                       label="sent to a TA")
    _style(questions, "questions per day",
           int(max((answered + abstained).max(initial=0), *escalated, 1)))
    width = 0.4 if len(days) <= 60 else 0.5
    up = [d.up for d in days]
    down = [d.down for d in days]
    votes.bar(x - width / 2, up, width=width, color=UP, label="helpful (thumbs up)")
    votes.bar(x + width / 2, down, width=width, color=DOWN, label="not helpful (thumbs down)")
    _style(votes, "votes on answers", max([*up, *down, 1]))
    votes.set_xlabel(f"day ({report.timezone})", fontsize=LABEL_PT)
    _day_ticks(votes, report)
    fig.suptitle(title, fontsize=TITLE_PT)
    return fig


def _style(ax: Axes, ylabel: str, highest: int) -> None:
    """Integer counts from zero with room above the bars for the legend."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    ax.set_ylabel(ylabel, fontsize=LABEL_PT)
    rows = (len(ax.get_legend_handles_labels()[1]) + 1) // 2  # legend rows, two entries a row
    ax.set_ylim(0, highest * (1.25 + 0.2 * rows))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
    ax.tick_params(labelsize=TICK_PT)
    ax.grid(axis="y", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    bars_first = sorted(range(len(labels)), key=lambda i: isinstance(handles[i], Line2D))
    ax.legend([handles[i] for i in bars_first], [labels[i] for i in bars_first],
              loc="upper left", fontsize=TICK_PT, ncols=2, frameon=False)


def _day_ticks(ax: Axes, report: UsageReport) -> None:
    """Dated ticks on whole days: every day of a short period, at most nine otherwise."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator

    days = report.days

    def name(value: float, _pos: int) -> str:
        i = round(value)
        return days[i].day.strftime("%b %d") if 0 <= i < len(days) and i == value else ""

    every_day = len(days) <= DAILY_TICKS
    ax.xaxis.set_major_locator(FixedLocator(range(len(days))) if every_day
                               else MaxNLocator(nbins=8, integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(name))
    ax.set_xlim(-0.6, len(days) - 0.4)
