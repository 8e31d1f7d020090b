"""The transport-free data plane: validate, admit, preprocess in the pool, batch, rank.

Both protocols (genet.v1 and KServe v2 over gRPC and HTTP) call these coroutines with plain Python values and convert the results; every
failure is a `serving.errors.ServingError` carrying its status code.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Union

import numpy as np

from serving.errors import DeadlineExpired, InternalError, InvalidInput
from serving.metrics import ServingMetrics
from serving.model import ServedModel
from serving.registry import ModelRegistry
from serving.settings import Settings

LOG = logging.getLogger(__name__)
DEFAULT_TOP_K = 5
INLINE_MAX_PIXELS = 64 * 64
"""A lone image of at most this many pixels is preprocessed on the event loop (~0.1-0.2 ms for a 28 x 28
JPEG), saving the two thread hand-offs to the pool and back; larger ones, and every image of a request
of several, go to the pool."""


class Prediction(NamedTuple):
    """One ranked class of one image."""

    class_id: int
    label: str
    score: float


class Classification(NamedTuple):
    """The answer to a Classify call: per image, predictions in descending score."""

    model_name: str
    model_version: str
    results: List[List[Prediction]]


class Inference(NamedTuple):
    """Class probabilities of a request's images, in request order, and the version that computed them."""

    model_name: str
    model_version: str
    labels: Sequence[str]
    probabilities: np.ndarray
    """(images, num_classes) float64 softmax probabilities."""


class DataPlane:
    """Classification and model metadata over the registry (served models) and the preprocessing pool."""

    def __init__(self, registry: ModelRegistry, settings: Settings, metrics: ServingMetrics,
                 preprocess_pool: Executor) -> None:
        self.registry = registry
        self.settings = settings
        self._metrics = metrics
        self._pool = preprocess_pool

    async def classify(self, images: Sequence[bytes], top_k: int, version: str,
                       deadline: Optional[float]) -> Classification:
        """Top-k predictions for every image; `deadline` is a time.monotonic() value or None."""
        inference = await self.infer_images(images, version, deadline)
        return Classification(inference.model_name, inference.model_version,
                              top_predictions(inference.probabilities, top_k, inference.labels))

    async def infer_images(self, images: Sequence[bytes], version: str, deadline: Optional[float]) -> Inference:
        """Class probabilities of encoded image files, preprocessed as in training's eval pipeline."""
        self._check_count(len(images))
        model = self.registry.get(version)
        with model.admit(len(images), deadline) as ticket:
            arrays = await self._preprocess(model, images)
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlineExpired("deadline exceeded during preprocessing")
            logits = await ticket.submit(arrays)
        return Inference(model.name, model.version, model.labels, softmax(logits))

    async def infer_tensor(self, batch: np.ndarray, version: str, deadline: Optional[float]) -> Inference:
        """Class probabilities of images the client preprocessed itself: `batch` is (N, 3, crop, crop) float32,
        normalised as the manifest says; shape, dtype and finiteness are checked, nothing is decoded."""
        model = self.registry.get(version)
        _check_tensor(batch, model.input_shape)
        self._check_count(len(batch))
        with model.admit(len(batch), deadline) as ticket:
            logits = await ticket.submit(list(batch))
        return Inference(model.name, model.version, model.labels, softmax(logits))

    def model_info(self, version: str) -> Dict[str, Any]:
        """What is served, as a dict shaped like the ModelInfo message."""
        return describe(self.registry.get(version), self.settings, self.registry.versions())

    def _check_count(self, images: int) -> None:
        if not images:
            raise InvalidInput("the request has no images")
        if images > self.settings.max_images_per_request:
            raise InvalidInput(f"the request has {images} images; the limit is {self.settings.max_images_per_request} "
                               "(--max-images-per-request)")

    async def _preprocess(self, model: ServedModel, images: Sequence[bytes]) -> List[np.ndarray]:
        """Run the eval transform on every image; the first bad image fails the request.

        A lone small image (INLINE_MAX_PIXELS) is transformed right here. Otherwise the images go to
        the pool split into one contiguous chunk per pool thread: a 16-image request costs two
        hand-offs between the event loop and the pool, not sixteen.
        """
        outcomes = [self._preprocess_small(model, images[0])] if len(images) == 1 else [None]
        if outcomes[0] is None:
            loop = asyncio.get_running_loop()
            size = -(-len(images) // self.settings.workers)  # ceiling division
            jobs = [loop.run_in_executor(self._pool, self._preprocess_chunk, model.preprocess, images[i:i + size])
                    for i in range(0, len(images), size)]
            outcomes = [outcome for chunk in await asyncio.gather(*jobs) for outcome in chunk]
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, InvalidInput):
                raise InvalidInput(f"image {index}: {outcome.message}")
            if isinstance(outcome, Exception):
                LOG.error("preprocessing image %d failed", index, exc_info=outcome)
                raise InternalError(f"image {index}: preprocessing failed: {type(outcome).__name__}")
        return outcomes

    def _preprocess_small(self, model: ServedModel, data: bytes) -> Union[np.ndarray, Exception, None]:
        """The image's array (or its exception) when it is small enough to preprocess here, else None."""
        started = time.monotonic()
        try:
            outcome = model.preprocess_small(data, INLINE_MAX_PIXELS)
        except Exception as error:  # reported by _preprocess
            outcome = error
        if outcome is not None:
            self._metrics.preprocess_time.observe(time.monotonic() - started)
        return outcome

    def _preprocess_chunk(self, preprocess: Callable[[bytes], np.ndarray],
                          images: Sequence[bytes]) -> List[Union[np.ndarray, Exception]]:
        """Preprocess `images` in order; an image that fails gives its exception in place of an array."""
        outcomes: List[Union[np.ndarray, Exception]] = []
        for data in images:
            started = time.monotonic()
            try:
                outcomes.append(preprocess(data))
            except Exception as error:  # reported per image by _preprocess
                outcomes.append(error)
            finally:
                self._metrics.preprocess_time.observe(time.monotonic() - started)
        return outcomes


def _check_tensor(batch: np.ndarray, image_shape: Sequence[int]) -> None:
    """INVALID_ARGUMENT unless `batch` is a float32 (N, *image_shape) array of finite values."""
    expected = f"(N, {', '.join((str(d) for d in image_shape))})"
    if batch.dtype != np.float32:
        raise InvalidInput(f"the image tensor must be float32 {expected}, got {batch.dtype}")
    if batch.ndim != len(image_shape) + 1 or tuple(batch.shape[1:]) != tuple(image_shape):
        raise InvalidInput(f"the image tensor must have shape {expected}, got {list(batch.shape)}")
    if not np.isfinite(batch).all():
        raise InvalidInput("the image tensor holds NaN or infinite values")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    logits = logits.astype(np.float64)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def rank(logits: np.ndarray, top_k: int, labels: Sequence[str]) -> List[List[Prediction]]:
    """Softmax each row and keep the top_k classes (0 means 5; more than the classes means all)."""
    return top_predictions(softmax(logits), top_k, labels)


def top_predictions(probabilities: np.ndarray, top_k: int, labels: Sequence[str]) -> List[List[Prediction]]:
    """The top_k classes of each row, in descending probability (0 means 5; more than the classes means all)."""
    k = min(top_k or DEFAULT_TOP_K, probabilities.shape[1])
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [[Prediction(int(c), labels[c], float(row[c])) for c in top] for row, top in zip(probabilities, order)]


def describe(model: ServedModel, settings: Settings, versions: Sequence[str]) -> Dict[str, Any]:
    """The ModelInfo fields for `model` under `settings`."""
    return dict(
        model.description(),
        backend=settings.backend, device=settings.device, device_id=settings.device_id,
        batching={"max_batch_size": settings.max_batch_size, "max_queue_delay_ms": settings.max_queue_delay_ms,
                  "max_queue_size": settings.max_queue_size},
        limits={"max_message_bytes": settings.max_message_bytes,
                "max_images_per_request": settings.max_images_per_request,
                "max_image_pixels": settings.max_image_pixels},
        available_versions=list(versions))
