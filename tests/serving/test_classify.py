"""The core suite, against each backend's real server: results, batching, metadata, health, reflection."""
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import onnxruntime
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from genet.v1 import classifier_pb2
from training.presets import EvalPreset

SCORE_TOLERANCE = 1e-4  # probabilities: runtimes differ by ~3e-5 in logits (export verification)
BATCH_MATE_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def offline(version_dir):
    """Training's eval pipeline + the exported ONNX model: image bytes -> class probabilities."""
    preset = EvalPreset(image_size=32)
    session = onnxruntime.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])

    def probabilities(images):
        """Softmax of the ONNX logits of EvalPreset(image) for every image."""
        batch = np.stack([preset(data) for data in images])
        logits = session.run(None, {session.get_inputs()[0].name: batch})[0].astype(np.float64)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    return probabilities


def scores(result, num_classes):
    """A dense probability vector from one ImageResult."""
    dense = np.full(num_classes, np.nan)
    for prediction in result.predictions:
        dense[prediction.class_id] = prediction.score
    return dense


@pytest.mark.parametrize("image_set", ["photos", "fmnist_images"])
def test_scores_match_the_offline_eval_pipeline(stub, offline, request, image_set, version_dir):
    images = list(request.getfixturevalue(image_set).values())
    labels = (version_dir / "labels.txt").read_text().split()
    response = stub.Classify(classifier_pb2.ClassifyRequest(images=images, top_k=len(labels)), timeout=60)
    assert response.model_name == "genet_res50" and response.model_version == version_dir.name
    assert len(response.results) == len(images)
    served = np.stack([scores(result, len(labels)) for result in response.results])
    np.testing.assert_allclose(served, offline(images), rtol=0, atol=SCORE_TOLERANCE)
    for result in response.results:
        ranked = [p.score for p in result.predictions]
        assert ranked == sorted(ranked, reverse=True)
        assert all(p.label == labels[p.class_id] for p in result.predictions)


def test_top_k_defaults_to_five_and_is_clamped_to_the_class_count(stub, photos):
    image = next(iter(photos.values()))
    default = stub.Classify(classifier_pb2.ClassifyRequest(images=[image]), timeout=30)
    huge = stub.Classify(classifier_pb2.ClassifyRequest(images=[image], top_k=4_000_000_000), timeout=30)
    assert len(default.results[0].predictions) == 5
    assert len(huge.results[0].predictions) == 10
    assert [p.class_id for p in huge.results[0].predictions[:5]] == [p.class_id for p in default.results[0].predictions]


def test_concurrent_clients_are_batched_without_changing_results(server, stub, photos, fmnist_images):
    images = (list(photos.values()) + list(fmnist_images.values()))[:24]
    alone = [stub.Classify(classifier_pb2.ClassifyRequest(images=[image], top_k=10), timeout=30) for image in images]
    batches_before = server.metric("genet_batch_size_count")
    singles_before = server.metric("genet_batch_size_bucket", le="1.0")
    futures = [stub.Classify.future(classifier_pb2.ClassifyRequest(images=[image], top_k=10), timeout=60)
               for image in images]
    together = [future.result() for future in futures]
    batches = server.metric("genet_batch_size_count") - batches_before
    singles = server.metric("genet_batch_size_bucket", le="1.0") - singles_before
    assert batches - singles > 0, "no batch held more than one image"
    for first, second in zip(alone, together):
        np.testing.assert_allclose(scores(second.results[0], 10), scores(first.results[0], 10),
                                   rtol=0, atol=BATCH_MATE_TOLERANCE)


def test_many_threads_each_get_their_own_answer(stub, photos):
    named = list(photos.items())

    def classify(item):
        """(name, top-1 class) for one (name, bytes) item."""
        response = stub.Classify(classifier_pb2.ClassifyRequest(images=[item[1]], top_k=1), timeout=60)
        return item[0], response.results[0].predictions[0].class_id

    expected = dict(classify(item) for item in named)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(classify, named * 4))
    assert all(expected[name] == class_id for name, class_id in answers)


def test_model_info_describes_the_served_model(server, stub, version_dir):
    info = stub.GetModelInfo(classifier_pb2.GetModelInfoRequest(), timeout=10)
    expected = ("genet_res50", version_dir.name, server.arg("--backend"), "cpu")
    assert (info.name, info.version, info.backend, info.device) == expected
    assert info.num_classes == 10 and list(info.labels) == (version_dir / "labels.txt").read_text().split()
    assert list(info.input.shape) == [-1, 3, 32, 32] and info.input.layout == "NCHW"
    assert (info.preprocessing.resize_size, info.preprocessing.crop_size) == (37, 32)
    assert info.batching.max_batch_size == 8 and info.limits.max_message_bytes == 2 * 1024 * 1024
    assert list(info.available_versions) == [version_dir.name]
    assert info.model_sha256 and info.runtime_version


def test_health_reports_serving_overall_and_per_service(server):
    assert server.health("") == health_pb2.HealthCheckResponse.SERVING
    assert server.health("genet.v1.Classifier") == health_pb2.HealthCheckResponse.SERVING
    assert server.health_seen[-1] == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as caught:
        server.health("genet.v1.NoSuchService")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services_and_serves_the_contract(server):
    with grpc.insecure_channel(server.address) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol="genet.v1.Classifier")]
        listed, contract = list(reflection.ServerReflectionInfo(iter(requests), timeout=10))
    services = {service.name for service in listed.list_services_response.service}
    assert {"genet.v1.Classifier", "grpc.health.v1.Health"} <= services
    assert contract.file_descriptor_response.file_descriptor_proto
