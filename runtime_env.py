"""The runtime environment, in one place for every package: the process variables MindSpore and protobuf
need (set by every package's __init__), and which interpreter runs which runtime.

Standard library only, Python 3.7 compatible: both environments (.venv and .venv-lite) import it.
Both variables are read once, when their library first loads, so `configure()` runs before any
import of mindspore, protobuf or grpc; a value already in the environment is kept.
MindSpore Lite lives only in .venv-lite (Python 3.7), never in a .venv process: `backend_python`
is the one owner of that rule, used by the serving workers, the offline baseline the benchmark
starts, and the export's Lite tool.
"""
import contextlib
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent
LITE_PYTHON_ENV = "GENET_LITE_PYTHON"
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


@contextlib.contextmanager
def onednn_uncapped():
    """Lift ONEDNN_MAX_CPU_ISA around every use of an OpenVINO Core (a property query included).

    OpenVINO's CPU plugin carries its own copy of oneDNN, which reads the variable once per process (seen:
    at the first compile, and in a test process already at a capabilities query): capped at AVX2 on an AVX-512 CPU it finds no kernel for some nodes ("Supported primitive
    descriptors list is empty for node: MaxPool") and could not use AMX for bf16. MindSpore's copy keeps
    the value it read, or reads the restored one later.
    """
    saved = os.environ.pop("ONEDNN_MAX_CPU_ISA", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["ONEDNN_MAX_CPU_ISA"] = saved


def lite_python() -> str:
    """The MindSpore Lite interpreter: $GENET_LITE_PYTHON, else .venv-lite/bin/python in the repository."""
    return os.environ.get(LITE_PYTHON_ENV) or str(REPO_ROOT / ".venv-lite" / "bin" / "python")


def backend_python(backend: str) -> str:
    """The interpreter that runs `backend`: the Lite one for mslite, this one (a .venv process's) otherwise."""
    return lite_python() if backend == "mslite" else sys.executable
