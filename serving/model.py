"""One served model version: manifest, preprocessor, inference workers (serving.workers.pool), batcher."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Callable, List, Optional

import numpy as np

from serving.batcher import DynamicBatcher
from serving.manifest import Manifest, ModelFile
from serving.metrics import ServingMetrics
from serving.preprocessing import Preprocessor
from serving.settings import Settings
from serving.workers.pool import WorkerPool

LOG = logging.getLogger(__name__)
INFERENCE_THREAD_PREFIX = "inference-v"


class ServedModel:
    """A loaded, warmed model version; not `ready` until registered, once it drains, if its batcher failed, or
    while none of its workers is alive."""

    def __init__(self, manifest: Manifest, model_file: ModelFile, backend: WorkerPool, batcher: DynamicBatcher,
                 preprocessor: Preprocessor) -> None:
        self.manifest = manifest
        self.model_file = model_file
        self.backend = backend
        self.batcher = batcher
        self.preprocessor = preprocessor
        self._accepting = False
        self._released: Optional[asyncio.Future] = None

    @property
    def version(self) -> str:
        """The version directory's name."""
        return self.manifest.version

    @property
    def ready(self) -> bool:
        """True while the version takes requests: registered, not closing, its batcher and a worker alive."""
        return self._accepting and not self.batcher.failed and self.backend.alive > 0

    @ready.setter
    def ready(self, accepting: bool) -> None:
        self._accepting = accepting

    async def close(self, timeout_s: Optional[float] = None) -> None:
        """Stop taking work, finish what is queued (what is left after `timeout_s` fails), release the runtime.

        May be called again, e.g. to bound a drain already under way; a cancelled caller leaves the
        release to finish.
        """
        self.ready = False
        await self.batcher.close(timeout_s)
        if self._released is None:
            self._released = asyncio.ensure_future(self._release())
        await asyncio.shield(self._released)

    async def _release(self) -> None:
        """Stop the workers once their batches are done; kill them if one still computes after the drain."""
        if self.batcher.inference_running:
            LOG.error("model %s version %s: an inference call is still running after the drain: killing the workers",
                      self.manifest.name, self.version)
            self.backend.kill()
        await self.backend.close()


def running_inference_threads() -> List[str]:
    """Inference threads still alive once every model is closed: an abandoned load, whose workers die with them."""
    return [thread.name for thread in threading.enumerate() if thread.name.startswith(INFERENCE_THREAD_PREFIX)]


async def load_model(manifest: Manifest, settings: Settings, metrics: ServingMetrics,
                     on_failure: Optional[Callable[[], None]] = None) -> ServedModel:
    """Start and warm up the version's workers, start the batcher (not yet ready).

    `on_failure` is called when the version may have gone out of service or back (its batcher failed,
    its last live worker was lost, a worker came back).
    """
    model_file = manifest.model_file(settings.backend)
    pool = WorkerPool(model_file, settings, metrics, manifest.version, INFERENCE_THREAD_PREFIX + manifest.version,
                      on_failure or (lambda: None))
    try:
        started = time.monotonic()
        preprocessor = Preprocessor(manifest.preprocessing, settings.max_image_pixels)
        await pool.start(preprocessor.transform(np.full((1, 1, 3), 128, np.uint8)))
    except BaseException:  # cancelled (shutdown) or failed: a warm-up still running is left to finish
        pool.abandon()
        raise
    LOG.info("model %s version %s loaded and warm in %.1f s (%s, %s, %d worker%s)", manifest.name, manifest.version,
             time.monotonic() - started, settings.backend, settings.device, settings.instances,
             "s" if settings.instances > 1 else "")
    # The workers enforce --inference-timeout-s: a hung one is killed and only its batch fails.
    batcher = DynamicBatcher(pool.predict, pool.batch_threads,
                             max_batch_size=settings.max_batch_size, max_delay_s=settings.max_queue_delay_s,
                             max_queue_images=settings.max_queue_size, metrics=metrics,
                             on_failure=on_failure, concurrency=settings.instances)
    batcher.start()
    return ServedModel(manifest, model_file, pool, batcher, preprocessor)
