"""Abuse and load control: a per-user token bucket and a queue in front of generation."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager


class RateLimited(Exception):
    """A user asked too often; `retry_after` says when the next question is allowed."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited for {retry_after:.1f} s")
        self.retry_after = retry_after

    def user_message(self) -> str:
        """The friendly line shown to the user."""
        seconds = max(1, math.ceil(self.retry_after))
        return f"You're asking quickly! Please try again in {seconds} s."


class QueueFull(Exception):
    """Too many answers are waiting already."""


class TokenBucket:
    """Per-key token buckets: `burst` tokens, refilled at `per_minute` tokens a minute."""

    def __init__(
        self, burst: int, per_minute: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[Hashable, tuple[float, float]] = {}

    def take(self, key: Hashable) -> None:
        """Spend one token of `key`'s bucket, or raise RateLimited with the wait."""
        now = self._clock()
        tokens, stamp = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - stamp) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            raise RateLimited((1.0 - tokens) / self.rate)
        self._buckets[key] = (tokens - 1.0, now)

    def give_back(self, key: Hashable) -> None:
        """Return a token `take` spent on something that never reached the user."""
        now = self._clock()
        tokens, stamp = self._buckets.get(key, (float(self.burst), now))
        self._buckets[key] = (min(float(self.burst), tokens + (now - stamp) * self.rate + 1.0),
                              now)


PositionCallback = Callable[[int], Awaitable[None]]
WaitCallback = Callable[[float], None]


class GenerationQueue:
    """At most `max_concurrent` holders at once; later arrivals wait first-come, first-served.

    A waiter is told its place (1 = next) whenever it changes, so the user can see it.
    `on_granted`, when set, is called with the seconds each holder waited for its slot (0.0
    when one was free): the queue's wait for metrics and the load test, measured here because
    nothing outside can tell when a slot is handed over.
    """

    def __init__(
        self,
        max_concurrent: int,
        max_waiting: int,
        *,
        on_granted: WaitCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_concurrent = max_concurrent
        self.max_waiting = max_waiting
        self.on_granted = on_granted
        self._clock = clock
        self.active = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._moved = asyncio.Condition()

    @property
    def waiting(self) -> int:
        """How many are waiting for a slot."""
        return len(self._waiting)

    @asynccontextmanager
    async def slot(self, on_position: PositionCallback | None = None) -> AsyncIterator[None]:
        """Hold a generation slot for the duration of the block (waiting for one if needed)."""
        asked = self._clock()
        if self.active >= self.max_concurrent or self._waiting:
            await self._wait(on_position)
        else:
            self.active += 1
        try:
            if self.on_granted is not None:
                self.on_granted(self._clock() - asked)
            yield
        finally:
            self._release()

    async def _wait(self, on_position: PositionCallback | None) -> None:
        if len(self._waiting) >= self.max_waiting:
            raise QueueFull("the answer queue is full")
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(ticket)
        shown = 0
        try:
            while not ticket.done():
                place = self._waiting.index(ticket) + 1
                if on_position is not None and place != shown:
                    shown = place
                    await on_position(place)
                async with self._moved:
                    if not ticket.done():
                        await self._moved.wait()
            await ticket
        except BaseException:
            if ticket in self._waiting:
                self._waiting.remove(ticket)
                asyncio.get_running_loop().create_task(self._notify())  # others move up
            elif ticket.done() and not ticket.cancelled():
                self._release()  # granted while being cancelled: pass the slot on
            raise

    def _release(self) -> None:
        """Hand the slot to the next waiter, or free it."""
        if self._waiting:
            self._waiting.popleft().set_result(None)  # the slot moves over: `active` unchanged
            asyncio.get_running_loop().create_task(self._notify())
        else:
            self.active -= 1

    async def _notify(self) -> None:
        async with self._moved:
            self._moved.notify_all()
