"""Hot reload on real server processes: new versions swap in under load without one failed request,
broken ones are rejected while the loaded ones keep serving, pinned versions, SIGHUP and rollback.

New versions are copies of the exported one published the way export publishes (built in
.staging-*, renamed into place) with the manifest's version rewritten; a copy has the same
weights, so a switch is seen in the responses' model_version.
"""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from clients.benchmark.servers import REPO_ROOT, ServerProcess
from genet.v1 import classifier_pb2, classifier_pb2_grpc
from modelrepo.manifest import write_manifest

MODEL_NAME = "genet_res50"
SERVED_FILE = "model.ms"  # the Lite backend's file


def publish(model_dir: Path, source: Path, version: int, corruption: str = "") -> Path:
    """Publish a copy of `source` as `version`; corruption "tamper" flips a byte of the served file
    after its sha256 was recorded, "garbage" replaces it by random bytes with a matching sha256."""
    staging = model_dir / f".staging-{version}"
    shutil.copytree(str(source), str(staging))
    for path in staging.iterdir():
        path.chmod(0o644)  # export publishes read-only files
    manifest = json.loads((staging / "manifest.json").read_text())
    manifest["version"] = version
    served = staging / SERVED_FILE
    if corruption == "tamper":
        data = bytearray(served.read_bytes())
        data[len(data) // 2] ^= 0xFF
        served.write_bytes(bytes(data))
    elif corruption == "garbage":
        served.write_bytes(os.urandom(4096))
        manifest["files"]["mslite"]["sha256"] = hashlib.sha256(served.read_bytes()).hexdigest()
    write_manifest(staging, manifest)
    os.rename(str(staging), str(model_dir / str(version)))
    return model_dir / str(version)


@pytest.fixture
def repository(version_dir, tmp_path):
    """A private repository (its model directory is returned) holding the exported model as version 1."""
    model_dir = tmp_path / "models" / MODEL_NAME
    model_dir.mkdir(parents=True)
    publish(model_dir, version_dir, 1)
    return model_dir


@pytest.fixture
def start_server(repository, tmp_path):
    """Start a Lite server on the private repository with extra options; it must exit 0 at the end."""
    started = []

    def start(*extra_args):
        args = ["--model-repository", str(repository.parent), "--backend", "mslite", "--threads", "1",
                "--max-batch-size", "4", "--max-queue-delay-ms", "5", *extra_args]
        log_path = tmp_path / "logs" / f"server-{len(started)}.log"
        started.append(ServerProcess(args, log_path, startup_timeout_s=180).start())
        return started[-1]

    yield start
    for server in started:
        assert server.stop() == 0, server.log()


class RequestLoop:
    """Client threads sending unpinned Classify calls back to back, recording each answer's version."""

    def __init__(self, address: str, image: bytes, threads: int = 3) -> None:
        self._address = address
        self._request = classifier_pb2.ClassifyRequest(images=[image], top_k=1)
        self._stop = threading.Event()
        self.versions = [[] for _ in range(threads)]  # per thread, in call order
        self.failures = []
        self._threads = [threading.Thread(target=self._run, args=(seen,)) for seen in self.versions]

    def _run(self, seen: list) -> None:
        with grpc.insecure_channel(self._address) as channel:
            stub = classifier_pb2_grpc.ClassifierStub(channel)
            while not self._stop.is_set():
                try:
                    seen.append(stub.Classify(self._request, timeout=30).model_version)
                except grpc.RpcError as error:
                    self.failures.append(f"{error.code().name}: {error.details()}")

    def wait_until_every_thread_saw(self, version: str, timeout_s: float = 60) -> None:
        """Block until every thread got an answer from `version`."""
        wait_for(lambda: all(version in seen for seen in self.versions), timeout_s)

    def __enter__(self) -> "RequestLoop":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def wait_for(condition, timeout_s: float = 60) -> None:
    """Poll `condition` until it holds; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"condition not reached in {timeout_s} s"
        time.sleep(0.05)


def info(server: ServerProcess, version: str = "") -> classifier_pb2.ModelInfo:
    """GetModelInfo of `version` (default: the latest)."""
    with grpc.insecure_channel(server.address) as channel:
        return classifier_pb2_grpc.ClassifierStub(channel).GetModelInfo(
            classifier_pb2.GetModelInfoRequest(model_version=version), timeout=10)


def classify_pinned(server: ServerProcess, image: bytes, version: str) -> classifier_pb2.ClassifyResponse:
    """One Classify call pinned to `version`."""
    with grpc.insecure_channel(server.address) as channel:
        return classifier_pb2_grpc.ClassifierStub(channel).Classify(
            classifier_pb2.ClassifyRequest(images=[image], model_version=version), timeout=30)


def test_versions_swap_under_load_without_a_failure_and_broken_ones_are_rejected(
        start_server, repository, fmnist_images):
    server = start_server("--reload-interval-s", "0.2")
    with RequestLoop(server.address, next(iter(fmnist_images.values()))) as loop:
        loop.wait_until_every_thread_saw("1")
        publish(repository, repository / "1", 2)
        loop.wait_until_every_thread_saw("2")
        wait_for(lambda: list(info(server).available_versions) == ["2"])  # version 1 drained and unloaded

        publish(repository, repository / "1", 3, corruption="tamper")
        publish(repository, repository / "1", 4, corruption="garbage")
        wait_for(lambda: server.metric("genet_model_reloads_total", outcome="rejected") == 2)
        answered = sum(len(seen) for seen in loop.versions)
        wait_for(lambda: sum(len(seen) for seen in loop.versions) > answered + 10)
        assert info(server).version == "2"

        publish(repository, repository / "1", 5)
        loop.wait_until_every_thread_saw("5")
    assert loop.failures == []
    for seen in loop.versions:  # each thread's calls are sequential: versions never go back
        assert seen == sorted(seen, key=int) and set(seen) == {"1", "2", "5"}
    wait_for(lambda: list(info(server).available_versions) == ["5"])
    assert server.metric("genet_model_reloads_total", outcome="loaded") == 2
    assert server.metric("genet_model_version_loaded", version="5") == 1
    # Unloading ends once version 2's workers have released their runtime and exited.
    wait_for(lambda: server.metric("genet_model_version_loaded", version="2") == 0)
    assert server.metric("genet_model_latest_version") == 5
    log = server.log()
    assert "rejected model genet_res50 version 3: ManifestError" in log and "sha256 mismatch" in log
    assert "rejected model genet_res50 version 4: BackendError" in log


def test_pinned_versions_sighup_and_rollback_by_removing_a_version(start_server, repository, fmnist_images):
    image = next(iter(fmnist_images.values()))
    server = start_server("--reload-interval-s", "0", "--keep-versions", "2")
    publish(repository, repository / "1", 2)
    server.process.send_signal(signal.SIGHUP)  # polling is off: only SIGHUP scans
    wait_for(lambda: info(server).version == "2")
    assert list(info(server).available_versions) == ["1", "2"]
    assert classify_pinned(server, image, "1").model_version == "1"
    assert classify_pinned(server, image, "").model_version == "2"

    publish(repository, repository / "1", 3)
    server.process.send_signal(signal.SIGHUP)
    wait_for(lambda: list(info(server).available_versions) == ["2", "3"])
    with pytest.raises(grpc.RpcError) as caught:
        classify_pinned(server, image, "1")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    shutil.rmtree(str(repository / "3"))
    server.process.send_signal(signal.SIGHUP)
    wait_for(lambda: list(info(server).available_versions) == ["1", "2"])
    assert classify_pinned(server, image, "").model_version == "2"
    wait_for(lambda: "model genet_res50 version 3 unloaded" in server.log())  # its workers stopped


@pytest.mark.parametrize("corruption, message", [("tamper", "sha256 mismatch"),
                                                  ("renumbered", "the directory is version 2 but its manifest says")])
def test_the_server_refuses_to_start_on_a_broken_latest_version(repository, corruption, message):
    if corruption == "renumbered":
        shutil.copytree(str(repository / "1"), str(repository / "2"))
    else:
        publish(repository, repository / "1", 2, corruption=corruption)
    completed = subprocess.run([sys.executable, "-m", "serving", "--model-repository", str(repository.parent),
                                "--port", "0"], cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2 and "cannot serve: " in completed.stderr and message in completed.stderr
