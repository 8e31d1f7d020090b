"""Other runtimes on the exported model.onnx, for the benchmark's side-by-side table: ONNX Runtime and
OpenVINO (f32, and bf16 where the CPU computes it natively).

Each runtime is a model with predict(batch) -> logits, so serving.offline measures it with serving's
own preprocessing exactly as it measures the served backend (`--runtime`). OpenVINO is the server's
own OpenVINO backend (the same compile settings and precision rule as `--backend openvino`). A
runtime's library is imported when its model is created, so only in the environment that has it
(.venv); the server never imports this module.
"""
import numpy as np

from modelrepo.manifest import ModelFile
from serving.backends import create_backend, require_f32

RUNTIMES = ("onnxruntime", "openvino")


class OnnxRuntimeModel:
    """ONNX Runtime's CPU provider on an ONNX file, `threads` intra-op threads (f32 only)."""

    precision = "f32"

    def __init__(self, path: str, threads: int, precision: str) -> None:
        import onnxruntime
        require_f32(precision, "ONNX Runtime")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.runtime_version = f"onnxruntime {onnxruntime.__version__}"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Logits of an NCHW float32 batch."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def create_runtime(name: str, onnx_file: ModelFile, threads: int, precision: str):
    """The `name` runtime (onnxruntime or openvino) on a version's ONNX file at `precision` (auto, f32, bf16);
    BackendError when it cannot compute in that precision here, ValueError for an unknown name."""
    if name == "onnxruntime":
        return OnnxRuntimeModel(onnx_file.path, threads, precision)
    if name == "openvino":
        return create_backend("openvino", onnx_file, device="cpu", device_id=0, threads=threads, precision=precision)
    raise ValueError(f"unknown runtime {name}; valid: {', '.join(RUNTIMES)}")
