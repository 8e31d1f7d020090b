"""The offline baseline: `python -m serving.offline` run in the backend's own environment, its JSON read back.

The benchmark knows serving only through that command line and the JSON line it prints.
"""
import json
import logging
import subprocess
from pathlib import Path
from typing import List, Optional, Sequence

from runtime_env import REPO_ROOT, backend_python

logger = logging.getLogger(__name__)


def run_offline(
    model_dir: Path,
    backend: str,
    batch_sizes: Sequence[int],
    images: Sequence[Path],
    seconds: float,
    threads: Optional[int] = None,
    device: str = "cpu",
    device_id: int = 0,
    python: Optional[str] = None,
    expected_sha256: str = "",
    runtime: str = "backend",
    precision: str = "auto",
) -> List[dict]:
    """Offline throughput and latency per batch size of the model in model_dir, without gRPC.

    Runs `python -m serving.offline` with the backend's interpreter (.venv-lite for mslite),
    so the same runtime and serving's own preprocessing and backend classes are measured.
    expected_sha256 (the server's model_sha256), when given, must match the file measured.
    precision is the server's --precision (auto, f32, bf16); each result says what was computed in.
    runtime "onnxruntime" or "openvino" measures that runtime on the version's model.onnx instead;
    `python` must then be an environment that has it.
    """
    command = [python or backend_python(backend), "-m", "serving.offline", "--model-dir", str(model_dir),
               "--backend", backend, "--device", device, "--device-id", str(device_id),
               "--batch-sizes", ",".join(str(b) for b in sorted(set(batch_sizes))), "--seconds", str(seconds),
               "--runtime", runtime, "--precision", precision]
    if threads is not None:
        command += ["--threads", str(threads)]
    command += [str(path) for path in images]
    logger.info("offline baseline: %s", " ".join(command[:12]))
    completed = subprocess.run(command, cwd=str(REPO_ROOT), stdout=subprocess.PIPE, check=False,
                               timeout=600 + 2 * seconds * len(batch_sizes))
    if completed.returncode != 0:
        raise RuntimeError(f"offline baseline failed with exit status {completed.returncode}")
    report = json.loads(completed.stdout.decode("utf-8").strip().splitlines()[-1])
    if expected_sha256 and report["sha256"] != expected_sha256:
        raise RuntimeError(f"offline baseline measured {report['model_file']} (sha256 {report['sha256']}), "
                           f"not the served model (sha256 {expected_sha256})")
    return [dict(result, runtime_version=report["runtime_version"], precision=report["precision"])
            for result in report["results"]]
