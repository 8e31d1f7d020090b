"""MindSpore Lite backend: the manifest's "mslite" model (.ms, converted from the ONNX export).

One mindspore_lite.Model per batch size, each resized once right after it is built and never again.
Lite 2.0 computes wrong logits after a *second* Model.resize on one Model: with 2 CPU threads,
every even batch size reached by a later resize is wrong (max logit error 4-21 on the tiny test
model; sizes 1,2,1,6,4,3,2,5,6,1 gave errors 0,10,0,8.7,18,0,7.3,0,5.4,0), persistently, although
the inputs are fetched again after the resize and the outputs copied. One thread, or the first
resize of a fresh Model, is exact. The warm-up builds the sizes of serving.backends.batch_sizes
(powers of two and the maximum batch size), and batches are zero-padded up to the next of them;
padded rows do not change an image's logits (bit-identical here). Memory and speed of this choice
against the resizing path: serving/README.md.
"""
from __future__ import annotations

import functools
import logging
from typing import Callable, Dict

import mindspore_lite as mslite
import numpy as np

from modelrepo.manifest import ModelFile
from serving.backends import Backend, BackendError

LOG = logging.getLogger(__name__)


def create(model_file: ModelFile, *, device: str, device_id: int, threads: int) -> "LiteBackend":
    """A Lite backend on `device` with `threads` CPU threads per built model."""
    return LiteBackend(model_file, functools.partial(build_context, device, device_id, threads))


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


class SizedModel:
    """A mindspore_lite.Model built from a file and resized once to one batch size."""

    def __init__(self, model_file: ModelFile, context: mslite.Context, batch_size: int) -> None:
        model_type = mslite.ModelType.MINDIR_LITE if model_file.format == "MINDIR_LITE" else mslite.ModelType.MINDIR
        self.model = mslite.Model()
        self.target = context.target
        try:
            self.model.build_from_file(model_file.path, model_type, context)
        except RuntimeError as error:
            raise BackendError("MindSpore Lite cannot build {} for {}: {}".format(
                model_file.path, context.target, error)) from None
        self.shape = list(self.model.get_inputs()[0].shape)
        channel_axis = 3 if model_file.input_layout == "NHWC" else 1
        if len(self.shape) != 4 or self.shape[channel_axis] != 3:
            raise BackendError("{} has input shape {}, which is not {} with 3 channels as its manifest says".format(
                model_file.path, self.shape, model_file.input_layout))
        self.shape[0] = batch_size
        self.model.resize(self.model.get_inputs(), [self.shape])
        self.inputs = self.model.get_inputs()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits for a batch in the model's layout and size, copied out of Lite's buffer."""
        self.inputs[0].set_data_from_numpy(batch)
        outputs = self.model.predict(self.inputs)
        # The array may share Lite's output buffer, which the next predict overwrites: copy it.
        return np.array(outputs[0].get_data_to_numpy(), copy=True).reshape(batch.shape[0], -1)


class LiteBackend(Backend):
    """Lite models of one file, one per batch size run, built on first use of the size (warm-up).

    The server builds every size during warm-up, while the checked private copy of the file it was
    given exists (serving.verify.private_copy); a size first used later could not be built.
    """

    runtime_version = "mindspore_lite {}".format(getattr(mslite, "__version__", "unknown"))

    def __init__(self, model_file: ModelFile, new_context: Callable[[], mslite.Context]) -> None:
        self._model_file = model_file
        self._new_context = new_context
        self._nhwc = model_file.input_layout == "NHWC"
        self._models: Dict[int, SizedModel] = {}
        self._model(1)  # fails now, not at the first request, when the file or device is unusable
        LOG.info("MindSpore Lite model %s built for %s (input %s, layout %s)", model_file.path,
                 self._models[1].target, self._models[1].shape, model_file.input_layout)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits for an NCHW batch on the Model built for its size."""
        if self._nhwc:
            batch = np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
        return self._model(batch.shape[0]).run(batch)

    def close(self) -> None:
        """Drop every built Model."""
        self._models.clear()

    def _model(self, batch_size: int) -> SizedModel:
        if batch_size not in self._models:
            self._models[batch_size] = SizedModel(self._model_file, self._new_context(), batch_size)
            LOG.debug("MindSpore Lite model built for batch size %d", batch_size)
        return self._models[batch_size]
