"""Faults on real Lite servers (Python 3.7): an inference call that never returns, and SIGTERM during a
slow version load.

A call stuck in the runtime is produced by the product's fault hook (GENET_SERVING_FAULTS, see
serving/faults.py): a batch of exactly 3 images never returns. A slow load is an honest one: a
large --max-batch-size makes the warm-up run the model at every batch size up to 4096.
"""
import grpc
import pytest
from grpc_health.v1 import health_pb2

from genet.v1 import classifier_pb2, classifier_pb2_grpc
from tests.serving.conftest import MODEL_NAME, start_server
from tests.serving.test_operations import wait_until
from tests.serving.test_reload import publish

HANGING_BATCH = 3


@pytest.fixture
def hanging_inference(monkeypatch):
    """Servers started from now on hang in any inference call on a batch of exactly HANGING_BATCH images."""
    monkeypatch.setenv("GENET_SERVING_FAULTS", "hang-batch-of={}".format(HANGING_BATCH))


def classify(server, images, timeout=60):
    """The Classify call's status code and details."""
    with grpc.insecure_channel(server.address) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        try:
            stub.Classify(classifier_pb2.ClassifyRequest(images=images), timeout=timeout)
        except grpc.RpcError as error:
            return error.code(), error.details()
    return grpc.StatusCode.OK, ""


def test_a_hung_inference_fails_its_request_takes_the_server_out_of_service_and_does_not_hold_the_exit(
        start_lite_server, hanging_inference, fmnist_images):
    image = next(iter(fmnist_images.values()))
    server = start_lite_server("--inference-timeout-s", "1")
    assert classify(server, [image] * 2)[0] == grpc.StatusCode.OK
    code, details = classify(server, [image] * HANGING_BATCH)
    assert code == grpc.StatusCode.UNAVAILABLE and "--inference-timeout-s" in details
    wait_until(lambda: server.health() == health_pb2.HealthCheckResponse.NOT_SERVING, what="NOT_SERVING")
    assert server.metric("genet_model_ready") == 0
    assert classify(server, [image])[0] == grpc.StatusCode.UNAVAILABLE
    assert server.stop() == 0
    assert "exiting without waiting for inference-v1" in server.log()


def test_shutdown_does_not_wait_past_the_grace_period_for_a_hung_inference(
        start_lite_server, hanging_inference, fmnist_images):
    image = next(iter(fmnist_images.values()))
    server = start_lite_server("--inference-timeout-s", "600", "--grace-period-s", "1")
    with grpc.insecure_channel(server.address) as channel:
        call = classifier_pb2_grpc.ClassifierStub(channel).Classify.future(
            classifier_pb2.ClassifyRequest(images=[image] * HANGING_BATCH), timeout=120)
        wait_until(lambda: server.metric("genet_batch_size_count") == 1, what="the batch to start")
        assert server.stop() == 0  # ServerProcess kills it (status -9) if it ignores SIGTERM for 60 s
        assert call.exception() is not None
    log = server.log()
    assert "not computed within 1.0 s of the shutdown" in log
    assert "exiting without waiting for inference-v1" in log


def test_sigterm_during_a_slow_version_load_stops_the_watcher_and_exits_0(version_dir, tmp_path):
    model_dir = tmp_path / "models" / MODEL_NAME
    model_dir.mkdir(parents=True)
    publish(model_dir, version_dir, 1)
    server = start_server("mslite", model_dir.parent, tmp_path,
                          ["--max-batch-size", "4096", "--reload-interval-s", "0.2"])
    try:
        publish(model_dir, model_dir / "1", 2)
        # Lite built version 2's model (from its private copy, so the log names a temporary path; the
        # second "built for" line is version 2's): its warm-up at batch sizes up to 4096 is under way.
        wait_until(lambda: server.log().count(" built for ") == 2, what="version 2 built")
    finally:
        status = server.stop()
    log = server.log()
    assert status == 0, log
    assert "repository scan failed" not in log and "version 2 is ready" not in log
    assert "exiting without waiting for inference-v2" in log  # the warm-up of version 2 was still running
