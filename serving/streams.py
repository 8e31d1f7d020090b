"""Streaming inference RPCs (genet.v1 ClassifyStream, KServe's ModelStreamInfer): many requests over one call.

Each request read from the stream is answered by its own task, so requests of one stream are batched
together like concurrent unary calls, and responses are written in the order they finish. A stream
holds at most --max-queue-size requests being computed; beyond that it stops reading, and HTTP/2 flow
control holds the client back. When the server shuts down (the registry starts closing), the stream stops
reading, answers the requests it has read, and ends with UNAVAILABLE: requests without a response
were not computed and can be sent again (to another server). A stream the client cancels, or whose
deadline passes, cancels the requests it has in flight; their queued images are dropped.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Set, TypeVar

import grpc

from serving.dataplane import DataPlane

Request = TypeVar("Request")
Response = TypeVar("Response")

SHUTTING_DOWN = "the server is shutting down: requests without a response were not computed; send them again"


async def answer_stream(context: grpc.aio.ServicerContext, answer: Callable[[Request], Awaitable[Response]],
                        dataplane: DataPlane) -> None:
    """Read requests from `context` until the client half-closes the stream, write `answer(request)` for
    each; `answer` maps every failure of its request to a response and never raises. At most
    --max-queue-size requests of the stream are in flight (more could only be refused as queue full)."""
    closing = dataplane.registry.closing
    in_flight = asyncio.Semaphore(dataplane.settings.max_queue_size)
    answering: Set[asyncio.Task] = set()
    writing = asyncio.Lock()  # grpc.aio takes one write at a time

    async def answer_one(request: Request) -> None:
        try:
            response = await answer(request)
            async with writing:
                await context.write(response)
        finally:
            in_flight.release()

    async def read_all() -> None:
        while True:
            await in_flight.acquire()
            request = await context.read()
            if request is grpc.aio.EOF:
                return
            task = asyncio.ensure_future(answer_one(request))
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
