"""Inference backends: one module per runtime, imported lazily by name.

MindSpore and MindSpore Lite cannot share a process (both ship libmindspore_core.so), so only the
selected backend's module is ever imported.
"""
from __future__ import annotations

import abc
import importlib
import os
from typing import List

import numpy as np

from serving.manifest import ModelFile


class BackendError(RuntimeError):
    """The runtime or device cannot serve the model; the message says why."""


class Backend(abc.ABC):
    """A loaded model: NCHW float32 batches in, (batch, classes) float32 logits out.

    Not thread-safe: the server calls it from its single inference thread only.
    """

    runtime_version = ""

    @abc.abstractmethod
    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Logits for a batch of preprocessed images (N, 3, H, W)."""

    def warm_up(self, sample: np.ndarray, max_batch_size: int) -> None:
        """Run `sample` at each of warm_up_sizes(max_batch_size), so no request pays for setup."""
        for size in self.warm_up_sizes(max_batch_size):
            self.predict(np.repeat(sample[None], size, axis=0))

    def warm_up_sizes(self, max_batch_size: int) -> List[int]:
        """Batch sizes to run before serving: the smallest and the largest."""
        return sorted({1, max_batch_size})

    def close(self) -> None:
        """Release the runtime's resources."""


def create_backend(name: str, model_file: ModelFile, *, device: str, device_id: int, threads: int) -> Backend:
    """Import serving.backends.<name> and build its backend for `model_file`."""
    check_device(device, device_id)
    module = importlib.import_module("{}.{}_backend".format(__name__, name))
    return module.create(model_file, device=device, device_id=device_id, threads=threads)


def check_device(device: str, device_id: int) -> None:
    """Fail with a clear message when an accelerator is requested but its device node is absent."""
    nodes = {"ascend": "/dev/davinci{}", "gpu": "/dev/nvidia{}"}
    if device in nodes and not os.path.exists(nodes[device].format(device_id)):
        raise BackendError("--device {} --device-id {} requested, but {} does not exist: no {} device {} "
                           "on this machine (use --device cpu)".format(device, device_id,
                                                                      nodes[device].format(device_id),
                                                                      device, device_id))
