"""The process environment MindSpore and protobuf need, set in one place by every package's __init__.

Standard library only, Python 3.7 compatible: both environments (.venv and .venv-lite) import it.
Both variables are read once, when their library first loads, so `configure()` runs before any
import of mindspore, protobuf or grpc; a value already in the environment is kept.
"""
import os

RUNTIME_ENVIRONMENT = {
    # oneDNN (in MindSpore, and shipped with MindSpore Lite) otherwise picks reference kernels for
    # 3x3/7x7 convolutions on AVX-512 CPUs: 25-100x slower.
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    # `import mindspore` otherwise switches protobuf, and with it every gRPC message, to its slow
    # pure-Python implementation for the whole process.
    "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "upb",
}


def configure() -> None:
    """Set each runtime variable this process has not set itself (children inherit them)."""
    for name, value in RUNTIME_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
