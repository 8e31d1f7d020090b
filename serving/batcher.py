"""The dynamic batcher: merges images of concurrent requests into batches for one inference thread.

Each request gets a future. The batching task takes queued images until the batch is full or
the oldest waiting image has waited `max_delay_s` (measured with `time.monotonic()`), drops work
whose caller cancelled or whose deadline passed, and runs the batch on the inference thread.
Admission is counted in images from the moment a request arrives (before preprocessing), so an
overloaded server answers RESOURCE_EXHAUSTED at once without decoding anything.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from concurrent.futures import Executor
from typing import Callable, Deque, List, Optional, Sequence, Set

import numpy as np

from serving.errors import DeadlineExpired, InternalError, QueueFull, Unavailable
from serving.metrics import ServingMetrics

LOG = logging.getLogger(__name__)

PredictFn = Callable[[List[np.ndarray]], np.ndarray]


class Ticket:
    """Queue capacity reserved for one request's images; released once they are computed or dropped."""

    def __init__(self, batcher: "DynamicBatcher", images: int) -> None:
        self._batcher = batcher
        self.images = images

    def release(self, images: Optional[int] = None) -> None:
        """Give back `images` (default: all remaining) slots."""
        count = self.images if images is None else images
        self.images -= count
        self._batcher._release(count)


class _Work:
    """One request's images waiting in the queue, with the future its caller awaits."""

    def __init__(self, ticket: Ticket, arrays: Sequence[np.ndarray], deadline: Optional[float]) -> None:
        self.ticket = ticket
        self.arrays = list(arrays)
        self.deadline = deadline
        self.enqueued = time.monotonic()
        self.next_index = 0  # first image not yet taken into a batch
        self.outputs: List[Optional[np.ndarray]] = [None] * len(self.arrays)
        self.pending = len(self.arrays)
        self.future: asyncio.Future = asyncio.get_running_loop().create_future()


class DynamicBatcher:
    """Collects images into batches of at most `max_batch_size` and runs them one at a time."""

    def __init__(self, predict: PredictFn, executor: Executor, *, max_batch_size: int, max_delay_s: float,
                 max_queue_images: int, metrics: ServingMetrics) -> None:
        self._predict = predict
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue_images = max_queue_images
        self._metrics = metrics
        self._queue: Deque[_Work] = collections.deque()
        self._waiting: Set[_Work] = set()  # every request whose future is not done, queued or computing
        self._admitted = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: Optional[asyncio.Task] = None
        self._failure: Optional[BaseException] = None

    def start(self) -> None:
        """Start the batching task on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._task.add_done_callback(self._on_task_done)

    def reserve(self, images: int) -> Ticket:
        """Admit `images` images or raise QueueFull (Unavailable when closing or failed)."""
        if self._closing or self._failure is not None:
            raise Unavailable("the model is shutting down" if self._failure is None
                              else "the batcher failed: {}".format(self._failure))
        if self._admitted + images > self.max_queue_images:
            raise QueueFull("queue full: {} of {} images admitted, this request needs {}; retry later".format(
                self._admitted, self.max_queue_images, images))
        self._admitted += images
        self._metrics.queue_depth.set(self._admitted)
        return Ticket(self, images)

    async def submit(self, ticket: Ticket, arrays: Sequence[np.ndarray], deadline: Optional[float]) -> np.ndarray:
        """Queue one request's preprocessed images; return their model outputs, stacked in order."""
        if self._failure is not None:
            ticket.release()
            raise InternalError("the batcher failed: {}".format(self._failure))
        work = _Work(ticket, arrays, deadline)
        self._waiting.add(work)
        work.future.add_done_callback(lambda _: self._waiting.discard(work))
        self._queue.append(work)
        self._wakeup.set()
        return await work.future

    async def close(self) -> None:
        """Stop admitting, finish everything queued, then stop the batching task."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await asyncio.wait([self._task])

    def _release(self, images: int) -> None:
        self._admitted -= images
        self._metrics.queue_depth.set(self._admitted)
        if self._closing:
            self._wakeup.set()  # the drain in _run waits for the last admitted image

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing and self._admitted == 0:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._wait_for_batch()
            batch = self._take_batch()
            if batch:
                await self._compute(batch)

    async def _wait_for_batch(self) -> None:
        """Wait until a full batch is queued or the oldest image has waited max_delay_s."""
        while not self._closing and self._queued_images() < self.max_batch_size:
            remaining = self._queue[0].enqueued + self.max_delay_s - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _queued_images(self) -> int:
        return sum(len(work.arrays) - work.next_index for work in self._queue)

    def _take_batch(self) -> List[tuple]:
        """Pop up to max_batch_size images as (work, index) pairs, dropping cancelled and expired work."""
        batch: List[tuple] = []
        now = time.monotonic()
        while self._queue and len(batch) < self.max_batch_size:
            work = self._queue[0]
            if self._drop_if_dead(work, now):
                self._queue.popleft()
                continue
            take = min(len(work.arrays) - work.next_index, self.max_batch_size - len(batch))
            batch.extend((work, work.next_index + i) for i in range(take))
            work.next_index += take
            self._metrics.queue_wait.observe(now - work.enqueued)
            if work.next_index == len(work.arrays):
                self._queue.popleft()
        return batch

    def _drop_if_dead(self, work: _Work, now: float) -> bool:
        """Fail and release work nobody waits for any more; True if it was dropped."""
        expired = work.deadline is not None and now >= work.deadline
        if work.future.cancelled():  # the caller went away; gRPC also cancels when the deadline passes
            reason = "expired" if expired else "cancelled"
        elif work.future.done():  # an earlier batch holding part of this request failed
            reason = None
        elif expired:
            reason = "expired"
            work.future.set_exception(DeadlineExpired("deadline exceeded after {:.1f} ms in the queue".format(
                (now - work.enqueued) * 1000)))
        else:
            return False
        dropped = len(work.arrays) - work.next_index
        if reason is not None:
            self._metrics.dropped_images.labels(reason=reason).inc(dropped)
        work.ticket.release(dropped)
        return True

    async def _compute(self, batch: List[tuple]) -> None:
        arrays = [work.arrays[index] for work, index in batch]
        self._metrics.batch_size.observe(len(arrays))
        started = time.monotonic()
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self._predict, arrays)
            if len(outputs) != len(arrays):
                raise RuntimeError("model returned {} rows for {} images".format(len(outputs), len(arrays)))
        except Exception as error:  # a failing batch fails only its own requests
            LOG.exception("inference failed on a batch of %d images", len(arrays))
            self._fail_batch(batch, InternalError("inference failed: {}: {}".format(type(error).__name__, error)))
            return
        finally:
            self._metrics.inference_time.observe(time.monotonic() - started)
        for row, (work, index) in enumerate(batch):
            self._deliver(work, index, outputs[row])

    def _deliver(self, work: _Work, index: int, output: np.ndarray) -> None:
        work.outputs[index] = output
        work.pending -= 1
        work.ticket.release(1)
        if work.pending == 0 and not work.future.done():
            work.future.set_result(np.stack(work.outputs))

    def _fail_batch(self, batch: List[tuple], error: Exception) -> None:
        for work in {id(work): work for work, _ in batch}.values():
            if not work.future.done():
                work.future.set_exception(error)
            work.ticket.release(sum(1 for w, _ in batch if w is work))

    def _on_task_done(self, task: asyncio.Task) -> None:
        """If the batching task died, fail every waiter instead of leaving it hanging."""
        error = None if task.cancelled() else task.exception()
        if error is None and not task.cancelled():
            return
        self._failure = error or asyncio.CancelledError()
        LOG.error("the batching task stopped: %r; failing %d waiting requests", self._failure, len(self._waiting))
        failure = InternalError("the batcher failed: {!r}".format(self._failure))
        for work in self._waiting | set(self._queue):
            if not work.future.done():
                work.future.set_exception(failure)
            work.ticket.release()
        self._queue.clear()
