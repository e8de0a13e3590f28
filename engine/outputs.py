"""What a caller gets back: streamed deltas, the final completion, and the handle that joins them.

A handle is filled by the engine's loop thread and read by the caller as a plain iterator
(`for delta in handle`) or from asyncio (`async for delta in handle`)."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenLogprob:
    token_id: int
    token: str
    logprob: float
    top: list[tuple[int, str, float]] = field(default_factory=list)  # (id, text, logprob)


@dataclass(slots=True)
class Delta:
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass(slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Completion:
    request_id: str
    text: str
    token_ids: list[int]
    finish_reason: str  # stop | length | cancelled
    usage: Usage
    ttft_s: float | None  # time to first token, from submission
    total_s: float
    logprobs: list[TokenLogprob] = field(default_factory=list)


_END = object()


class RequestHandle:
    """One generation in flight. Iterate it for deltas; `result()` waits for the completion;
    `cancel()` stops it and frees its KV blocks at the engine's next step."""

    def __init__(self, request_id: str, cancel: Callable[[], None]):
        self.request_id = request_id
        self._cancel = cancel
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._done = threading.Event()
        self._completion: Completion | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._aqueue: asyncio.Queue[object] | None = None

    # -- engine side (loop thread) --
    def _push(self, item: object) -> None:
        with self._lock:
            if self._aqueue is not None and self._loop is not None:
                self._loop.call_soon_threadsafe(self._aqueue.put_nowait, item)
            else:
                self._queue.put(item)

    def _emit(self, delta: Delta) -> None:
        self._push(delta)

    def _finish(self, completion: Completion | None, error: BaseException | None = None) -> None:
        self._completion, self._error = completion, error
        self._done.set()
        self._push(_END)

    # -- caller side --
    def cancel(self) -> None:
        if not self._done.is_set():
            self._cancel()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float | None = None) -> Completion:
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.request_id} did not finish within {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._completion is not None
        return self._completion

    def __iter__(self) -> Iterator[Delta]:
        while True:
            item = self._queue.get()
            if item is _END:
                if self._error is not None:
                    raise self._error
                return
            yield item  # type: ignore[misc]

    def coalesced(self) -> Iterator[Delta]:
        """Like iterating, but the deltas already waiting when the reader comes back are merged into
        one (text, token ids and logprobs joined, in order): a reader that fell behind the engine (a
        serving worker sending each delta on to Redis, on a busy machine) catches up in one step
        instead of one per token. A reader that keeps up sees the deltas one by one, as before."""
        while True:
            item = self._queue.get()
            ended = item is _END
            if not ended:
                merged: Delta = item  # type: ignore[assignment]
                while True:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is _END:
                        ended = True
                        break
                    merged = Delta(merged.text + more.text, merged.token_ids + more.token_ids,  # type: ignore[attr-defined]
                                   merged.logprobs + more.logprobs)  # type: ignore[attr-defined]
                yield merged
            if ended:
                if self._error is not None:
                    raise self._error
                return

    async def __aiter__(self) -> AsyncIterator[Delta]:
        with self._lock:  # from now on the engine pushes straight into the event loop
            self._loop = asyncio.get_running_loop()
            self._aqueue = asyncio.Queue()
            while True:
                try:
                    self._aqueue.put_nowait(self._queue.get_nowait())
                except queue.Empty:
                    break
        while True:
            item = await self._aqueue.get()
            if item is _END:
                if self._error is not None:
                    raise self._error
                return
            yield item  # type: ignore[misc]

    async def aresult(self) -> Completion:
        return await asyncio.to_thread(self.result)
