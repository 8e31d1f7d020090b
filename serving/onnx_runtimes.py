"""Other runtimes on the exported model.onnx, for the benchmark's side-by-side table: ONNX Runtime and
OpenVINO (fp32, and bf16 where the CPU computes it natively).

Each runtime is wrapped as a model with predict(batch) -> logits, so serving.offline measures it with
serving's own preprocessing exactly as it measures the served backend (`--runtime`). A runtime's
library is imported when its model is created, so only in the environment that has it (.venv); the
server never imports this module.
"""
import numpy as np

from runtime_env import onednn_uncapped

RUNTIMES = ("onnxruntime", "openvino")


class OnnxRuntimeModel:
    """ONNX Runtime's CPU provider on an ONNX file, `threads` intra-op threads (fp32 only)."""

    def __init__(self, path: str, threads: int, precision: str) -> None:
        import onnxruntime
        if precision != "fp32":
            raise ValueError(f"onnxruntime runs this model in fp32 only, not {precision}")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.runtime_version = f"onnxruntime {onnxruntime.__version__}"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Logits of an NCHW float32 batch."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


class OpenVinoModel:
    """OpenVINO's CPU plugin on an ONNX file, `threads` inference threads, at `precision` (fp32 or bf16)."""

    def __init__(self, path: str, threads: int, precision: str) -> None:
        import openvino
        with onednn_uncapped():
            core = openvino.Core()
            capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            if precision == "bf16" and "BF16" not in capabilities:
                raise ValueError(f"this CPU has no native bf16 (OpenVINO CPU capabilities: {', '.join(capabilities)})")
            config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                      "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision]}
            self.compiled = core.compile_model(core.read_model(path), "CPU", config)
        self.runtime_version = f"openvino {openvino.__version__.split('-')[0]}"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Logits of an NCHW float32 batch (a new batch size reshapes the compiled model on the fly)."""
        return self.compiled(np.ascontiguousarray(batch, dtype=np.float32))[0]


def create_runtime(name: str, onnx_path: str, threads: int, precision: str):
    """The `name` runtime (onnxruntime or openvino) on onnx_path; ValueError when it cannot run `precision`."""
    models = {"onnxruntime": OnnxRuntimeModel, "openvino": OpenVinoModel}
    if name not in models:
        raise ValueError(f"unknown runtime {name}; valid: {', '.join(RUNTIMES)}")
    return models[name](onnx_path, threads, precision)
