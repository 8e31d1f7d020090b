"""One model version's inference workers: `--instances` WorkerBackends, replaced when they die or hang.

The batcher runs each batch on an idle worker (`predict`, on the event loop). A
worker that dies (kill -9, a native crash) or hangs past --inference-timeout-s (killed by its
proxy) fails only the batch it held, with UNAVAILABLE, and is restarted on a supervisor thread:
at once the first time, then after 0.5, 1, 2, ... 30 s while it keeps failing without serving a
batch (genet_worker_restarts_total{reason}). `alive` counts the workers that serve; the version
is not ready (health NOT_SERVING) while it is 0. Workers are started and restarted on the
supervisor threads, which live until close(): the kernel kills a worker when the thread that
started it ends (PR_SET_PDEATHSIG), so no worker outlives its pool or the front.

The runtime loads a private, checked copy of the model file (serving.verify), kept until close()
because a restart builds the model again.
"""
import asyncio
import collections
import contextlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Deque, Dict, List, Set

import numpy as np

from modelrepo.manifest import ModelFile
from serving.backends import BackendError
from serving.errors import Unavailable
from serving.metrics import ServingMetrics
from serving.settings import Settings
from serving.verify import private_copy
from serving.workers.proxy import WorkerBackend, WorkerDied, WorkerError, WorkerTimeout

LOG = logging.getLogger(__name__)
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0


class WorkerPool:
    """The workers of one model version; `predict` is called on the event loop that made the pool."""

    def __init__(self, model_file: ModelFile, settings: Settings, metrics: ServingMetrics, version: str,
                 thread_prefix: str, on_change: Callable[[], None]) -> None:
        self.runtime_version = ""
        self.precision = ""
        self._supervisor = ThreadPoolExecutor(settings.instances, thread_name_prefix=f"{thread_prefix}-supervisor")
        self._model_file = model_file
        self._settings = settings
        self._metrics = metrics
        self._version = version
        self._loop = asyncio.get_running_loop()
        self._on_change = on_change
        self._workers: List[WorkerBackend] = []
        self._idle: Deque[WorkerBackend] = collections.deque()
        self._lost: Set[int] = set()  # id() of the workers dead or restarting
        self._failures: Dict[int, int] = {}  # id(worker) -> losses and failed restarts since it last served
        self._lock = threading.Lock()  # the bookkeeping below, shared with the supervisor threads
        self._idle_added = asyncio.Event()
        self._loop_thread = threading.get_ident()
        self._closing = threading.Event()
        self._files = contextlib.ExitStack()

    @property
    def alive(self) -> int:
        """Workers loaded and serving (idle or computing), not lost or restarting."""
        return len(self._workers) - len(self._lost)

    async def start(self, sample: np.ndarray) -> None:
        """Start every worker and warm it up with `sample` (on a supervisor thread, which outlives them)."""
        await self._loop.run_in_executor(self._supervisor, self._start, sample)
        self._metrics.workers_alive.labels(version=self._version).set(self.alive)
        self._metrics.inference_precision.labels(version=self._version, precision=self.precision).set(1)

    async def predict(self, arrays: List[np.ndarray]) -> np.ndarray:
        """Logits of one batch on an idle worker; Unavailable if that worker dies or hangs (it is replaced).

        Runs on the event loop: the batch goes down the worker's pipe with no thread hand-off. A call
        cancelled half way (a drain that ran out of time) kills its worker, which is not replaced.
        """
        worker = await self._take_idle()
        try:
            outputs = await worker.predict_async(np.stack(arrays))
        except WorkerError as error:
            if worker.pid is None:  # dead, or hung and killed by its proxy: the batch is lost with it
                self._replace(worker, error)
                raise Unavailable(_describe_loss(error, self._settings.inference_timeout_s)) from None
            self._put_idle(worker)  # it raised and serves on: an error of this batch
            raise
        except asyncio.CancelledError:  # the version is closing (its drain ran out of time) or its batcher failed
            LOG.error("a batch was cancelled while the %s worker (pid %s) computed it: the worker was killed",
                      self._settings.backend, worker.pid)
            with self._lock:
                self._lost.add(id(worker))
            self._publish()
            raise
        except BaseException:
            self._put_idle(worker)
            raise
        self._put_idle(worker, served=True)
        return outputs

    async def close(self) -> None:
        """Let each worker finish its batch, stop it and the pool's threads, remove the model copy."""
        await self._loop.run_in_executor(None, self._close)
        self._metrics.workers_alive.remove(self._version)
        self._metrics.inference_precision.remove(self._version, self.precision)

    def abandon(self) -> None:
        """Give up a start that failed or is still under way (shutdown): a worker it leaves dies with its thread."""
        self._closing.set()
        self._supervisor.shutdown(wait=False)

    def _start(self, sample: np.ndarray) -> None:
        settings = self._settings
        try:
            copy = self._files.enter_context(private_copy(self._model_file))
            for _ in range(settings.instances):
                self._workers.append(WorkerBackend(
                    settings.backend, copy, device=settings.device, device_id=settings.device_id,
                    threads=settings.threads, precision=settings.precision, timeout_s=settings.inference_timeout_s))
                self._workers[-1].warm_up(sample, settings.max_batch_size)
        except BaseException:
            self._stop_workers()
            raise
        self.runtime_version = self._workers[0].runtime_version
        self.precision = self._workers[0].precision
        self._idle.extend(self._workers)

    async def _take_idle(self) -> WorkerBackend:
        """The idle worker that finished last (its caches are warm: under light load one worker serves and
        the others wait for overlapping batches); waits while every one restarts, at most --inference-timeout-s.

        Measured with 2 workers of 1 thread on 2 cores (demo model, concurrency 16, 1 image per request,
        3 alternating runs): 976-1,019 img/s (median 980) against 953-977 (956) taking the longest idle."""
        timeout_s = self._settings.inference_timeout_s
        deadline = self._loop.time() + timeout_s
        while not self._idle:
            self._idle_added.clear()
            try:
                await asyncio.wait_for(self._idle_added.wait(), deadline - self._loop.time())
            except asyncio.TimeoutError:
                raise Unavailable(f"no inference worker of version {self._version} came back within {timeout_s:g} s "
                                  "(--inference-timeout-s): they are restarting") from None
        return self._idle.pop()

    def _put_idle(self, worker: WorkerBackend, served: bool = False) -> None:
        """Make `worker` available again (from the loop or a supervisor thread); one that `served` a batch
        restarts without delay if it is lost next."""
        with self._lock:
            self._idle.append(worker)
            if served:
                self._failures.pop(id(worker), None)
        if threading.get_ident() == self._loop_thread:
            self._idle_added.set()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._idle_added.set)

    def _replace(self, worker: WorkerBackend, error: WorkerError) -> None:
        """Count the lost worker out and restart it on a supervisor thread (unless closing)."""
        LOG.error("%s: restarting it", error)
        with self._lock:
            self._lost.add(id(worker))
            self._failures[id(worker)] = self._failures.get(id(worker), 0) + 1
            if not self._closing.is_set():
                self._supervisor.submit(self._restart, worker, _reason(error))
        self._publish()

    def _restart(self, worker: WorkerBackend, reason: str) -> None:
        """Restart `worker` after its backoff, again with longer ones while that fails, until the pool closes."""
        while not self._closing.wait(self._backoff_s(worker)):
            try:
                worker.restart()
            except BackendError as error:
                LOG.error("restarting the %s worker failed: %s", self._settings.backend, error)
                with self._lock:
                    self._failures[id(worker)] += 1
                continue
            if self._closing.is_set():  # close() may have passed this worker while it restarted
                worker.close()
                return
            self._metrics.worker_restarts.labels(reason=reason).inc()
            with self._lock:
                self._lost.discard(id(worker))
            self._put_idle(worker)
            self._publish()
            return

    def _backoff_s(self, worker: WorkerBackend) -> float:
        """0 after a worker's first loss since it last served a batch, then 0.5, 1, 2, ... up to 30 s."""
        failures = self._failures.get(id(worker), 1)
        return 0.0 if failures <= 1 else min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (failures - 2))

    def _stop_workers(self) -> None:
        """Close every worker (each finishes its call in flight first) and remove the model copy."""
        self._closing.set()
        for worker in self._workers:
            worker.close()
        self._files.close()

    def _close(self) -> None:
        self._stop_workers()
        self._supervisor.shutdown(wait=True)

    def _publish(self) -> None:
        """Export the live count and tell the server (from any thread) that readiness may have changed."""
        self._metrics.workers_alive.labels(version=self._version).set(self.alive)
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_change)


def _reason(error: WorkerError) -> str:
    """The genet_worker_restarts_total reason of a lost worker."""
    if isinstance(error, WorkerTimeout):
        return "timeout"
    return "died" if isinstance(error, WorkerDied) else "error"


def _describe_loss(error: WorkerError, timeout_s: float) -> str:
    """The message of a batch whose worker was lost."""
    if isinstance(error, WorkerTimeout):
        return (f"inference did not finish within {timeout_s:g} s (--inference-timeout-s): its worker was killed and "
                "is being replaced")
    return f"the inference worker failed during this batch and is being restarted ({error})"
