"""Fixtures of the client tests: a tiny exported model, real Lite server processes, test images."""
import socket

import numpy as np
import pytest
from PIL import Image

from clients.benchmark.servers import ServerProcess



@pytest.fixture(scope="session")
def labels(model_repository) -> list:
    """The exported model's labels, line i = class i."""
    (labels_file,) = model_repository.glob("*/*/labels.txt")
    return [line for line in labels_file.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> list:
    """Paths (str) of six small JPEG and PNG images of different sizes and content."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for index in range(6):
        height, width = 24 + 8 * index, 40 - 2 * index
        ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
        pixels = np.clip(ramp * (index + 1) / 6 + rng.normal(0, 40, (height, width, 3)), 0, 255)
        path = root / f"image{index}.{'png' if index % 3 == 2 else 'jpg'}"
        Image.fromarray(pixels.astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def free_port() -> int:
    """A local port with nothing listening on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _lite_server(model_repository, log_dir):
    return ServerProcess(["--model-repository", str(model_repository), "--backend", "mslite"], log_dir / "server.log",
                         startup_timeout_s=180)


@pytest.fixture(scope="session")
def server(model_repository, tmp_path_factory):
    """A Lite server process on the tiny model, SERVING (clients.benchmark.servers.ServerProcess)."""
    with _lite_server(model_repository, tmp_path_factory.mktemp("logs")) as process:
        yield process


@pytest.fixture(scope="session")
def second_server(model_repository, tmp_path_factory):
    """Another Lite server on the same model, for round robin."""
    with _lite_server(model_repository, tmp_path_factory.mktemp("logs")) as process:
        yield process
