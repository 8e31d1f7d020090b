"""The client library against real server processes: classify, deadlines, retries, token, round robin."""
from pathlib import Path

import grpc
import pytest

from clients.channel import join_targets
from clients.client import ClassifierClient, ClientError, RetryPolicy

FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05)


class CountingInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Records every attempt the client makes: method and metadata."""

    def __init__(self):
        self.calls = []

    def intercept_unary_unary(self, continuation, client_call_details, request):
        self.calls.append((client_call_details.method, tuple(client_call_details.metadata or ())))
        return continuation(client_call_details, request)


def test_classify_paths_and_bytes_with_labels_from_model_info(server, images):
    with ClassifierClient(server.address) as client:
        info = client.model_info()
        by_path = client.classify(images[:2], top_k=3)
        by_bytes = client.classify([Path(images[0]).read_bytes()], top_k=3)
    assert info.num_classes == len(info.labels) > 3
    assert (by_path.model_name, by_path.model_version) == (info.name, info.version)
    assert [len(ranked) for ranked in by_path.predictions] == [3, 3]
    for ranked in by_path.predictions:
        assert [p.score for p in ranked] == sorted((p.score for p in ranked), reverse=True)
        assert all(p.label == info.labels[p.class_id] for p in ranked)
    assert [p.class_id for p in by_bytes.predictions[0]] == [p.class_id for p in by_path.predictions[0]]
    assert by_bytes.predictions[0][0].score == pytest.approx(by_path.predictions[0][0].score, abs=1e-5)


def test_deadline_exceeded_raises_and_is_not_retried(server, images):
    counter = CountingInterceptor()
    with ClassifierClient(server.address, retry=FAST_RETRY, interceptors=[counter]) as client:
        with pytest.raises(ClientError) as caught:
            client.classify(images * 4, timeout_s=1e-4)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(counter.calls) == 1


def test_unavailable_is_retried_until_attempts_run_out(free_port):
    counter = CountingInterceptor()
    target = f"127.0.0.1:{free_port}"
    with ClassifierClient(target, retry=FAST_RETRY, interceptors=[counter], timeout_s=20) as client:
        with pytest.raises(ClientError) as caught:
            client.model_info()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert len(counter.calls) == FAST_RETRY.max_attempts
    assert caught.value.__suppress_context__  # raised "from None": one clean error, not a chain


def test_invalid_argument_is_not_retried_and_keeps_the_details(server, images):
    counter = CountingInterceptor()
    with ClassifierClient(server.address, retry=FAST_RETRY, interceptors=[counter]) as client:
        with pytest.raises(ClientError) as caught:
            client.classify([images[0], b"certainly not an image"])
        assert client.classify(images[:1]).predictions  # the server still serves
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details.startswith("image 1: not an image")  # names the bad image's index
    assert len(counter.calls) == 2


def test_token_travels_as_bearer_metadata_on_every_call(server, images):
    counter = CountingInterceptor()
    with ClassifierClient(server.address, token="s3cret", interceptors=[counter]) as client:
        client.model_info()
        client.classify(images[:1])
    assert [("authorization", "Bearer s3cret") in metadata for _, metadata in counter.calls] == [True, True]


def test_round_robin_spreads_calls_over_two_servers(server, second_server, images):
    servers = [server, second_server]
    before = [s.metric("genet_requests_total", method="Classify", code="OK") for s in servers]
    with ClassifierClient(join_targets([s.address for s in servers])) as client:
        for _ in range(20):
            client.classify(images[:1])
    served = [s.metric("genet_requests_total", method="Classify", code="OK") - b for s, b in zip(servers, before)]
    assert sum(served) == 20
    assert min(served) > 0, f"round_robin sent every call to one server: {served}"


def test_join_targets_keeps_one_target_and_resolves_several():
    assert join_targets(["dns:///example.org:443"]) == "dns:///example.org:443"
    assert join_targets(["127.0.0.1:1", "localhost:2"]) == "ipv4:127.0.0.1:1,127.0.0.1:2"
    with pytest.raises(ValueError):
        join_targets(["127.0.0.1:1", "no-port"])
