"""MindSpore Lite backend: the manifest's "mslite" model (.ms, converted from the ONNX export).

Varying batch sizes: the input is resized only when the batch size changes, and batches run at
their exact size. Measured here (Lite 2.0, 2 threads, random batch sizes 1..8): on a full-width
GENet theta-plus at 224 the first call after a resize cost ~2% more than a repeat (1494 vs
1460 ms at batch 3/5) and exact sizes gave 3.0 img/s against 2.5 img/s for one prebuilt model
per power-of-two size with zero padding (padding wastes compute; N models cost N times the
memory). Only on a toy model (width 0.125 at 32 px, ~5 ms per batch) did the prebuilt models
win, by ~10%.
"""
from __future__ import annotations

import logging

import mindspore_lite as mslite
import numpy as np

from serving.backends import Backend, BackendError
from serving.manifest import ModelFile

LOG = logging.getLogger(__name__)


def create(model_file: ModelFile, *, device: str, device_id: int, threads: int) -> "LiteBackend":
    """Build the Lite model on `device` with `threads` CPU threads."""
    return LiteBackend(model_file, build_context(device, device_id, threads))


def build_context(device: str, device_id: int, threads: int) -> mslite.Context:
    """A Lite Context targeting `device` (CPU keeps `threads` threads for the CPU parts)."""
    context = mslite.Context()
    context.target = [device]
    context.cpu.thread_num = threads
    if device == "ascend":
        context.ascend.device_id = device_id
    elif device == "gpu":
        context.gpu.device_id = device_id
    return context


class LiteBackend(Backend):
    """A built mindspore_lite.Model with a dynamic batch dimension."""

    runtime_version = "mindspore_lite {}".format(getattr(mslite, "__version__", "unknown"))

    def __init__(self, model_file: ModelFile, context: mslite.Context) -> None:
        model_type = mslite.ModelType.MINDIR_LITE if model_file.format == "MINDIR_LITE" else mslite.ModelType.MINDIR
        self._model = mslite.Model()
        try:
            self._model.build_from_file(model_file.path, model_type, context)
        except RuntimeError as error:
            raise BackendError("MindSpore Lite cannot build {} for {}: {}".format(
                model_file.path, context.target, error)) from None
        self._inputs = self._model.get_inputs()
        self._nhwc = model_file.input_layout == "NHWC"
        self._shape = list(self._inputs[0].shape)
        channels = self._shape[3] if self._nhwc else self._shape[1]
        if len(self._shape) != 4 or channels != 3:
            raise BackendError("{} has input shape {}, which is not {} with 3 channels as its manifest says".format(
                model_file.path, self._shape, model_file.input_layout))
        LOG.info("MindSpore Lite model %s built for %s (input %s, layout %s)", model_file.path, context.target,
                 self._shape, model_file.input_layout)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Logits for an NCHW batch; resizes the model input only when the batch size changed."""
        if self._nhwc:
            batch = batch.transpose(0, 2, 3, 1)
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if list(batch.shape) != self._shape:
            self._model.resize(self._inputs, [list(batch.shape)])
            # predict() leaves the Python input wrappers stale after a resize: fetch them again.
            self._inputs = self._model.get_inputs()
            self._shape = list(batch.shape)
        self._inputs[0].set_data_from_numpy(batch)
        outputs = self._model.predict(self._inputs)
        # The array may share Lite's output buffer, which the next predict overwrites: copy it.
        return np.array(outputs[0].get_data_to_numpy(), copy=True).reshape(batch.shape[0], -1)
