"""Faults on real servers and their real worker processes: a worker killed (kill -9) or hung while it
holds a batch, SIGTERM while one hangs, SIGTERM under load and SIGKILL of the front (no worker left
behind), SIGTERM during a slow version load.

A worker is found as a child of the server process. SIGSTOP makes it hang as a runtime stuck in a
native call would; SIGKILL is a crash. A slow load is an honest one: a large --max-batch-size makes
the warm-up run the model at every batch size up to 4096.
"""
import os
import signal
import socket
import threading
import time
import urllib.parse

import grpc
import psutil
import pytest
import requests
from grpc_health.v1 import health_pb2

from clients.stress.shutdown import REFUSALS
from genet.v1 import classifier_pb2, classifier_pb2_grpc
from tests.serving.conftest import MODEL_NAME, start_server
from tests.serving.test_operations import wait_until
from tests.serving.test_reload import publish
from tests.serving.test_workers import gone

SERVING = health_pb2.HealthCheckResponse.SERVING


def worker_pids(server):
    """The pids of the server's worker processes."""
    return [child.pid for child in psutil.Process(server.process.pid).children()]


def classify(server, images, timeout=60):
    """The Classify call's status code and details."""
    with grpc.insecure_channel(server.address) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        try:
            stub.Classify(classifier_pb2.ClassifyRequest(images=images), timeout=timeout)
        except grpc.RpcError as error:
            return error.code(), error.details()
    return grpc.StatusCode.OK, ""


def send_to_a_stopped_worker(server, stub, images):
    """SIGSTOP the (only) worker, send `images` and wait until their batch has gone to it; the call's future."""
    (worker,) = worker_pids(server)
    os.kill(worker, signal.SIGSTOP)
    batches = server.metric("genet_batch_size_count")
    call = stub.Classify.future(classifier_pb2.ClassifyRequest(images=images), timeout=120)
    wait_until(lambda: server.metric("genet_batch_size_count") == batches + 1, what="the batch to start")
    return worker, call


@pytest.fixture(scope="module")
def fault_server(model_repository, tmp_path_factory):
    """A Lite server with one worker and a short inference timeout, shared by the worker-fault tests."""
    server = start_server("mslite", model_repository, tmp_path_factory.mktemp("logs"),
                          ["--inference-timeout-s", "3"])
    yield server
    assert server.stop() == 0, server.log()


def test_a_killed_worker_fails_only_its_batch_and_is_restarted(fault_server, fmnist_images):
    image = next(iter(fmnist_images.values()))
    restarts = fault_server.metric("genet_worker_restarts_total", reason="died")
    with grpc.insecure_channel(fault_server.address) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        worker, held = send_to_a_stopped_worker(fault_server, stub, [image] * 3)
        queued = [stub.Classify.future(classifier_pb2.ClassifyRequest(images=[image] * 2), timeout=120)
                  for _ in range(2)]
        wait_until(lambda: fault_server.metric("genet_queue_depth_images") == 7, what="2 requests queued behind")
        os.kill(worker, signal.SIGKILL)
        assert held.exception().code() == grpc.StatusCode.UNAVAILABLE
        assert "died during predict: killed by SIGKILL" in held.exception().details()
        assert [len(call.result().results) for call in queued] == [2, 2]  # on the restarted worker
    assert fault_server.metric("genet_worker_restarts_total", reason="died") == restarts + 1
    assert gone(worker) and worker_pids(fault_server) != [worker]
    wait_until(lambda: fault_server.health() == SERVING, what="SERVING")
    assert classify(fault_server, [image])[0] == grpc.StatusCode.OK


def test_a_hung_worker_is_killed_after_the_inference_timeout_and_replaced(fault_server, fmnist_images):
    image = next(iter(fmnist_images.values()))
    restarts = fault_server.metric("genet_worker_restarts_total", reason="timeout")
    with grpc.insecure_channel(fault_server.address) as channel:
        worker, held = send_to_a_stopped_worker(fault_server, classifier_pb2_grpc.ClassifierStub(channel), [image])
        assert held.exception().code() == grpc.StatusCode.UNAVAILABLE
        assert "within 3 s (--inference-timeout-s): its worker was killed" in held.exception().details()
    wait_until(lambda: fault_server.metric("genet_worker_restarts_total", reason="timeout") == restarts + 1,
               what="the restart")
    assert gone(worker)
    wait_until(lambda: fault_server.health() == SERVING, what="SERVING")
    assert classify(fault_server, [image] * 3)[0] == grpc.StatusCode.OK


def test_shutdown_does_not_wait_past_the_grace_period_for_a_hung_worker(start_lite_server, fmnist_images):
    image = next(iter(fmnist_images.values()))
    server = start_lite_server("--inference-timeout-s", "600", "--grace-period-s", "1")
    with grpc.insecure_channel(server.address) as channel:
        worker, call = send_to_a_stopped_worker(server, classifier_pb2_grpc.ClassifierStub(channel), [image] * 3)
        assert server.stop() == 0  # ServerProcess kills it (status -9) if it ignores SIGTERM for 60 s
        assert call.exception() is not None
    log = server.log()
    assert "not computed within 1.0 s of the shutdown" in log
    assert "was cancelled while the mslite worker" in log and "computed it: the worker was killed" in log
    assert gone(worker)


def test_a_call_arriving_while_the_server_drains_is_refused_as_shutting_down(start_lite_server, fmnist_images):
    """The listeners stop only after the drain: meanwhile a call, on a gRPC connection held since before
    SIGTERM or on a new one, or over HTTP, reaches its handler and is refused with UNAVAILABLE / 503
    (shutting down), never CANCELLED by a gRPC server that stops accepting. The admitted batch fails
    after the grace period."""
    image = next(iter(fmnist_images.values()))
    server = start_lite_server("--inference-timeout-s", "600", "--grace-period-s", "6", "--http-port", "0")
    with grpc.insecure_channel(server.address) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        worker, held = send_to_a_stopped_worker(server, stub, [image])
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: "shutting down: finishing" in server.log(), what="the drain")
        with pytest.raises(grpc.RpcError) as refused:
            stub.Classify(classifier_pb2.ClassifyRequest(images=[image]), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in refused.value.details()
        assert classify(server, [image], timeout=10) == (
            grpc.StatusCode.UNAVAILABLE, f"model {MODEL_NAME} is not served: the server is shutting down")
        over_http = requests.post(f"{server.http_url}/v2/models/{MODEL_NAME}/classify", data=image, timeout=10)
        assert over_http.status_code == 503 and "shutting down" in over_http.text
        assert held.exception() is not None and held.exception().code() == grpc.StatusCode.UNAVAILABLE
    assert server.process.wait(60) == 0
    assert gone(worker)


def test_http_requests_left_after_the_drain_get_what_remains_of_the_grace_period(start_lite_server, fmnist_images):
    """A hung worker's batch holds the drain for the whole grace period; an HTTP request still receiving its
    body then is cancelled at once, not given a grace period of its own (it was: the exit took twice as long)."""
    image = next(iter(fmnist_images.values()))
    grace_s = 4.0
    server = start_lite_server("--inference-timeout-s", "600", "--grace-period-s", str(grace_s), "--http-port", "0")
    http = urllib.parse.urlsplit(server.http_url)
    with socket.create_connection((http.hostname, http.port), timeout=30) as upload:
        upload.sendall(f"POST /v2/models/{MODEL_NAME}/classify HTTP/1.1\r\nHost: {http.netloc}\r\n"
                       f"Content-Length: {len(image) + 1}\r\n\r\n".encode() + image)  # one byte short
        with grpc.insecure_channel(server.address) as channel:
            worker, held = send_to_a_stopped_worker(server, classifier_pb2_grpc.ClassifierStub(channel), [image])
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(60) == 0
            took_s = time.monotonic() - started
            assert held.exception().code() == grpc.StatusCode.UNAVAILABLE
        assert grace_s <= took_s < 1.5 * grace_s, server.log()
    assert "closing 1 HTTP connection(s)" in server.log()
    assert gone(worker)


def test_an_idle_keep_alive_http_connection_does_not_hold_the_exit(start_lite_server):
    """A client's idle keep-alive connection closes at once at shutdown (it held the exit for the whole grace
    period when only busy connections were meant to get it)."""
    grace_s = 10.0
    server = start_lite_server("--grace-period-s", str(grace_s), "--http-port", "0")
    with requests.Session() as session:
        assert session.get(f"{server.http_url}/v2/health/ready", timeout=10).status_code == 200  # kept alive
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(60) == 0
        took_s = time.monotonic() - started
    assert took_s < grace_s / 2, server.log()
    assert "closing 1 HTTP connection(s)" in server.log()


def test_sigterm_under_load_loses_no_admitted_call_and_leaves_no_worker(start_lite_server, fmnist_images):
    image = next(iter(fmnist_images.values()))
    server = start_lite_server("--instances", "2")
    workers = worker_pids(server)
    outcomes, stop = [], threading.Event()

    def load():
        with grpc.insecure_channel(server.address) as channel:
            stub = classifier_pb2_grpc.ClassifierStub(channel)
            while not stop.is_set():
                try:
                    stub.Classify(classifier_pb2.ClassifyRequest(images=[image] * 2), timeout=60)
                    outcomes.append((grpc.StatusCode.OK, ""))
                except grpc.RpcError as error:
                    outcomes.append((error.code(), error.details() or ""))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(outcomes) >= 20, what="load")
    status = server.stop()
    stop.set()
    for thread in threads:
        thread.join()
    assert status == 0
    lost = [outcome for outcome in outcomes if not is_ok_or_refused(*outcome)]
    assert not lost and sum(code == grpc.StatusCode.OK for code, _ in outcomes) >= 20
    assert all(gone(pid) for pid in workers)


def is_ok_or_refused(code, details):
    """OK, or never admitted: refused (clients.stress.shutdown.REFUSALS), or CANCELLED by grpc.aio as it
    reached the server in the moment it stopped accepting (clients/stress/shutdown.py; an admitted call
    is cancelled only after the 30 s grace period, which this test never reaches)."""
    refused = code == grpc.StatusCode.UNAVAILABLE and any(text in details.lower() for text in REFUSALS)
    return code in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED) or refused


def test_sigkill_of_the_front_leaves_no_worker(model_repository, tmp_path):
    server = start_server("mslite", model_repository, tmp_path, ["--instances", "2"])
    workers = worker_pids(server)
    assert len(workers) == 2
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    wait_until(lambda: all(gone(pid) for pid in workers), timeout_s=10, what="the workers to go")


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
