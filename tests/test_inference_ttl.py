"""The web side's per-process cache: entries expire, and a burst of misses for one key loads once."""

from __future__ import annotations

import asyncio
import time

from console.inference.ttl import TTLCache


def test_an_entry_expires_after_its_time_to_live():
    cache: TTLCache[str] = TTLCache(ttl_s=0.05)
    cache.put("k", "v")
    assert cache.get("k") == "v"
    time.sleep(0.06)
    assert cache.get("k") is None


def test_concurrent_misses_for_one_key_share_a_single_load():
    cache: TTLCache[str] = TTLCache(ttl_s=10)
    loads = 0

    async def load() -> str:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.05)
        return "row"

    async def burst() -> list[str | None]:
        return await asyncio.gather(*(cache.get_or_load("k", load) for _ in range(50)))

    assert asyncio.run(burst()) == ["row"] * 50 and loads == 1
    assert asyncio.run(burst()) == ["row"] * 50 and loads == 1  # then served from the cache


def test_a_miss_that_finds_nothing_is_not_cached():
    cache: TTLCache[str] = TTLCache(ttl_s=10)

    async def nothing() -> None:
        return None

    assert asyncio.run(cache.get_or_load("k", nothing)) is None
    assert cache.get("k") is None
