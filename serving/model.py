"""One served model version: manifest, preprocessor, backend on its own inference thread, batcher."""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
import numpy as np

from serving.backends import Backend, create_backend
from serving.batcher import DynamicBatcher
from serving.manifest import Manifest, ModelFile
from serving.metrics import ServingMetrics
from serving.preprocessing import Preprocessor
from serving.settings import Settings
from serving.verify import private_copy

LOG = logging.getLogger(__name__)


class ServedModel:
    """A loaded, warmed model version; `ready` is False until warm and again once it drains."""

    def __init__(self, manifest: Manifest, model_file: ModelFile, backend: Backend, executor: ThreadPoolExecutor,
                 batcher: DynamicBatcher, preprocessor: Preprocessor) -> None:
        self.manifest = manifest
        self.model_file = model_file
        self.backend = backend
        self.batcher = batcher
        self.preprocessor = preprocessor
        self.ready = False
        self._executor = executor

    @property
    def version(self) -> str:
        """The version directory's name."""
        return self.manifest.version

    async def close(self) -> None:
        """Stop taking work, finish what is queued, then release the runtime and its thread."""
        self.ready = False
        await self.batcher.close()
        await asyncio.get_running_loop().run_in_executor(self._executor, self.backend.close)
        self._executor.shutdown(wait=True)


async def load_model(manifest: Manifest, settings: Settings, metrics: ServingMetrics) -> ServedModel:
    """Build the backend on a new inference thread, warm it up and start the batcher (not yet ready)."""
    model_file = manifest.model_file(settings.backend)
    # Runtimes may tie state to the creating thread: build, warm and run on the same one.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference-v{}".format(manifest.version))
    loop = asyncio.get_running_loop()
    try:
        started = time.monotonic()
        preprocessor = Preprocessor(manifest.preprocessing, settings.max_image_pixels)
        sample = preprocessor.transform(np.full((1, 1, 3), 128, np.uint8))
        backend = await loop.run_in_executor(executor, _build_and_warm, model_file, settings, sample)
    except BaseException:
        executor.shutdown(wait=False)
        raise
    LOG.info("model %s version %s loaded and warm in %.1f s (%s, %s)", manifest.name, manifest.version,
             time.monotonic() - started, settings.backend, settings.device)
    batcher = DynamicBatcher(lambda arrays: backend.predict(np.stack(arrays)), executor,
                             max_batch_size=settings.max_batch_size, max_delay_s=settings.max_queue_delay_s,
                             max_queue_images=settings.max_queue_size, metrics=metrics)
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
