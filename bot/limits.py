"""Discord's size and rate limits, in one pure module: splitting text, checking payloads,
pacing edits.

Nothing here imports discord; payload checks work on the JSON discord.py sends, so tests can
run every recorded request through `payload_problems`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

MESSAGE_CHARS = 2000
EMBED_DESCRIPTION_CHARS = 4096
EMBED_TITLE_CHARS = 256
EMBED_FIELD_NAME_CHARS = 256
EMBED_FIELD_VALUE_CHARS = 1024
EMBED_FOOTER_CHARS = 2048
EMBED_AUTHOR_CHARS = 256
EMBED_FIELDS = 25
EMBEDS_PER_MESSAGE = 10
EMBED_TOTAL_CHARS = 6000
BUTTON_LABEL_CHARS = 80
THREAD_NAME_CHARS = 100
MAX_WAIT_S = 60.0  # the longest 429 wait we honour before trying elsewhere
ELLIPSIS = "…"
FENCE = "```"  # opens and closes a code block


def retry_after_s(error: Exception, default: float = 1.0) -> float:
    """How long Discord asked us to wait (a 429's Retry-After), within sane bounds."""
    seconds: Any = getattr(error, "retry_after", None)
    response = getattr(error, "response", None)
    if seconds is None and response is not None:
        seconds = getattr(response, "headers", {}).get("Retry-After")
    try:
        return min(max(float(seconds), 0.05), MAX_WAIT_S)
    except (TypeError, ValueError):
        return default


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, ending with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)].rstrip() + ELLIPSIS


def tail(text: str, limit: int) -> str:
    """The last `limit` characters of `text`, starting with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return ELLIPSIS + text[len(text) - limit + 1 :].lstrip()


def _cut_point(text: str, limit: int) -> int:
    """Where to cut `text` (longer than limit): the last paragraph, line, sentence or word
    break in the second half of the window, else a hard cut."""
    window = text[:limit]
    for sep in ("\n\n", "\n", ". ", " "):
        at = window.rfind(sep)
        if at >= limit // 2:
            return at + len(sep)
    return limit


def split_for_discord(text: str, limit: int = MESSAGE_CHARS) -> list[str]:
    """Split text into pieces of at most `limit` characters at natural breaks.

    A code block cut in two is closed at the end of one piece and reopened (with its
    language) at the start of the next, so each piece renders on its own; one the text
    itself leaves open (a model's answer cut off at its token limit) is closed at the end.
    """
    if limit < 64:
        raise ValueError("limit too small to split sensibly")
    pieces: list[str] = []
    rest = text.strip()
    if _open_fence(rest) is not None:
        rest += "\n" + FENCE
    reopen = ""
    while rest:
        rest = reopen + rest
        if len(rest) <= limit:
            pieces.append(rest)
            break
        budget = limit - len(FENCE) - 1  # room to close an open code block
        cut = _cut_point(rest, budget)
        piece, rest = rest[:cut].rstrip(), rest[cut:].lstrip("\n ")
        fence = _open_fence(piece)
        if fence is not None:
            piece += "\n" + FENCE
            reopen = fence + "\n"
        else:
            reopen = ""
        if piece.strip():
            pieces.append(piece)
    return pieces


def _open_fence(piece: str) -> str | None:
    """The opening line of a code block left open at the end of `piece`, if any."""
    opened: str | None = None
    for line in piece.splitlines():
        stripped = line.strip()
        if stripped.startswith(FENCE):
            opened = None if opened is not None else stripped
    return opened


def thread_name(question: str) -> str:
    """A thread title from a question: one line, within Discord's 100 characters."""
    line = " ".join(question.split()) or "Question"
    return truncate(line, THREAD_NAME_CHARS)


def embed_chars(embed: Mapping[str, Any]) -> int:
    """Characters that count towards the 6,000 per-message embed total."""
    total = len(embed.get("title") or "") + len(embed.get("description") or "")
    total += len((embed.get("footer") or {}).get("text") or "")
    total += len((embed.get("author") or {}).get("name") or "")
    for f in embed.get("fields") or []:
        total += len(f.get("name") or "") + len(f.get("value") or "")
    return total


def _embed_problems(embed: Mapping[str, Any]) -> Iterable[str]:
    checks = [
        ("title", len(embed.get("title") or ""), EMBED_TITLE_CHARS),
        ("description", len(embed.get("description") or ""), EMBED_DESCRIPTION_CHARS),
        ("footer", len((embed.get("footer") or {}).get("text") or ""), EMBED_FOOTER_CHARS),
        ("author", len((embed.get("author") or {}).get("name") or ""), EMBED_AUTHOR_CHARS),
        ("fields", len(embed.get("fields") or []), EMBED_FIELDS),
    ]
    for f in embed.get("fields") or []:
        checks.append(("field name", len(f.get("name") or ""), EMBED_FIELD_NAME_CHARS))
        checks.append(("field value", len(f.get("value") or ""), EMBED_FIELD_VALUE_CHARS))
        if not f.get("name") or not f.get("value"):
            yield "embed field with an empty name or value"
    for what, size, limit in checks:
        if size > limit:
            yield f"embed {what}: {size} > {limit}"


def payload_problems(payload: Mapping[str, Any]) -> list[str]:
    """Every way a message payload (as sent to Discord) breaks Discord's limits."""
    problems: list[str] = []
    content = payload.get("content") or ""
    if len(content) > MESSAGE_CHARS:
        problems.append(f"content: {len(content)} > {MESSAGE_CHARS}")
    embeds = payload.get("embeds") or []
    if len(embeds) > EMBEDS_PER_MESSAGE:
        problems.append(f"embeds: {len(embeds)} > {EMBEDS_PER_MESSAGE}")
    for embed in embeds:
        problems.extend(_embed_problems(embed))
    total = sum(embed_chars(e) for e in embeds)
    if total > EMBED_TOTAL_CHARS:
        problems.append(f"embeds total: {total} > {EMBED_TOTAL_CHARS}")
    for row in payload.get("components") or []:
        for item in row.get("components") or []:
            if len(item.get("label") or "") > BUTTON_LABEL_CHARS:
                problems.append(f"button label > {BUTTON_LABEL_CHARS}")
    return problems


def pack_pages(pages: list[str], budget: int = EMBED_TOTAL_CHARS) -> list[list[str]]:
    """Group embed-sized pages into messages whose embeds stay under the 6,000 total."""
    messages: list[list[str]] = []
    size = 0
    for page in pages:
        if messages and size + len(page) <= budget and len(messages[-1]) < EMBEDS_PER_MESSAGE:
            messages[-1].append(page)
            size += len(page)
        else:
            messages.append([page])
            size = len(page)
    return messages


class EditThrottle:
    """Lets an edit through at most once per `interval_s` (Discord rate-limits message edits)."""

    def __init__(self, interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self._clock = clock
        self._last: float | None = None

    def ready(self) -> bool:
        """Whether an edit may be sent now; if so, the time is recorded."""
        now = self._clock()
        if self._last is not None and now - self._last < self.interval_s:
            return False
        self._last = now
        return True


class ChannelPacer:
    """Discord's message rate per channel: at most `limit` writes (sends and edits) in any
    `window_s` seconds, counted across every answer in that channel.

    Drafts ask `try_take` and are skipped when the window is full; a final answer awaits
    `take`, which waits for room instead. `hold` keeps a channel quiet after a 429.
    """

    def __init__(
        self,
        limit: int = 5,
        window_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._sleep = sleep
        self._writes: dict[int, deque[float]] = {}
        self._quiet_until: dict[int, float] = {}

    def wait_s(self, channel: int) -> float:
        """Seconds until a write to `channel` would stay within the rate (0: now)."""
        now = self._clock()
        writes = self._writes.setdefault(channel, deque())
        while writes and now - writes[0] >= self.window_s:
            writes.popleft()
        full = writes[0] + self.window_s - now if len(writes) >= self.limit else 0.0
        return max(full, self._quiet_until.get(channel, now) - now, 0.0)

    def try_take(self, channel: int) -> bool:
        """Record a write if one is allowed now (for drafts, which may be skipped)."""
        if self.wait_s(channel) > 0:
            return False
        self._writes[channel].append(self._clock())
        return True

    async def take(self, channel: int) -> None:
        """Wait until a write is allowed, then record it (for what must be delivered)."""
        while (wait := self.wait_s(channel)) > 0:
            await self._sleep(wait)
        self._writes[channel].append(self._clock())

    def hold(self, channel: int, seconds: float) -> None:
        """No writes to `channel` for `seconds` (Discord answered 429)."""
        self._quiet_until[channel] = max(self._quiet_until.get(channel, 0.0),
                                         self._clock() + seconds)
