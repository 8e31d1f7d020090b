"""Fixtures of the serving tests: a tiny exported model, test images, live server processes."""
import io
from pathlib import Path
from typing import Dict, List

import grpc
import numpy as np
import pytest
from PIL import Image

from clients.benchmark.servers import REPO_ROOT, ServerProcess
from genet.v1 import classifier_pb2_grpc

MODEL_NAME = "genet_res50"
DATA = REPO_ROOT / "data"
# The shared server: small batches with a noticeable delay so that concurrent requests merge.
SERVER_ARGS = ("--max-batch-size", "8", "--max-queue-delay-ms", "20", "--max-queue-size", "64",
               "--max-images-per-request", "32", "--max-message-mb", "2", "--threads", "1", "--workers", "2")
BACKENDS = ("mindspore", "mslite", "openvino")


@pytest.fixture(scope="session")
def version_dir(model_repository) -> Path:
    """The exported version directory."""
    (manifest,) = model_repository.glob(f"{MODEL_NAME}/*/manifest.json")
    return manifest.parent


@pytest.fixture(scope="session")
def photos() -> Dict[str, bytes]:
    """Real photographs: data/photos (`make data`), else the ones shipped inside Python packages."""
    files = sorted(p for p in (DATA / "photos").glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if files:
        return {p.name: p.read_bytes() for p in files}
    import skimage.data
    return {name: _jpeg(getattr(skimage.data, name)()) for name in ("chelsea", "coffee", "rocket", "astronaut")}


@pytest.fixture(scope="session")
def fmnist_images() -> Dict[str, bytes]:
    """Two Fashion-MNIST validation JPEGs per class (data/fmnist), else 20 synthetic 28x28 grey JPEGs."""
    classes = sorted((DATA / "fmnist" / "val").glob("*"))
    if classes:
        return {f"{c.name}/{p.name}": p.read_bytes() for c in classes for p in sorted(c.glob("*"))[:2]}
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:28, :28]
    images = {}
    for index in range(20):
        centre, radius = rng.uniform(8, 20, 2), rng.uniform(3, 9, 2)
        blob = 255 * np.exp(-(((yy - centre[0]) / radius[0]) ** 2 + ((xx - centre[1]) / radius[1]) ** 2))
        images[f"synthetic{index}"] = _jpeg(np.clip(blob + rng.normal(0, 20, blob.shape), 0, 255))
    return images


def _jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def start_server(backend: str, model_repository: Path, log_dir: Path, extra_args: List[str] = ()) -> ServerProcess:
    """A started server process (the front in .venv; the backend in its worker: Lite in .venv-lite), SERVING."""
    args = ["--model-repository", str(model_repository), "--backend", backend, *SERVER_ARGS, *extra_args]
    log_path = log_dir / f"server-{len(list(log_dir.glob('server-*.log')))}.log"
    return ServerProcess(args, log_path, startup_timeout_s=180).start()


@pytest.fixture(scope="session")
def mslite_server(model_repository, tmp_path_factory):
    """The shared MindSpore Lite server (its worker in .venv-lite, Python 3.7)."""
    server = start_server("mslite", model_repository, tmp_path_factory.mktemp("logs"))
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture(scope="session")
def mindspore_server(model_repository, tmp_path_factory):
    """The shared MindSpore server (its worker in .venv, MINDIR through GraphCell)."""
    server = start_server("mindspore", model_repository, tmp_path_factory.mktemp("logs"))
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture(scope="session")
def openvino_server(model_repository, tmp_path_factory):
    """The shared OpenVINO server (its worker in .venv, the ONNX file) in f32, on every CPU: the core suite
    compares its scores with the eval pipeline's at 1e-4 (tests/serving/test_openvino.py covers auto and bf16)."""
    server = start_server("openvino", model_repository, tmp_path_factory.mktemp("logs"), ["--precision", "f32"])
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture
def start_lite_server(model_repository, tmp_path):
    """A function starting a dedicated Lite server with extra options; each must have exited 0 at the end."""
    started = []

    def start(*extra_args: str) -> ServerProcess:
        started.append(start_server("mslite", model_repository, tmp_path, list(extra_args)))
        return started[-1]

    yield start
    for server in started:
        assert server.stop() == 0, server.log()


@pytest.fixture(scope="session", params=BACKENDS)
def server(request):
    """The core suite runs against each backend's shared server."""
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture
def stub(server):
    """A Classifier stub on the backend's shared server."""
    with grpc.insecure_channel(server.address) as channel:
        yield classifier_pb2_grpc.ClassifierStub(channel)
