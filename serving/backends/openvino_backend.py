"""OpenVINO backend: the manifest's "onnx" model on OpenVINO's CPU plugin, in f32 or bf16.

One model compiled with the ONNX file's dynamic batch dimension; the warm-up runs every size of
serving.backends.batch_sizes once, so no request pays for a new shape. `--precision auto` computes
in bf16 where the CPU has it natively (AVX512-BF16 or AMX: OpenVINO lists BF16 among the CPU's
capabilities) and export verified bf16 on the file (the manifest's result "openvino-bf16"), and in f32
elsewhere, with a warning where only the verification is missing; an explicit bf16 on a CPU without it
is refused, never emulated, and so is one on a version not verified in bf16. The precision is explicit
either way: OpenVINO itself would pick bf16 on such CPUs unasked. Runs in a .venv worker
(serving.workers), like the other backends.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import openvino

from modelrepo.manifest import ModelFile
from runtime_env import onednn_uncapped
from serving.backends import Backend, BackendError
from serving.settings import PRECISIONS

LOG = logging.getLogger(__name__)
UNVERIFIED_BF16 = ("export did not verify this version in bf16: the manifest's verification result 'openvino-bf16' "
                   "is absent (exported before bf16 was verified), skipped (exported on a CPU without native bf16: "
                   "re-export it on one with AVX512-BF16 or AMX) or failed (bf16 changed the top-1 class of a "
                   "verification image)")


def create(model_file: ModelFile, *, device: str, device_id: int, threads: int, precision: str) -> "OpenVinoBackend":
    """An OpenVINO backend on the CPU with `threads` inference threads at `precision` (auto, f32, bf16)."""
    if device != "cpu":
        raise BackendError(f"the OpenVINO backend runs on the CPU only, not --device {device}")
    with onednn_uncapped():
        core = openvino.Core()
        capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        return OpenVinoBackend(core, model_file, threads,
                               resolve_precision(precision, capabilities, model_file.verified_precisions))


def resolve_precision(requested: str, capabilities: Sequence[str], verified: Sequence[str]) -> str:
    """The precision to compute in on a CPU with these OpenVINO `capabilities`, for a file export verified in
    the `verified` precisions (ModelFile.verified_precisions).

    auto is bf16 where the CPU has native bf16 and export verified bf16, else f32 (with a warning when only the
    verification is missing); an explicit bf16 on a CPU without it, or on a version not verified in bf16, is
    refused (BackendError). bf16-unverified computes in bf16 on a native CPU whatever the verification said,
    and says so in its name ("bf16-unverified", with a warning): for benchmarks of random-weight networks,
    whose near-tied classes make top-1 agreement meaningless.
    """
    if requested not in PRECISIONS:
        raise BackendError(f"invalid --precision {requested!r}: choose one of {', '.join(PRECISIONS)}")
    native_bf16 = "BF16" in capabilities
    if requested == "f32" or (requested == "auto" and not native_bf16):
        return "f32"
    if not native_bf16:
        raise BackendError(f"--precision {requested}: this CPU has no native bf16 (OpenVINO CPU capabilities: "
                           f"{', '.join(capabilities)}; it needs AVX512-BF16 or AMX); serve --precision f32 or auto")
    if "bf16" in verified:
        return "bf16"
    if requested == "bf16-unverified":
        LOG.warning("--precision bf16-unverified: computing in bf16 although %s", UNVERIFIED_BF16)
        return requested
    if requested == "bf16":
        raise BackendError(f"--precision bf16: {UNVERIFIED_BF16}; serve --precision f32 or auto")
    LOG.warning("--precision auto serves f32 although this CPU has native bf16: %s", UNVERIFIED_BF16)
    return "f32"


class OpenVinoBackend(Backend):
    """A compiled OpenVINO model and its one infer request (the backend is called from one thread at a time)."""

    def __init__(self, core: openvino.Core, model_file: ModelFile, threads: int, precision: str) -> None:
        if model_file.input_layout != "NCHW":
            raise BackendError(f"the ONNX input layout must be NCHW, got {model_file.input_layout}")
        self.precision = precision
        self.runtime_version = f"openvino {openvino.__version__.split('-')[0]} {precision}"
        # Pinning is off: --instances runs several workers, and each would pin its threads to the same cores.
        config = {"INFERENCE_NUM_THREADS": max(1, threads), "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": precision.split("-")[0], "ENABLE_CPU_PINNING": False}
        try:
            self._compiled = core.compile_model(core.read_model(model_file.path), "CPU", config)
        except RuntimeError as error:
            raise BackendError(f"OpenVINO cannot compile {model_file.path}: {error}") from None
        self._request = self._compiled.create_infer_request()
        LOG.info("OpenVINO model %s compiled for the CPU (%s, %d threads)", model_file.path, precision, threads)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits for an NCHW batch at its exact size, copied out of OpenVINO's output buffer."""
        self._request.infer({0: batch})
        return np.array(self._request.get_output_tensor(0).data, copy=True)

    def close(self) -> None:
        """Drop the infer request and the compiled model."""
        self._request = None
        self._compiled = None
