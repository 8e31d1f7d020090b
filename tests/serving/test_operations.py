"""Operations against real Lite servers: admission, deadlines, cancellation, shutdown, health, CLI errors."""
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from clients.benchmark.servers import REPO_ROOT
from genet.v1 import classifier_pb2, classifier_pb2_grpc
from serving import cli
from serving.server import Security
from serving.settings import Settings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def small_image() -> bytes:
    """A 50x40 noise JPEG."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def slow_image() -> bytes:
    """A 4000x3000 JPEG: decoding and resizing it takes tens of milliseconds, compressed it is small."""
    ramp = np.linspace(0, 255, 4000, dtype=np.float32)
    pixels = np.stack([np.tile(ramp, (3000, 1)), np.tile(ramp[::-1], (3000, 1)), np.full((3000, 4000), 90.0)], -1)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def wait_until(condition, timeout_s=30.0, what="condition"):
    """Poll `condition` until true; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise TimeoutError(what)


def test_a_full_queue_answers_resource_exhausted_and_admitted_requests_complete(start_lite_server, small_image):
    server = start_lite_server("--max-queue-size", "4", "--max-images-per-request", "4", "--max-batch-size", "1")
    with grpc.insecure_channel(server.address) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        request = classifier_pb2.ClassifyRequest(images=[small_image] * 4)
        futures = [stub.Classify.future(request, timeout=60) for _ in range(40)]
        codes = [future.code() for future in futures]
        assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        rejected = next(f for f in futures if f.code() == grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "queue full" in rejected.details()
        assert all(len(f.result().results) == 4 for f in futures if f.code() == grpc.StatusCode.OK)
        assert len(stub.Classify(request, timeout=30).results) == 4
    assert server.metric("genet_requests_total", method="Classify", code="RESOURCE_EXHAUSTED") == \
        codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert server.metric("genet_queue_depth_images") == 0


def test_an_expired_deadline_drops_the_work_before_compute(mslite_server, slow_image, small_image):
    with grpc.insecure_channel(mslite_server.address) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        before = mslite_server.metric("genet_dropped_images_total", reason="expired")
        with pytest.raises(grpc.RpcError) as caught:
            stub.Classify(classifier_pb2.ClassifyRequest(images=[slow_image] * 6), timeout=0.05)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_until(lambda: mslite_server.metric("genet_dropped_images_total", reason="expired") == before + 6,
                   what="6 expired images counted")
        assert len(stub.Classify(classifier_pb2.ClassifyRequest(images=[small_image]), timeout=30).results) == 1


def test_a_cancelled_request_is_dropped_before_compute(mslite_server, slow_image):
    with grpc.insecure_channel(mslite_server.address) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        before = mslite_server.metric("genet_dropped_images_total", reason="cancelled")
        future = stub.Classify.future(classifier_pb2.ClassifyRequest(images=[slow_image] * 6), timeout=60)
        wait_until(lambda: mslite_server.metric("genet_requests_in_progress", method="Classify") >= 1,
                   what="the request to arrive")
        assert future.cancel()
        wait_until(lambda: mslite_server.metric("genet_dropped_images_total", reason="cancelled") == before + 6,
                   what="6 cancelled images counted")
        wait_until(lambda: mslite_server.metric("genet_queue_depth_images") == 0, what="the queue to empty")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_finishes_every_request_in_flight_then_exits_0(start_lite_server, small_image, signum):
    server = start_lite_server("--max-queue-delay-ms", "5000", "--wait-when-idle", "--max-batch-size", "64",
                               "--max-queue-size", "64", "--grace-period-s", "120")
    with grpc.insecure_channel(server.address) as channel:
        statuses = []
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
        watcher = threading.Thread(target=lambda: statuses.extend(r.status for r in _until_error(watch)))
        watcher.start()
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        futures = [stub.Classify.future(classifier_pb2.ClassifyRequest(images=[small_image] * 2), timeout=60)
                   for _ in range(12)]
        wait_until(lambda: server.metric("genet_requests_in_progress", method="Classify") == 12,
                   what="12 requests in flight")
        assert not any(future.done() for future in futures)  # they wait for the batch to fill
        server.process.send_signal(signum)
        assert all(len(future.result().results) == 2 for future in futures)
        assert server.process.wait(60) == 0  # well within the grace period: open Watch streams end
        watcher.join(10)
    assert statuses[0] == SERVING and NOT_SERVING in statuses
    assert f"received {signum.name}" in server.log()


def _until_error(stream):
    try:
        yield from stream
    except grpc.RpcError:
        return


def test_health_is_not_serving_until_the_model_is_warm(mindspore_server):
    # MindSpore compiles its graphs during warm-up, so the window before SERVING is seconds long.
    assert mindspore_server.health_seen[0] == NOT_SERVING
    assert mindspore_server.health_seen[-1] == SERVING


def run_cli(*args, python=sys.executable):
    """Run `python -m serving ARGS` to completion (for start-up failures)."""
    return subprocess.run([str(python), "-m", "serving", *args], cwd=str(REPO_ROOT), capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))


@pytest.mark.parametrize("device, node", [("gpu", "/dev/nvidia0"), ("ascend", "/dev/davinci0")])
def test_a_missing_accelerator_fails_at_start_with_a_clear_message(model_repository, device, node):
    if os.path.exists(node):
        pytest.skip(f"this machine has a {device} device")
    completed = run_cli("--model-repository", str(model_repository), "--device", device, "--port", "0")
    assert completed.returncode == 2
    assert f"--device {device} --device-id 0 requested, but {node} does not exist" in completed.stderr


def test_a_repository_with_several_models_needs_a_model_name(model_repository, version_dir, tmp_path):
    for name in ("alpha", "beta"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "1").symlink_to(version_dir, target_is_directory=True)
    completed = run_cli("--model-repository", str(tmp_path), "--port", "0")
    assert completed.returncode == 2
    assert "holds several models (alpha, beta); choose one with --model-name" in completed.stderr


def test_a_model_file_changed_after_the_start_up_checks_is_refused_in_one_line(version_dir, tmp_path, caplog):
    """The window between the checks and the load is too short to hit from outside: the server's own
    start-up steps are run in this process, the file is changed between them."""
    copy = tmp_path / "genet_res50" / "1"
    shutil.copytree(str(version_dir), str(copy))
    settings = Settings(model_repository=str(tmp_path), backend="mslite", port=0)
    manifest = cli.preflight(settings)
    model = copy / "model.ms"
    model.chmod(0o644)
    model.write_bytes(model.read_bytes()[:-1])
    with caplog.at_level(logging.ERROR, logger="serving"):
        status = cli._serve(settings, manifest, Security())
    assert status == 2
    assert [record.getMessage().split(": ")[0] for record in caplog.records] == ["cannot serve"]
    assert "sha256 mismatch" in caplog.text and not any(record.exc_info for record in caplog.records)


def test_invalid_settings_are_refused_naming_the_option(model_repository):
    completed = run_cli("--model-repository", str(model_repository), "--max-images-per-request", "100",
                        "--max-queue-size", "10")
    assert completed.returncode == 2 and "--max-images-per-request (100) must not exceed" in completed.stderr
