"""A streamed answer's generator is closed (its cleanup run) when the client leaves in the middle of a send.

Django's handler cancels the response task when the client disconnects; if that happens while it awaits
`send` (the socket's flow control), only the response's own iterator is closed. The /v1 stream's cleanup
(free the request's place, tell the worker to cancel) lives in the generator's `finally`, so the
generator itself must be closed then, not whenever the garbage collector finds it."""

from __future__ import annotations

import asyncio
import contextlib

from django.core.handlers.asgi import ASGIHandler
from django.http import StreamingHttpResponse

from console.inference.views import ClosingStream


async def _leave_mid_send(response_class: type[StreamingHttpResponse]) -> list[str]:
    events: list[str] = []

    async def answer():
        try:
            for i in range(1000):
                yield f"data: {i}\n\n"
        finally:
            await asyncio.sleep(0)  # the real cleanup awaits Redis
            events.append("closed")

    sent, stuck = 0, asyncio.Event()

    async def send(message: dict) -> None:
        nonlocal sent
        if message["type"] == "http.response.body":
            sent += 1
            if sent == 3:  # the client stopped reading: the transport's buffer is full
                stuck.set()
                await asyncio.Event().wait()

    task = asyncio.create_task(ASGIHandler().send_response(response_class(answer()), send))
    await stuck.wait()
    task.cancel()  # what the handler does when http.disconnect arrives
    with contextlib.suppress(asyncio.CancelledError):
        await task
    events.append(f"after cancel, {sent} sent")
    return events


def test_a_client_that_leaves_mid_send_closes_the_answer_at_once():
    events = asyncio.run(_leave_mid_send(ClosingStream))
    assert events == ["closed", "after cancel, 3 sent"]
