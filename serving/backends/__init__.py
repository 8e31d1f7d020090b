"""Inference backends: one module per runtime, imported lazily by name.

MindSpore and MindSpore Lite cannot share a process (both ship libmindspore_core.so), so only the
selected backend's module is ever imported.
"""
from __future__ import annotations

import abc
import importlib
import os
from typing import List, Tuple

import numpy as np

from modelrepo.manifest import ModelFile
from serving.errors import StartupError


class BackendError(StartupError, RuntimeError):
    """The runtime cannot serve the model; the message says why."""

    exit_status = 1


class DeviceMissing(BackendError):
    """The requested accelerator's device node does not exist."""

    exit_status = 2


def batch_sizes(max_batch_size: int) -> List[int]:
    """The sizes batches run at: powers of two below `max_batch_size`, then itself (6 -> 1, 2, 4, 6)."""
    sizes = []
    size = 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return sizes + [max_batch_size]


class Backend(abc.ABC):
    """A loaded model: NCHW float32 batches in, (batch, classes) float32 logits out.

    After warm_up() a batch runs at the smallest of `run_sizes` that holds it, zero-padded, and the
    padding rows are dropped: images are independent, so an image's logits do not depend on its
    batch-mates. The run sizes are batch_sizes(max_batch_size), for runtimes that prepare (compile or
    plan) each shape; a runtime that changes shape for free runs every size (Lite). Before warm-up,
    and above the largest size, a batch runs as is.
    Not thread-safe: the server calls it from its single inference thread only.
    """

    runtime_version = ""
    precision = "f32"
    """What the runtime computes in: f32, or bf16 (OpenVINO on a CPU with native bf16)."""
    run_sizes: Tuple[int, ...] = ()
    """Batch sizes prepared by warm_up(), ascending."""

    @abc.abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits for a contiguous float32 batch at exactly its size (a new size may cost a build or compile)."""

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Logits for a batch of preprocessed images (N, 3, H, W), run at the next prepared size."""
        size = batch.shape[0]
        run_size = next((prepared for prepared in self.run_sizes if prepared >= size), size)
        if run_size > size:
            batch = np.concatenate([batch, np.zeros((run_size - size,) + batch.shape[1:], batch.dtype)])
        return self.run(np.ascontiguousarray(batch, dtype=np.float32))[:size]

    def warm_up(self, sample: np.ndarray, max_batch_size: int) -> None:
        """Prepare and run `sample` at every batch size used from now on, so no request pays for setup."""
        self.run_sizes = tuple(batch_sizes(max_batch_size))
        for size in self.run_sizes:
            self.predict(np.repeat(sample[None], size, axis=0))

    def close(self) -> None:
        """Release the runtime's resources."""


def create_backend(name: str, model_file: ModelFile, *, device: str, device_id: int, threads: int,
                   precision: str = "auto") -> Backend:
    """Import serving.backends.<name> and build its backend for `model_file` at `precision` (auto, f32, bf16)."""
    check_device(device, device_id)
    module = importlib.import_module(f"{__name__}.{name}_backend")
    return module.create(model_file, device=device, device_id=device_id, threads=threads, precision=precision)


def require_f32(precision: str, runtime: str) -> None:
    """Refuse any precision but f32 (or auto) for a runtime that computes in f32 only."""
    if precision not in ("auto", "f32"):
        raise BackendError(f"{runtime} computes in f32 only, not --precision {precision} "
                           "(bf16 is served by --backend openvino)")


def check_device(device: str, device_id: int) -> None:
    """Fail with a clear message when an accelerator is requested but its device node is absent."""
    node_prefixes = {"ascend": "/dev/davinci", "gpu": "/dev/nvidia"}
    if device not in node_prefixes:
        return
    node = f"{node_prefixes[device]}{device_id}"
    if not os.path.exists(node):
        raise DeviceMissing(f"--device {device} --device-id {device_id} requested, but {node} does not exist: "
                            f"no {device} device {device_id} on this machine (use --device cpu)")
