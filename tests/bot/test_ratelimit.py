"""The per-user token bucket and the generation queue."""

from __future__ import annotations

import asyncio

import pytest

from bot.ratelimit import GenerationQueue, QueueFull, RateLimited, TokenBucket


def test_bucket_allows_a_burst_then_says_how_long_to_wait():
    now = [0.0]
    bucket = TokenBucket(burst=2, per_minute=6, clock=lambda: now[0])
    bucket.take("ana")
    bucket.take("ana")
    with pytest.raises(RateLimited) as limited:
        bucket.take("ana")
    assert limited.value.retry_after == pytest.approx(10.0)
    assert "try again in 10 s" in limited.value.user_message()
    bucket.take("ben")  # buckets are per user
    now[0] = 10.0
    bucket.take("ana")


def test_a_turn_given_back_can_be_taken_again_but_never_beyond_the_burst():
    now = [0.0]
    bucket = TokenBucket(burst=1, per_minute=1, clock=lambda: now[0])
    bucket.take("ana")
    bucket.give_back("ana")
    bucket.take("ana")  # the turn is there again
    bucket.give_back("ana")
    bucket.give_back("ana")  # a full bucket stays at its burst
    bucket.take("ana")
    with pytest.raises(RateLimited):
        bucket.take("ana")


async def test_queue_runs_at_most_max_concurrent_and_reports_places():
    queue = GenerationQueue(max_concurrent=1, max_waiting=5)
    order: list[str] = []
    places: dict[str, list[int]] = {"b": [], "c": []}
    release = {n: asyncio.Event() for n in "abc"}

    async def job(name: str) -> None:
        async def seen(place: int) -> None:
            places[name].append(place)

        async with queue.slot(seen):
            order.append(name)
            assert queue.active == 1
            await release[name].wait()

    tasks = [asyncio.create_task(job(n)) for n in "abc"]
    await asyncio.sleep(0.05)
    assert order == ["a"] and queue.waiting == 2
    release["a"].set()
    await asyncio.sleep(0.05)
    assert order == ["a", "b"] and places == {"b": [1], "c": [2, 1]}
    release["b"].set()
    release["c"].set()
    await asyncio.gather(*tasks)
    assert order == ["a", "b", "c"]
    assert queue.active == 0 and queue.waiting == 0


async def test_a_full_queue_refuses_more():
    queue = GenerationQueue(max_concurrent=1, max_waiting=1)
    hold = asyncio.Event()

    async def job() -> None:
        async with queue.slot():
            await hold.wait()

    tasks = [asyncio.create_task(job()) for _ in range(2)]
    await asyncio.sleep(0.05)
    with pytest.raises(QueueFull):
        async with queue.slot():
            pass
    hold.set()
    await asyncio.gather(*tasks)


async def test_a_cancelled_waiter_leaves_the_queue():
    queue = GenerationQueue(max_concurrent=1, max_waiting=5)
    hold = asyncio.Event()

    async def job() -> None:
        async with queue.slot():
            await hold.wait()

    first = asyncio.create_task(job())
    second = asyncio.create_task(job())
    await asyncio.sleep(0.05)
    second.cancel()
    await asyncio.sleep(0.05)
    assert queue.waiting == 0
    hold.set()
    await first
    assert queue.active == 0


async def test_queue_reports_how_long_each_holder_waited():
    now = [100.0]
    waits: list[float] = []
    queue = GenerationQueue(max_concurrent=1, max_waiting=5, on_granted=waits.append,
                            clock=lambda: now[0])
    hold = asyncio.Event()

    async def first() -> None:
        async with queue.slot():
            await hold.wait()

    async def second() -> None:
        async with queue.slot():
            pass

    tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
    await asyncio.sleep(0.05)
    assert waits == [0.0]  # the first found a free slot; the second is still waiting
    now[0] = 102.5
    hold.set()
    await asyncio.gather(*tasks)
    assert waits == [0.0, 2.5]


async def test_a_refused_question_reports_no_wait():
    waits: list[float] = []
    queue = GenerationQueue(max_concurrent=1, max_waiting=0, on_granted=waits.append)
    hold = asyncio.Event()

    async def job() -> None:
        async with queue.slot():
            await hold.wait()

    task = asyncio.create_task(job())
    await asyncio.sleep(0.05)
    with pytest.raises(QueueFull):
        async with queue.slot():
            pass
    hold.set()
    await task
    assert len(waits) == 1
