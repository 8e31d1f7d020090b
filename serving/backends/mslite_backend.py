"""MindSpore Lite backend: the manifest's "mslite" model (.ms, converted from the ONNX export).

Two mindspore_lite.Models at most, each resized to whatever batch size it is given: one runs the
batch sizes divisible by the CPU thread count, the other all the rest. Lite 2.0 computes wrong logits
(errors 0.6-60x the largest logit) for a batch size divisible by thread_num once the same Model has
run a size that is not: with 2 threads, every even size after any odd one (1, 2: wrong; 2, 4, 8: exact;
2, 1, 2: wrong at the second 2); with 3 threads, 6 after 2 or 3 after 5; with 1 thread never. Sizes
not divisible are never wrong. Seen on the small test and demo networks (32-40 px), not on the
reference network at 224 px. Split this way, both Models stay bit-identical to a fresh Model per size
on every size sequence measured (1 to 4 threads, small networks; 1 and 2 threads at 224 px). A 224 px
Model costs ~320 MiB whatever its batch size (mostly weights): two Models instead of one per ladder
size, numbers in serving/README.md. A resize costs no measurable time, so batches run at their own
size, never padded: a batch of 9 at max batch 16 computes 9 images, not 16 (LiteBackend.warm_up).
"""
from __future__ import annotations

import functools
import logging
from typing import Callable, Dict

import mindspore_lite as mslite
import numpy as np

from modelrepo.manifest import ModelFile
from serving.backends import Backend, BackendError, require_f32

LOG = logging.getLogger(__name__)


def create(model_file: ModelFile, *, device: str, device_id: int, threads: int, precision: str) -> "LiteBackend":
    """A Lite backend on `device` with `threads` CPU threads per built model (f32)."""
    require_f32(precision, "MindSpore Lite")
    return LiteBackend(model_file, functools.partial(build_context, device, device_id, threads), threads)


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


class ResizingModel:
    """A mindspore_lite.Model built from a file, resized whenever a batch of another size comes."""

    def __init__(self, model_file: ModelFile, context: mslite.Context) -> None:
        model_type = mslite.ModelType.MINDIR_LITE if model_file.format == "MINDIR_LITE" else mslite.ModelType.MINDIR
        self.model = mslite.Model()
        self.target = context.target
        try:
            self.model.build_from_file(model_file.path, model_type, context)
        except RuntimeError as error:
            raise BackendError(f"MindSpore Lite cannot build {model_file.path} for {context.target}: {error}") from None
        self.shape = list(self.model.get_inputs()[0].shape)
        channel_axis = 3 if model_file.input_layout == "NHWC" else 1
        if len(self.shape) != 4 or self.shape[channel_axis] != 3:
            raise BackendError(f"{model_file.path} has input shape {self.shape}, which is not "
                               f"{model_file.input_layout} with 3 channels as its manifest says")
        self.inputs = self.model.get_inputs()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits for a batch in the model's layout, copied out of Lite's buffer."""
        if batch.shape[0] != self.shape[0]:
            self.shape[0] = batch.shape[0]
            self.model.resize(self.inputs, [self.shape])
            self.inputs = self.model.get_inputs()
        self.inputs[0].set_data_from_numpy(batch)
        outputs = self.model.predict(self.inputs)
        # The array may share Lite's output buffer, which the next predict overwrites: copy it.
        return np.array(outputs[0].get_data_to_numpy(), copy=True).reshape(batch.shape[0], -1)


class LiteBackend(Backend):
    """Lite models of one file: one for batch sizes divisible by the thread count, one for the others.

    Both are built during warm-up (the ladder's sizes reach both lanes whenever a lane is ever used),
    while the checked private copy of the file it was given exists (serving.verify.private_copy).
    """

    runtime_version = f"mindspore_lite {getattr(mslite, '__version__', 'unknown')}"

    def __init__(self, model_file: ModelFile, new_context: Callable[[], mslite.Context], threads: int) -> None:
        self._model_file = model_file
        self._new_context = new_context
        self._threads = max(1, threads)
        self._nhwc = model_file.input_layout == "NHWC"
        self._models: Dict[bool, ResizingModel] = {}
        model = self._model(1)  # fails now, not at the first request, when the file or device is unusable
        LOG.info("MindSpore Lite model %s built for %s (input %s, layout %s)", model_file.path,
                 model.target, model.shape, model_file.input_layout)

    def warm_up(self, sample: np.ndarray, max_batch_size: int) -> None:
        """Run the ladder's sizes (which builds the Model of each lane that batches will use), then make
        every size from 1 to `max_batch_size` a run size: a batch runs at its own size, unpadded.

        Measured in-process (1 thread, batch sizes cycling through 5-12 at the demo size, 5-7 and 3 at
        224 px): 1.35x and 1.33x the images per second of padding them to the ladder's 8 and 16."""
        super().warm_up(sample, max_batch_size)
        self.run_sizes = tuple(range(1, max_batch_size + 1))

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits for an NCHW batch on the Model of its size's lane."""
        if self._nhwc:
            batch = np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
        return self._model(batch.shape[0]).run(batch)

    def close(self) -> None:
        """Drop every built Model."""
        self._models.clear()

    def _model(self, batch_size: int) -> ResizingModel:
        """The Model of batch_size's lane (divisible by the thread count or not), built on first use."""
        lane = batch_size % self._threads == 0
        if lane not in self._models:
            self._models[lane] = ResizingModel(self._model_file, self._new_context())
            LOG.debug("MindSpore Lite model built for batch sizes %s divisible by %d threads",
                      "" if lane else "not", self._threads)
        return self._models[lane]
