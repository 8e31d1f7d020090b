"""Runs `export.lite_tool` in the `.venv-lite` interpreter (MindSpore Lite cannot share our process)."""
import json
import logging
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from export.errors import ExportError
from runtime_env import LITE_PYTHON_ENV, lite_python

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
LITE_TIMEOUT_S = 900


def lite_unavailable_reason():
    """Why the Lite model cannot be produced here, or None when the interpreter exists."""
    python = lite_python()
    if os.path.isfile(python) and os.access(python, os.X_OK):
        return None
    return f"MindSpore Lite interpreter {python} not found (run make setup or set {LITE_PYTHON_ENV})"


def convert_to_lite(onnx_path, ms_path):
    """Convert a normalised ONNX model to a Lite `.ms`; returns the input Lite reports."""
    info = _run_tool("convert", str(onnx_path), str(ms_path))
    log.info("wrote %s (input %s %s)", ms_path, info["input_shape"], info["input_layout"])
    return info


def predict_with_lite(ms_path, batches):
    """Run {key: NCHW float32 batch} through the Lite model; returns ({key: logits}, info)."""
    with tempfile.TemporaryDirectory(prefix="genet-lite-") as scratch:
        inputs, outputs = Path(scratch, "inputs.npz"), Path(scratch, "outputs.npz")
        np.savez(inputs, **batches)
        info = _run_tool("predict", str(ms_path), str(inputs), str(outputs))
        with np.load(outputs) as saved:
            return {key: saved[key] for key in saved.files}, info


def _run_tool(*args):
    """Run one lite_tool command; its last stdout line is a JSON object."""
    command = [str(lite_python()), "-m", "export.lite_tool", *args]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    try:
        result = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, timeout=LITE_TIMEOUT_S,
                                check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExportError(f"MindSpore Lite {args[0]} could not run: {exc}") from None
    if result.returncode != 0:
        raise ExportError(f"MindSpore Lite {args[0]} failed (exit {result.returncode}): "
                          f"{_tail(result.stderr)}")
    lines = result.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        raise ExportError(f"MindSpore Lite {args[0]} printed no result: {_tail(result.stdout)}") from None


def _tail(text, lines=5):
    """The last lines of a subprocess's output, without Lite's [WARNING] noise."""
    kept = [line for line in text.strip().splitlines() if "[WARNING]" not in line]
    return "\n".join(kept[-lines:])
