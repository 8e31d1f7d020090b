"""genet.v1 ClassifyStream on real servers: results, per-request errors, batching, backpressure, cancellation
and shutdown. (KServe's ModelStreamInfer is checked with tritonclient in test_kserve.py.)"""
import os
import queue
import signal
import threading
import time

import grpc
import numpy as np
import pytest

from clients.client import ClientError, make_request
from clients.streaming import StreamingClassifierClient
from genet.v1 import classifier_pb2, classifier_pb2_grpc
from tests.serving.test_faults import worker_pids
from tests.serving.test_operations import wait_until

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]


class OpenStream:
    """A ClassifyStream call whose requests are sent one by one and whose responses are read in the background."""

    def __init__(self, address):
        self.channel = grpc.insecure_channel(address)
        self._outgoing = queue.Queue()
        self.call = classifier_pb2_grpc.ClassifierStub(self.channel).ClassifyStream(iter(self._outgoing.get, None))
        self.responses, self.ending = [], None
        self._reader = threading.Thread(target=self._read)
        self._reader.start()

    def send(self, images, request_id):
        self._outgoing.put(classifier_pb2.ClassifyRequest(images=images, request_id=request_id))

    def done_sending(self):
        """Half-close the call: the server ends it once every request sent is answered."""
        self._outgoing.put(None)

    def wait_closed(self, timeout_s=60):
        """Wait until the call has ended; its error (None when it ended OK)."""
        self._reader.join(timeout_s)
        assert not self._reader.is_alive(), "the stream did not end"
        self.channel.close()
        return self.ending

    def _read(self):
        try:
            for response in self.call:
                self.responses.append(response)
        except grpc.RpcError as error:
            self.ending = error


@pytest.fixture(scope="module")
def images(fmnist_images):
    return list(fmnist_images.values())[:8]


def test_a_stream_answers_each_request_as_a_unary_call_would_and_goes_on_after_a_bad_one(mslite_server, images):
    with grpc.insecure_channel(mslite_server.address) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        unary = [stub.Classify(classifier_pb2.ClassifyRequest(images=[image], top_k=3), timeout=60)
                 for image in images]
        requests = [classifier_pb2.ClassifyRequest(images=[image], top_k=3, request_id=f"r{index}")
                    for index, image in enumerate(images)]
        requests.insert(3, classifier_pb2.ClassifyRequest(images=[b"no image"], request_id="bad"))
        requests.insert(5, classifier_pb2.ClassifyRequest(request_id="empty"))
        ok = mslite_server.metric("genet_requests_total", method="ClassifyStream", code="OK")
        responses = {response.request_id: response for response in stub.ClassifyStream(iter(requests), timeout=60)}
    assert sorted(responses) == sorted(request.request_id for request in requests)
    for index, expected in enumerate(unary):
        answer = responses[f"r{index}"]
        assert answer.WhichOneof("outcome") == "response" and answer.response.request_id == f"r{index}"
        assert [(p.class_id, p.label) for p in answer.response.results[0].predictions] == \
            [(p.class_id, p.label) for p in expected.results[0].predictions]
        np.testing.assert_allclose([p.score for p in answer.response.results[0].predictions],
                                   [p.score for p in expected.results[0].predictions], rtol=1e-5, atol=1e-6)
    assert responses["bad"].error.code == INVALID_ARGUMENT and responses["bad"].error.message.startswith("image 0: ")
    assert responses["empty"].error.code == INVALID_ARGUMENT and "no images" in responses["empty"].error.message
    assert mslite_server.metric("genet_requests_total", method="ClassifyStream", code="OK") == ok + len(images)


def test_the_requests_of_one_stream_are_batched_together(mslite_server, images):
    batches = mslite_server.metric("genet_batch_size_count")
    batched = mslite_server.metric("genet_batch_size_sum")
    results = queue.Queue()
    with StreamingClassifierClient(mslite_server.address) as client:
        for index in range(48):
            client.async_classify(make_request([images[index % len(images)]]), lambda *outcome: results.put(outcome))
        outcomes = [results.get(timeout=60) for _ in range(48)]
    assert all(error is None and len(result.predictions) == 1 for result, error in outcomes)
    images_computed = mslite_server.metric("genet_batch_size_sum") - batched
    assert images_computed == 48
    assert images_computed / (mslite_server.metric("genet_batch_size_count") - batches) > 1.5


def test_a_stream_stops_reading_at_the_queue_size_instead_of_overflowing_it(start_lite_server, images):
    """With its worker stopped, a stream of 10 two-image requests holds --max-queue-size (4) images of them;
    none is refused as queue full, and all are answered once the worker resumes."""
    server = start_lite_server("--max-queue-size", "4", "--max-images-per-request", "4", "--max-batch-size", "1")
    (worker,) = worker_pids(server)
    os.kill(worker, signal.SIGSTOP)
    stream = OpenStream(server.address)
    try:
        for index in range(10):
            stream.send([images[index % len(images)], images[(index + 1) % len(images)]], str(index))
        wait_until(lambda: server.metric("genet_queue_depth_images") == 4, what="a full queue")
        time.sleep(0.5)
        assert server.metric("genet_requests_in_progress", method="ClassifyStream") == 2
    finally:
        os.kill(worker, signal.SIGCONT)
    stream.done_sending()
    assert stream.wait_closed() is None
    assert sorted(int(response.request_id) for response in stream.responses) == list(range(10))
    assert all(len(response.response.results) == 2 for response in stream.responses)


def test_cancelling_a_stream_drops_its_queued_requests(start_lite_server, images):
    server = start_lite_server("--max-batch-size", "1")
    (worker,) = worker_pids(server)
    os.kill(worker, signal.SIGSTOP)
    stream = OpenStream(server.address)
    try:
        stream.send([images[0]], "computing")
        stream.send([images[1]], "queued")
        wait_until(lambda: server.metric("genet_queue_depth_images") == 2, what="two requests admitted")
        stream.call.cancel()
        assert stream.wait_closed().code() == grpc.StatusCode.CANCELLED
    finally:
        os.kill(worker, signal.SIGCONT)
    wait_until(lambda: server.metric("genet_dropped_images_total", reason="cancelled") == 1, what="the drop")
    wait_until(lambda: server.metric("genet_requests_total", method="ClassifyStream", code="CANCELLED") == 2,
               what="both requests counted as cancelled")
    with StreamingClassifierClient(server.address) as client:
        assert len(client.classify([images[2]]).predictions) == 1


def test_shutdown_answers_what_a_stream_sent_then_ends_it_as_unavailable_without_waiting_for_the_grace_period(
        start_lite_server, images):
    """An open stream does not hold the shutdown for the grace period: its request in flight is answered,
    then the stream ends with UNAVAILABLE, and the server exits long before the 60 s grace period."""
    server = start_lite_server("--grace-period-s", "60")
    (worker,) = worker_pids(server)
    stream = OpenStream(server.address)
    stream.send([images[0]], "before")
    wait_until(lambda: len(stream.responses) == 1, what="the first answer")
    os.kill(worker, signal.SIGSTOP)
    try:
        stream.send([images[1]], "in flight")
        wait_until(lambda: server.metric("genet_queue_depth_images") == 1, what="the request admitted")
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: "shutting down: finishing" in server.log(), what="the drain")
    finally:
        os.kill(worker, signal.SIGCONT)
    ending = stream.wait_closed()
    assert ending.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in ending.details()
    assert [response.request_id for response in stream.responses] == ["before", "in flight"]
    assert stream.responses[1].WhichOneof("outcome") == "response"
    assert server.process.wait(30) == 0
    assert time.monotonic() - started < 30


def test_the_stream_clients_classify_gives_up_after_its_timeout(start_lite_server, images):
    server = start_lite_server()
    (worker,) = worker_pids(server)
    with StreamingClassifierClient(server.address) as client:
        os.kill(worker, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(ClientError) as late:
                client.classify([images[0]], timeout_s=1.0)
            assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() - started < 10
        finally:
            os.kill(worker, signal.SIGCONT)
        assert len(client.classify([images[1]]).predictions) == 1  # the stream goes on


def test_the_stream_client_fails_unanswered_requests_with_the_streams_end_and_opens_a_new_stream(
        start_lite_server, images):
    server = start_lite_server("--grace-period-s", "60")
    (worker,) = worker_pids(server)
    client = StreamingClassifierClient(server.address)
    assert len(client.classify([images[0]]).predictions) == 1
    os.kill(worker, signal.SIGSTOP)
    outcomes = queue.Queue()
    try:
        client.async_classify(make_request([images[1]]), lambda *outcome: outcomes.put(outcome))
        wait_until(lambda: server.metric("genet_queue_depth_images") == 1, what="the request admitted")
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: server.metric("genet_model_ready") == 0, what="the drain")  # set as the streams stop reading
        for _ in range(3):  # sent during the drain: never read, answered by the stream's end
            client.async_classify(make_request([images[2]]), lambda *outcome: outcomes.put(outcome))
    finally:
        os.kill(worker, signal.SIGCONT)
    results = [outcomes.get(timeout=60) for _ in range(4)]
    assert results[0][1] is None
    for result, error in results[1:]:
        assert result is None and error.code == grpc.StatusCode.UNAVAILABLE and "shutting down" in error.details
    assert server.process.wait(30) == 0
    with pytest.raises(ClientError) as refused:  # a new stream, to a server that is gone
        client.classify([images[0]])
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    client.close()
