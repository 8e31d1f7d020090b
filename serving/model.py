"""One served model version: manifest, preprocessor, inference workers (serving.workers.pool), batcher.

Callers use the version through ServedModel's methods (admit, preprocess, labels, description),
never through its parts.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Callable, ContextManager, Dict, List, Optional, Sequence, Tuple

import numpy as np

from modelrepo.manifest import Manifest, ModelFile
from serving.batcher import DynamicBatcher, Ticket
from serving.manifest import served_file
from serving.metrics import ServingMetrics
from serving.preprocessing import Preprocessor
from serving.settings import Settings
from serving.workers.pool import WorkerPool

LOG = logging.getLogger(__name__)
INFERENCE_THREAD_PREFIX = "inference-v"


class ServedModel:
    """A loaded, warmed model version; not `ready` until registered, once it drains, if its batcher failed, or
    while none of its workers is alive."""

    def __init__(self, manifest: Manifest, model_file: ModelFile, workers: WorkerPool, batcher: DynamicBatcher,
                 preprocessor: Preprocessor) -> None:
        self.manifest = manifest
        self._model_file = model_file
        self._workers = workers
        self._batcher = batcher
        self._preprocessor = preprocessor
        self._accepting = False
        self._released: Optional[asyncio.Future] = None

    @property
    def name(self) -> str:
        """The model's name."""
        return self.manifest.name

    @property
    def version(self) -> str:
        """The version directory's name."""
        return self.manifest.version

    @property
    def labels(self) -> Sequence[str]:
        """The class labels, by class id."""
        return self.manifest.labels

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """One preprocessed image's shape: (3, crop_size, crop_size)."""
        crop = self.manifest.preprocessing.crop_size
        return 3, crop, crop

    def admit(self, images: int, deadline: Optional[float]) -> ContextManager[Ticket]:
        """Queue capacity for a request's `images` from its arrival; see DynamicBatcher.admit."""
        return self._batcher.admit(images, deadline)

    def preprocess(self, data: bytes) -> np.ndarray:
        """One encoded image as the model's input array (thread-safe: runs in the preprocessing pool)."""
        return self._preprocessor(data)

    def preprocess_small(self, data: bytes, max_pixels: int) -> Optional[np.ndarray]:
        """The model's input for an image of at most `max_pixels` pixels, else None (Preprocessor.small)."""
        return self._preprocessor.small(data, max_pixels)

    def description(self) -> Dict[str, Any]:
        """The ModelInfo fields this version determines: manifest, served file, runtime."""
        manifest = self.manifest
        pre = manifest.preprocessing
        return {
            "name": manifest.name, "version": manifest.version,
            "variant": str(manifest.model.get("variant", "custom")),
            "extra": bool(manifest.model.get("extra", False)), "mlp": bool(manifest.model.get("mlp", False)),
            "num_classes": manifest.num_classes, "labels": list(manifest.labels),
            "input": _tensor_spec(manifest.input), "output": _tensor_spec(manifest.output),
            "preprocessing": {"resize_size": pre.resize_size, "crop_size": pre.crop_size,
                              "interpolation": pre.interpolation, "mean": list(pre.mean), "std": list(pre.std),
                              "color_space": pre.color_space},
            "model_format": self._model_file.format, "model_sha256": self._model_file.sha256,
            "runtime_version": self._workers.runtime_version,
        }

    @property
    def ready(self) -> bool:
        """True while the version takes requests: registered, not closing, its batcher and a worker alive."""
        return self._accepting and not self._batcher.failed and self._workers.alive > 0

    @ready.setter
    def ready(self, accepting: bool) -> None:
        self._accepting = accepting

    async def close(self, timeout_s: Optional[float] = None) -> None:
        """Stop taking work, finish what is queued (what is left after `timeout_s` fails), release the runtime.

        May be called again, e.g. to bound a drain already under way; a cancelled caller leaves the
        release to finish.
        """
        self.ready = False
        await self._batcher.close(timeout_s)
        if self._released is None:
            self._released = asyncio.ensure_future(self._release())
        await asyncio.shield(self._released)

    async def _release(self) -> None:
        """Stop the workers (a batch cut short by the drain's timeout has killed its worker already)."""
        await self._workers.close()


def _tensor_spec(spec: Dict[str, Any]) -> Dict[str, Any]:
    return {"name": str(spec.get("name", "")), "dtype": str(spec.get("dtype", "float32")),
            "shape": [int(d) for d in spec.get("shape", [])], "layout": str(spec.get("layout", ""))}


def running_inference_threads() -> List[str]:
    """Inference threads still alive once every model is closed: an abandoned load, whose workers die with them."""
    return [thread.name for thread in threading.enumerate() if thread.name.startswith(INFERENCE_THREAD_PREFIX)]


async def load_model(manifest: Manifest, settings: Settings, metrics: ServingMetrics,
                     on_failure: Optional[Callable[[], None]] = None) -> ServedModel:
    """Start and warm up the version's workers, start the batcher (not yet ready).

    `on_failure` is called when the version may have gone out of service or back (its batcher failed,
    its last live worker was lost, a worker came back).
    """
    model_file = served_file(manifest, settings.backend)
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
    batcher = DynamicBatcher(pool.predict,
                             max_batch_size=settings.max_batch_size, max_delay_s=settings.max_queue_delay_s,
                             max_queue_images=settings.max_queue_size, metrics=metrics,
                             on_failure=on_failure, concurrency=settings.instances,
                             wait_when_idle=settings.wait_when_idle)
    batcher.start()
    return ServedModel(manifest, model_file, pool, batcher, preprocessor)
