"""The front and its inference workers, as real processes: who loads what, exact results, concurrent batches.

The front (`python -m serving`, this interpreter: .venv) decodes and batches; the runtime runs in
worker processes (Lite in .venv-lite). What a process has loaded is read from /proc/PID/maps.
"""
import os
import subprocess
import sys

import grpc
import numpy as np
import psutil
import pytest

from clients.benchmark.servers import REPO_ROOT
from genet.v1 import classifier_pb2, classifier_pb2_grpc
from modelrepo.manifest import read_manifest
from runtime_env import lite_python
from serving.dataplane import rank
from serving.manifest import served_file
from serving.preprocessing import Preprocessor
from tests.serving.conftest import start_server

RUNTIME_LIBRARIES = ("libmindspore", "mindspore_lite", "libopenvino")
# The Lite backend in-process in the Lite interpreter, on the front's preprocessed tensors: the reference.
IN_PROCESS = """
import sys
import numpy as np
from modelrepo.manifest import read_manifest
from serving.backends import create_backend
from serving.manifest import served_file

version_dir, tensors, out, max_batch_size = sys.argv[1:5]
backend = create_backend("mslite", served_file(read_manifest(version_dir), "mslite"), device="cpu", device_id=0,
                         threads=1)
batch = np.load(tensors)
backend.warm_up(batch[0], int(max_batch_size))
np.save(out, backend.predict(batch))
"""


def workers(server):
    """The server's worker processes."""
    return psutil.Process(server.process.pid).children()


def loads_a_runtime(pid: int) -> bool:
    """Whether a MindSpore, MindSpore Lite or OpenVINO library is mapped into process `pid`."""
    with open(f"/proc/{pid}/maps") as handle:
        maps = handle.read()
    return any(library in maps for library in RUNTIME_LIBRARIES)


def classify(address: str, images, **fields):
    """One Classify call on a fresh channel."""
    with grpc.insecure_channel(address) as channel:
        request = classifier_pb2.ClassifyRequest(images=images, **fields)
        return classifier_pb2_grpc.ClassifierStub(channel).Classify(request, timeout=60)


def test_the_front_never_loads_a_runtime_and_its_worker_runs_the_backends_interpreter(server):
    front = psutil.Process(server.process.pid)
    assert front.exe() == os.path.realpath(sys.executable)
    assert not loads_a_runtime(front.pid)
    (worker,) = workers(server)
    backend = server.arg("--backend")
    assert worker.exe() == os.path.realpath(lite_python() if backend == "mslite" else sys.executable)
    assert loads_a_runtime(worker.pid)


def test_served_scores_equal_the_in_process_lite_backend_bit_for_bit(mslite_server, version_dir, photos, tmp_path):
    images = list(photos.values())[:5]
    manifest = read_manifest(str(version_dir))
    preprocessor = Preprocessor(manifest.preprocessing, 40000000)
    np.save(str(tmp_path / "batch.npy"), np.stack([preprocessor(data) for data in images]))
    completed = subprocess.run([lite_python(), "-c", IN_PROCESS, str(version_dir), str(tmp_path / "batch.npy"),
                                str(tmp_path / "logits.npy"), mslite_server.arg("--max-batch-size")],
                               cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    classes = len(manifest.labels)
    expected = rank(np.load(str(tmp_path / "logits.npy")), classes, manifest.labels)
    response = classify(mslite_server.address, images, top_k=classes)  # one batch of 5, as in the reference
    served = [[(p.class_id, p.score) for p in result.predictions] for result in response.results]
    assert served == [[(p.class_id, np.float32(p.score)) for p in image] for image in expected]


@pytest.fixture(scope="module")
def two_instance_server(model_repository, tmp_path_factory):
    """A Lite server with two workers."""
    server = start_server("mslite", model_repository, tmp_path_factory.mktemp("logs"), ["--instances", "2"])
    yield server
    assert server.stop() == 0, server.log()


def test_two_instances_compute_batches_at_once_with_unchanged_results(two_instance_server, mslite_server,
                                                                      fmnist_images):
    assert len(workers(two_instance_server)) == 2
    images = list(fmnist_images.values())[:16]  # two full batches of 8, queued at once
    alone, batches = (two_instance_server.metric(f"genet_batches_in_flight_{sample}", **labels)
                      for sample, labels in (("bucket", {"le": "1.0"}), ("count", {})))
    response = classify(two_instance_server.address, images, top_k=10)
    # The first batch started alone, the second beside it.
    assert two_instance_server.metric("genet_batches_in_flight_count") == batches + 2
    assert two_instance_server.metric("genet_batches_in_flight_bucket", le="1.0") == alone + 1
    single = classify(mslite_server.address, images, top_k=10)
    assert [[(p.class_id, p.score) for p in result.predictions] for result in response.results] == \
        [[(p.class_id, p.score) for p in result.predictions] for result in single.results]
