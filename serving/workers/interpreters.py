"""Which interpreter runs a runtime: MindSpore Lite lives only in .venv-lite (Python 3.7), never in the front.

The one owner of the rule, used by the workers (serving.workers.proxy) and the export (export.lite).
"""
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LITE_PYTHON_ENV = "GENET_LITE_PYTHON"


def lite_python() -> str:
    """The MindSpore Lite interpreter: $GENET_LITE_PYTHON, else .venv-lite/bin/python in the repository."""
    return os.environ.get(LITE_PYTHON_ENV) or str(REPO_ROOT / ".venv-lite" / "bin" / "python")


def worker_python(backend: str) -> str:
    """The interpreter of `backend`'s worker: the Lite one for mslite, this one (the front's) otherwise."""
    return lite_python() if backend == "mslite" else sys.executable
