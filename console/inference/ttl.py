"""A small per-process cache with a time to live, for the lookups every inference request repeats
(its API key, its deployment row): under a burst, each would otherwise queue for Django's one
database thread."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class TTLCache(Generic[V]):
    def __init__(self, ttl_s: float, size: int = 4096):
        self.ttl_s, self.size = ttl_s, size
        self._items: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._loading: dict[str, asyncio.Future[V | None]] = {}

    async def get_or_load(self, key: str, load: Callable[[], Awaitable[V | None]]) -> V | None:
        """The cached value, else `load()`'s (cached unless None). Concurrent misses for one key share
        one load, so a burst of requests with the same key costs one database lookup, not one each."""
        value = self.get(key)
        if value is not None:
            return value
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await load()
            if value is not None:
                self.put(key, value)
            future.set_result(value)
            return value
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            del self._loading[key]

    def get(self, key: str) -> V | None:
        item = self._items.get(key)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def put(self, key: str, value: V) -> V:
        self._items[key] = (time.monotonic() + self.ttl_s, value)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()
