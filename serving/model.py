"""One served model version: manifest, preprocessor, backend on its own inference thread, batcher."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional

import numpy as np

from modelrepo.manifest import Manifest, ModelFile
from serving.backends import Backend, create_backend
from serving.batcher import DynamicBatcher
from serving.faults import with_faults
from serving.manifest import served_file
from serving.metrics import ServingMetrics
from serving.preprocessing import Preprocessor
from serving.settings import Settings
from serving.verify import private_copy

LOG = logging.getLogger(__name__)
INFERENCE_THREAD_PREFIX = "inference-v"


class ServedModel:
    """A loaded, warmed model version; not `ready` until registered, once it drains, or if its batcher failed."""

    def __init__(self, manifest: Manifest, model_file: ModelFile, backend: Backend, executor: ThreadPoolExecutor,
                 batcher: DynamicBatcher, preprocessor: Preprocessor) -> None:
        self.manifest = manifest
        self.model_file = model_file
        self.backend = backend
        self.batcher = batcher
        self.preprocessor = preprocessor
        self._accepting = False
        self._executor = executor
        self._released: Optional[asyncio.Future] = None

    @property
    def version(self) -> str:
        """The version directory's name."""
        return self.manifest.version

    @property
    def ready(self) -> bool:
        """True while the version takes requests: registered, not closing, its batcher alive."""
        return self._accepting and not self.batcher.failed

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
        """Close the runtime on its thread, unless that thread is stuck in an inference call."""
        if self.batcher.inference_running:
            LOG.error("model %s version %s: an inference call never returned; abandoning its thread and runtime",
                      self.manifest.name, self.version)
            self._executor.shutdown(wait=False)
            return
        await asyncio.get_running_loop().run_in_executor(self._executor, self.backend.close)
        self._executor.shutdown(wait=True)


def running_inference_threads() -> List[str]:
    """Inference threads still alive once every model is closed: stuck in a call, or an abandoned load."""
    return [thread.name for thread in threading.enumerate() if thread.name.startswith(INFERENCE_THREAD_PREFIX)]


async def load_model(manifest: Manifest, settings: Settings, metrics: ServingMetrics,
                     on_failure: Optional[Callable[[], None]] = None) -> ServedModel:
    """Build the backend on a new inference thread, warm it up and start the batcher (not yet ready).

    `on_failure` is called if the version goes out of service (its batcher failed).
    """
    model_file = served_file(manifest, settings.backend)
    predict = with_faults(lambda arrays: backend.predict(np.stack(arrays)))
    # Runtimes may tie state to the creating thread: build, warm and run on the same one.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=INFERENCE_THREAD_PREFIX + manifest.version)
    loop = asyncio.get_running_loop()
    try:
        started = time.monotonic()
        preprocessor = Preprocessor(manifest.preprocessing, settings.max_image_pixels)
        sample = preprocessor.transform(np.full((1, 1, 3), 128, np.uint8))
        backend = await loop.run_in_executor(executor, _build_and_warm, model_file, settings, sample)
    except BaseException:  # cancelled (shutdown) or failed: a warm-up still running is left to finish
        executor.shutdown(wait=False)
        raise
    LOG.info("model %s version %s loaded and warm in %.1f s (%s, %s)", manifest.name, manifest.version,
             time.monotonic() - started, settings.backend, settings.device)
    batcher = DynamicBatcher(predict, executor,
                             max_batch_size=settings.max_batch_size, max_delay_s=settings.max_queue_delay_s,
                             max_queue_images=settings.max_queue_size, metrics=metrics,
                             inference_timeout_s=settings.inference_timeout_s, on_failure=on_failure)
    batcher.start()
    return ServedModel(manifest, model_file, backend, executor, batcher, preprocessor)


def _build_and_warm(model_file: ModelFile, settings: Settings, sample: np.ndarray) -> Backend:
    """Build the backend from a checked private copy of the file and warm it up (which builds every
    batch size it will run), so the runtime never reads the repository's file itself."""
    with private_copy(model_file) as copy:
        backend = create_backend(settings.backend, copy, device=settings.device, device_id=settings.device_id,
                                 threads=settings.threads)
        backend.warm_up(sample, settings.max_batch_size)
    return backend
