"""Streaming inference RPCs (genet.v1 ClassifyStream, KServe's ModelStreamInfer): many requests over one call.

Each request read from the stream is answered by its own task, so requests of one stream are batched
together like concurrent unary calls, and responses are written in the order they finish. A stream's
requests being computed hold at most --max-queue-size images, so a stream alone never overflows the
queue: beyond that it stops reading, and HTTP/2 flow control holds the client back. When the server
shuts down (the registry starts closing), the stream stops reading, answers the requests it has
read, and ends with UNAVAILABLE: requests without a response were not computed and can be sent again
(to another server). A stream the client cancels, or whose deadline passes, cancels the requests it
has in flight; their queued images are dropped.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Set, TypeVar

import grpc

from serving.dataplane import DataPlane

Request = TypeVar("Request")
Response = TypeVar("Response")

SHUTTING_DOWN = "the server is shutting down: requests without a response were not computed; send them again"


class ImageBudget:
    """Images a stream may have in flight; taking waits until they fit."""

    def __init__(self, images: int) -> None:
        self.limit = images
        self._free = images
        self._changed = asyncio.Condition()

    async def take(self, images: int) -> int:
        """Wait until `images` (at most the whole budget) are free and hold them; the number held."""
        images = min(images, self.limit)
        async with self._changed:
            await self._changed.wait_for(lambda: self._free >= images)
            self._free -= images
        return images

    async def give(self, images: int) -> None:
        """Free images taken before."""
        async with self._changed:
            self._free += images
            self._changed.notify_all()


async def answer_stream(context: grpc.aio.ServicerContext, answer: Callable[[Request], Awaitable[Response]],
                        images_of: Callable[[Request], int], dataplane: DataPlane) -> None:
    """Read requests from `context` until the client half-closes the stream, write `answer(request)` for
    each; `answer` maps every failure of its request to a response and never raises. The stream's
    requests in flight hold at most --max-queue-size images (`images_of` counts a request's): a request
    that does not fit waits, and reading with it, until earlier ones are answered."""
    closing = dataplane.registry.closing
    budget = ImageBudget(dataplane.settings.max_queue_size)
    answering: Set[asyncio.Task] = set()
    writing = asyncio.Lock()  # grpc.aio takes one write at a time

    async def answer_one(request: Request, held: int) -> None:
        try:
            response = await answer(request)
            async with writing:
                await context.write(response)
        finally:
            await budget.give(held)

    async def read_all() -> None:
        while True:
            request = await context.read()
            if request is grpc.aio.EOF:
                return
            held = await budget.take(images_of(request))
            task = asyncio.ensure_future(answer_one(request, held))
            answering.add(task)
            task.add_done_callback(answering.discard)

    reading = asyncio.ensure_future(read_all())
    shutdown = asyncio.ensure_future(closing.wait())
    try:
        await asyncio.wait([reading, shutdown], return_when=asyncio.FIRST_COMPLETED)
        cut_short = not reading.done()
        for task in (reading, shutdown):
            task.cancel()
        await asyncio.wait([reading, shutdown])
        if not reading.cancelled():
            reading.result()  # a read that failed ends the call with its error
        await asyncio.gather(*answering)
    except BaseException:  # cancelled (the client went away, the deadline passed) or failed: drop its requests
        for task in (reading, shutdown, *answering):
            task.cancel()
        raise
    if cut_short:
        await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
