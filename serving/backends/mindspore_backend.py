"""MindSpore backend: the manifest's MINDIR (dynamic batch) through mindspore.load + nn.GraphCell.

MindSpore compiles a graph for every new input shape (seconds on CPU), so batches are padded to
one of the few sizes of serving.backends.batch_sizes (powers of two, and the maximum batch size):
the warm-up compiles each of them before the server reports SERVING, and no request ever waits for
a compile.
"""
from __future__ import annotations

import functools
import logging

import mindspore as ms  # after ONEDNN_MAX_CPU_ISA: serving/__init__ sets it (runtime_env)
import numpy as np
from mindspore import nn

from modelrepo.manifest import ModelFile
from serving.backends import Backend, BackendError, require_f32

LOG = logging.getLogger(__name__)
_TARGETS = {"cpu": "CPU", "ascend": "Ascend", "gpu": "GPU"}


def create(model_file: ModelFile, *, device: str, device_id: int, threads: int, precision: str) -> "MindSporeBackend":
    """Select the device, load the MINDIR and wrap it in a GraphCell (f32)."""
    require_f32(precision, "MindSpore")
    try:
        _configure_runtime(device, device_id, threads)
    except (RuntimeError, ValueError) as error:
        raise BackendError(f"MindSpore cannot use {device} device {device_id}: {error}") from None
    return MindSporeBackend(model_file)


@functools.lru_cache(maxsize=None)
def _configure_runtime(device: str, device_id: int, threads: int) -> None:
    """Process-wide MindSpore settings; MindSpore refuses to set the thread count twice, so once."""
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device(_TARGETS[device], device_id)
    if device == "cpu":
        ms.device_context.cpu.op_tuning.threads_num(threads)


class MindSporeBackend(Backend):
    """A MINDIR GraphCell; one compiled graph per batch size."""

    runtime_version = f"mindspore {ms.__version__}"

    def __init__(self, model_file: ModelFile) -> None:
        if model_file.input_layout != "NCHW":
            raise BackendError(f"the MINDIR input layout must be NCHW, got {model_file.input_layout}")
        try:
            self._cell = nn.GraphCell(ms.load(model_file.path))
        except (RuntimeError, ValueError) as error:
            raise BackendError(f"MindSpore cannot load {model_file.path}: {error}") from None
        LOG.info("MindSpore model %s loaded", model_file.path)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits for an NCHW batch at its exact size (compiled on first use of the size)."""
        return self._cell(ms.Tensor(batch)).asnumpy()
