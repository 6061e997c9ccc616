"""The usage chart: labelled axes, a title and legends, day ticks, a PNG Discord can preview."""

from __future__ import annotations

import io
from datetime import date, timedelta

from PIL import Image

from bot.usage import Day, UsageReport
from bot.usage_chart import usage_chart, usage_figure
from rag.demos.plots import png_bytes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def report(days: int = 8) -> UsageReport:
    """A week of made-up counts, one quiet day."""
    start = date(2026, 3, 3)
    counts = [Day(start + timedelta(i), 3 + i, i % 3, i % 2, (i + 1) % 2) for i in range(days)]
    counts[2] = Day(start + timedelta(2))
    return UsageReport(tuple(counts), (), "Europe/Berlin", 0, 0)


def test_the_chart_has_a_title_labelled_axes_and_legends():
    fig = usage_figure(report(), "Usage over the last 7 days")
    questions, votes = fig.axes
    assert fig.get_suptitle() == "Usage over the last 7 days"
    assert questions.get_ylabel() == "questions per day"
    assert votes.get_ylabel() == "votes on answers"
    assert votes.get_xlabel() == "day (Europe/Berlin)"
    legends = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes]
    assert legends == [["answered", "not covered (abstained)"],
                       ["helpful (thumbs up)", "not helpful (thumbs down)"]]


def test_the_stacked_bars_add_up_to_the_questions_of_each_day():
    fig = usage_figure(report(), "t")
    answered, abstained = fig.axes[0].containers
    heights = [a.get_height() + b.get_height() for a, b in zip(answered, abstained, strict=True)]
    assert heights == [d.questions for d in report().days]


def test_the_day_ticks_are_dates_of_the_period():
    fig = usage_figure(report(days=60), "t")
    png_bytes(fig)  # lays the figure out, so the tick labels are final
    shown = [t.get_text() for t in fig.axes[1].get_xticklabels() if t.get_text()]
    assert 3 <= len(shown) <= 8
    assert set(shown) <= {(date(2026, 3, 3) + timedelta(i)).strftime("%b %d") for i in range(60)}


def test_the_png_is_valid_and_of_a_size_discord_previews():
    png = usage_chart(report(), "Usage over the last 7 days")
    assert png.startswith(PNG_SIGNATURE)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (700, 500)
    assert len(png) < 200_000


def test_an_empty_period_still_draws():
    empty = UsageReport(tuple(Day(date(2026, 3, 3) + timedelta(i)) for i in range(8)), (),
                        "UTC", 0, 0)
    assert Image.open(io.BytesIO(usage_chart(empty, "t"))).size == (700, 500)


def test_escalations_are_drawn_as_a_line_only_when_there_are_any():
    days = tuple(Day(d.day, d.questions, d.abstained, d.up, d.down, escalated=i % 2)
                 for i, d in enumerate(report().days))
    fig = usage_figure(UsageReport(days, (), "UTC", 0, 0), "t")
    questions = fig.axes[0]
    assert [t.get_text() for t in questions.get_legend().get_texts()] == [
        "answered", "not covered (abstained)", "sent to a TA"]
    (line,) = questions.get_lines()
    assert list(line.get_ydata()) == [d.escalated for d in days]
