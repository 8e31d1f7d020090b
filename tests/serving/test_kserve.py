"""KServe v2 (Open Inference Protocol) over gRPC and HTTP on real Lite servers: stock tritonclient, raw HTTP
with JSON tensors, error statuses, tokens, and batching shared with genet.v1."""
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import requests

from clients.benchmark.servers import REPO_ROOT
from genet.v1 import classifier_pb2, classifier_pb2_grpc
from inference import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc
from modelrepo.manifest import read_manifest
from serving.preprocessing import Preprocessor
from tests.serving.conftest import MODEL_NAME

TRITON_PYTHON = REPO_ROOT / ".venv-triton" / "bin" / "python"
SCORE_TOLERANCE = 1e-6
TOKEN = "kserve-token-5e1d"


@pytest.fixture(scope="module")
def server(start_module_server):
    """A Lite server with the HTTP port on; a longer batch delay so that concurrent requests merge."""
    return start_module_server("--http-port", "0", "--max-queue-delay-ms", "50")


@pytest.fixture(scope="module")
def start_module_server(model_repository, tmp_path_factory):
    """Start dedicated Lite servers for this module; each must have exited 0 at the end."""
    from tests.serving.conftest import start_server
    started = []

    def start(*args):
        started.append(start_server("mslite", model_repository, tmp_path_factory.mktemp("logs"), list(args)))
        return started[-1]

    yield start
    for process in started:
        assert process.stop() == 0, process.log()


@pytest.fixture(scope="module")
def images(photos):
    """Four real photographs (one request: one batch, as in genet.v1's reference call)."""
    return list(photos.values())[:4]


@pytest.fixture(scope="module")
def pixels(images, version_dir):
    """The images preprocessed by the client itself, with the manifest's eval transform."""
    manifest = read_manifest(version_dir)
    preprocess = Preprocessor(manifest.preprocessing, 40_000_000)
    return np.stack([preprocess(image) for image in images])


@pytest.fixture(scope="module")
def genet_scores(server, images):
    """genet.v1 Classify's dense probabilities and ranking of `images`, in one request."""
    with grpc.insecure_channel(server.address) as channel:
        response = classifier_pb2_grpc.ClassifierStub(channel).Classify(
            classifier_pb2.ClassifyRequest(images=images, top_k=1000), timeout=60)
    dense = np.array([[p.score for p in sorted(r.predictions, key=lambda p: p.class_id)] for r in response.results])
    ranking = [[(p.class_id, p.label) for p in r.predictions] for r in response.results]
    return dense, ranking


def kserve_stub(server):
    channel = grpc.insecure_channel(server.address)
    return channel, grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)


def infer_url(server, version=""):
    return f"{server.http_url}/v2/models/{MODEL_NAME}{'/versions/' + version if version else ''}/infer"


def pixels_json(pixels, name="pixels", datatype="FP32"):
    return {"name": name, "datatype": datatype, "shape": list(pixels.shape), "data": pixels.reshape(-1).tolist()}


# ---- tritonclient, unmodified ----

@pytest.mark.skipif(not TRITON_PYTHON.exists(), reason=".venv-triton is missing: `make test` builds it (tritonclient)")
def test_tritonclient_grpc_and_http_give_genet_v1_results(server, images, pixels, genet_scores, tmp_path, version_dir):
    paths = []
    for index, image in enumerate(images):
        paths.append(tmp_path / f"image{index}")
        paths[-1].write_bytes(image)
    np.save(str(tmp_path / "pixels.npy"), pixels)
    completed = subprocess.run([str(TRITON_PYTHON), "tests/serving/triton_check.py", server.address,
                                server.http_url.split("://")[1], str(tmp_path / "pixels.npy"), *map(str, paths)],
                               cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    seen = json.loads(completed.stdout)
    dense, ranking = genet_scores
    classes = dense.shape[1]
    for flavour in ("grpc", "http"):
        result = seen[flavour]
        assert result["live"] and result["ready"] and result["model_ready"], flavour
        metadata = result["metadata"]
        assert metadata["name"] == MODEL_NAME and metadata["versions"] == [version_dir.name]
        tensors = {(t["name"], t["datatype"], tuple(int(d) for d in t["shape"]))
                   for t in metadata["inputs"] + metadata["outputs"]}
        assert tensors == {("images", "BYTES", (-1,)), ("pixels", "FP32", (-1,) + pixels.shape[1:]),
                           ("probabilities", "FP32", (-1, classes))}
        assert result["model_version"] == version_dir.name
        assert result["expired"][0] == {"grpc": "StatusCode.DEADLINE_EXCEEDED", "http": "504"}[flavour]
        assert "deadline exceeded" in result["expired"][1], flavour
        np.testing.assert_allclose(result["probabilities"], dense, rtol=0, atol=SCORE_TOLERANCE, err_msg=flavour)
        np.testing.assert_allclose(result["pixel_probabilities"], dense, rtol=0, atol=SCORE_TOLERANCE, err_msg=flavour)
        for strings, genet_ranking, genet_dense in zip(result["classification"], ranking, dense):
            parsed = [item.split(":", 2) for item in strings]
            assert [(int(index), label) for _, index, label in parsed] == genet_ranking, flavour
            np.testing.assert_allclose([float(score) for score, _, _ in parsed],
                                       [genet_dense[index] for index, _ in genet_ranking], rtol=0,
                                       atol=SCORE_TOLERANCE)
    streamed = seen["stream"]
    assert sorted(streamed["probabilities"]) == sorted(str(index) for index in range(len(images)))
    for index, row in enumerate(dense):
        np.testing.assert_allclose(streamed["probabilities"][str(index)], [row], rtol=0, atol=SCORE_TOLERANCE)
    assert len(streamed["errors"]) == 1 and streamed["errors"][0].startswith("INVALID_ARGUMENT: image 0: ")


# ---- gRPC with typed contents ----

def test_grpc_typed_contents_in_typed_contents_out(server, images, pixels, genet_scores):
    dense, _ = genet_scores
    channel, stub = kserve_stub(server)
    with channel:
        encoded = stub.ModelInfer(pb.ModelInferRequest(model_name=MODEL_NAME, inputs=[pb.ModelInferRequest.InferInputTensor(
            name="images", datatype="BYTES", shape=[len(images)], contents=pb.InferTensorContents(bytes_contents=images))]),
            timeout=60)
        tensor = stub.ModelInfer(pb.ModelInferRequest(model_name=MODEL_NAME, inputs=[pb.ModelInferRequest.InferInputTensor(
            name="pixels", datatype="FP32", shape=list(pixels.shape),
            contents=pb.InferTensorContents(fp32_contents=pixels.reshape(-1).tolist()))]), timeout=60)
    for response in (encoded, tensor):
        assert not response.raw_output_contents
        (output,) = response.outputs
        assert (output.name, output.datatype, list(output.shape)) == ("probabilities", "FP32", list(dense.shape))
        np.testing.assert_allclose(np.reshape(output.contents.fp32_contents, dense.shape), dense, rtol=0,
                                   atol=SCORE_TOLERANCE)


@pytest.mark.parametrize("inputs, code, message", [
    ([], "INVALID_ARGUMENT", "exactly one input"),
    ([("images", "BYTES", [1]), ("pixels", "FP32", [1, 3, 32, 32])], "INVALID_ARGUMENT", "exactly one input"),
    ([("images", "FP32", [1])], "INVALID_ARGUMENT", "must be BYTES"),
    ([("pixels", "FP32", [1, 3, 8, 8])], "INVALID_ARGUMENT", "must have shape"),
])
def test_grpc_bad_inputs_are_invalid_argument(server, images, inputs, code, message):
    raw = {"BYTES": b"\x03\x00\x00\x00abc"}
    request = pb.ModelInferRequest(model_name=MODEL_NAME)
    for name, datatype, shape in inputs:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        size = int(np.prod(shape))
        request.raw_input_contents.append(raw["BYTES"] if datatype == "BYTES" else bytes(4 * size))
    channel, stub = kserve_stub(server)
    with channel, pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(request, timeout=30)
    assert error.value.code() == getattr(grpc.StatusCode, code) and message in error.value.details()


@pytest.mark.parametrize("parameter, code, message", [
    ({"int64_param": 1}, "DEADLINE_EXCEEDED", "deadline exceeded"),
    ({"int64_param": -1}, "INVALID_ARGUMENT", "'timeout' must be a non-negative integer"),
    ({"string_param": "1"}, "INVALID_ARGUMENT", "'timeout' must be a non-negative integer"),
])
def test_grpc_timeout_parameter_is_a_deadline(server, images, parameter, code, message):
    """Triton's `timeout` (microseconds) wins over a later call deadline; bad values are refused."""
    request = pb.ModelInferRequest(model_name=MODEL_NAME, raw_input_contents=[
        len(images[0]).to_bytes(4, "little") + images[0]])
    request.inputs.add(name="images", datatype="BYTES", shape=[1])
    request.parameters["timeout"].MergeFrom(pb.InferParameter(**parameter))
    channel, stub = kserve_stub(server)
    with channel, pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(request, timeout=60)
    assert error.value.code() == getattr(grpc.StatusCode, code) and message in error.value.details()


def test_grpc_unknown_model_and_version_are_not_found(server):
    channel, stub = kserve_stub(server)
    with channel:
        for name, version in (("other", ""), (MODEL_NAME, "99")):
            with pytest.raises(grpc.RpcError) as error:
                stub.ModelMetadata(pb.ModelMetadataRequest(name=name, version=version), timeout=10)
            assert error.value.code() == grpc.StatusCode.NOT_FOUND
        assert stub.ModelReady(pb.ModelReadyRequest(name=MODEL_NAME), timeout=10).ready


# ---- HTTP with JSON tensors and errors ----

def test_http_json_tensors(server, pixels, genet_scores):
    dense, ranking = genet_scores
    body = {"id": "r1", "inputs": [pixels_json(pixels)],
            "outputs": [{"name": "probabilities"}, {"name": "probabilities", "parameters": {"classification": 2}}]}
    response = requests.post(infer_url(server), json=body, timeout=60)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["id"] == "r1" and result["model_name"] == MODEL_NAME
    plain, ranked = result["outputs"]
    assert plain["datatype"] == "FP32" and plain["shape"] == list(dense.shape)
    np.testing.assert_allclose(np.reshape(plain["data"], dense.shape), dense, rtol=0, atol=SCORE_TOLERANCE)
    assert ranked["datatype"] == "BYTES" and ranked["shape"] == [len(dense), 2]
    assert [int(item.split(":")[1]) for item in ranked["data"]] == [c for row in ranking for c, _ in row[:2]]


def test_http_health_metadata_and_classify_route(server, images, genet_scores):
    _, ranking = genet_scores
    assert requests.get(server.http_url + "/v2/health/live", timeout=10).status_code == 200
    assert requests.get(server.http_url + "/v2/health/ready", timeout=10).status_code == 200
    assert requests.get(server.http_url + f"/v2/models/{MODEL_NAME}/ready", timeout=10).status_code == 200
    assert "classification" in requests.get(server.http_url + "/v2", timeout=10).json()["extensions"]
    response = requests.post(server.http_url + f"/v2/models/{MODEL_NAME}/classify?top_k=3", data=images[0],
                             timeout=60)
    assert response.status_code == 200, response.text
    assert [(p["class_id"], p["label"]) for p in response.json()["predictions"]] == ranking[0][:3]


def bad_requests(pixels):
    """(what, method, path under the model, body or JSON, headers, status, words of the error)."""
    good = pixels_json(pixels[:1])
    header = json.dumps({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                                     "parameters": {"binary_data_size": 99}}]}).encode()
    return [
        ("malformed JSON", "infer", b'{"inputs": [', {}, 400, "not valid JSON"),
        ("not an object", "infer", b"[1, 2]", {}, 400, "JSON object"),
        ("wrong dtype", "infer", {"inputs": [pixels_json(pixels[:1].astype(np.float64), datatype="FP64")]}, {}, 400,
         "must be FP32"),
        ("wrong shape", "infer", {"inputs": [dict(good, shape=[1, 3, 16, 64])]}, {}, 400, "must have shape"),
        ("too few values", "infer", {"inputs": [dict(good, data=good["data"][:-1])]}, {}, 400, "do not fill"),
        ("NaN", "infer", {"inputs": [dict(good, data=[float("nan")] * len(good["data"]))]}, {}, 400, "NaN"),
        ("both inputs", "infer", {"inputs": [good, {"name": "images", "datatype": "BYTES", "shape": [1],
                                                    "data": ["x"]}]}, {}, 400, "exactly one input"),
        ("neither input", "infer", {"inputs": []}, {}, 400, "exactly one input"),
        ("not an image", "infer", {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                                               "data": ["plain text"]}]}, {}, 400, "image 0"),
        ("unknown output", "infer", {"inputs": [good], "outputs": [{"name": "logits"}]}, {}, 400, "unknown output"),
        ("bad class count", "infer", {"inputs": [good], "outputs": [{"name": "probabilities",
                                                                      "parameters": {"classification": -1}}]},
         {}, 400, "classification"),
        ("binary size beyond the body", "infer", header + b"\x05\x00\x00\x00ab",
         {"Inference-Header-Content-Length": str(len(header))}, 400, "binary_data_size"),
        ("bad timeout header", "infer", {"inputs": [good]}, {"Inference-Timeout-Ms": "soon"}, 400,
         "Inference-Timeout-Ms"),
        ("deadline", "infer", {"inputs": [good]}, {"Inference-Timeout-Ms": "0.001"}, 504, "deadline"),
        ("timeout parameter before the header's", "infer", {"inputs": [good], "parameters": {"timeout": 1}},
         {"Inference-Timeout-Ms": "60000"}, 504, "deadline"),
        ("header before the timeout parameter's", "infer", {"inputs": [good], "parameters": {"timeout": 60_000_000}},
         {"Inference-Timeout-Ms": "0.001"}, 504, "deadline"),
        ("negative timeout parameter", "infer", {"inputs": [good], "parameters": {"timeout": -5}}, {}, 400,
         "'timeout' must be a non-negative integer"),
        ("fractional timeout parameter", "infer", {"inputs": [good], "parameters": {"timeout": 2.5}}, {}, 400,
         "'timeout' must be a non-negative integer"),
        ("unknown version", "versions/99/infer", {"inputs": [good]}, {}, 404, "not loaded"),
        ("oversized body", "infer", b"{" + b" " * (3 * 1024 * 1024) + b"}", {}, 413, "body size"),
    ]


def test_http_errors_have_their_status_and_json_body_and_the_server_keeps_serving(server, pixels):
    for what, path, body, headers, status, words in bad_requests(pixels):
        url = f"{server.http_url}/v2/models/{MODEL_NAME}/{path}"
        data = body if isinstance(body, bytes) else json.dumps(body).encode()  # NaN as JSON's NaN literal
        response = requests.post(url, data=data, headers=headers, timeout=60)
        assert response.status_code == status, (what, response.text)
        assert words in response.json()["error"], (what, response.text)
    unknown = requests.get(server.http_url + "/v2/models/other", timeout=10)
    assert unknown.status_code == 404 and "unknown model" in unknown.json()["error"]
    assert requests.get(server.http_url + "/v2/nothing", timeout=10).status_code == 404
    assert server.metric("genet_requests_total", method="http.ModelInfer", code="INVALID_ARGUMENT") >= 12
    response = requests.post(infer_url(server), json={"inputs": [pixels_json(pixels)]}, timeout=60)
    assert response.status_code == 200


# ---- one data plane ----

def test_both_protocols_share_batches_without_changing_results(server, images, genet_scores):
    """One single-image request per protocol at once: batches with images of several protocols."""
    dense, _ = genet_scores
    channel, stub = kserve_stub(server)
    genet = classifier_pb2_grpc.ClassifierStub(channel)

    def via_genet(image):
        response = genet.Classify(classifier_pb2.ClassifyRequest(images=[image], top_k=1000), timeout=60)
        return [p.score for p in sorted(response.results[0].predictions, key=lambda p: p.class_id)]

    def via_grpc(image):
        request = pb.ModelInferRequest(model_name=MODEL_NAME, raw_input_contents=[
            len(image).to_bytes(4, "little") + image])
        request.inputs.add(name="images", datatype="BYTES", shape=[1])
        return np.frombuffer(stub.ModelInfer(request, timeout=60).raw_output_contents[0], "<f4").tolist()

    def via_http(image):
        header = json.dumps({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                                         "parameters": {"binary_data_size": len(image) + 4}}]}).encode()
        response = requests.post(infer_url(server), data=header + len(image).to_bytes(4, "little") + image,
                                 headers={"Inference-Header-Content-Length": str(len(header))}, timeout=60)
        return response.json()["outputs"][0]["data"]

    calls = (via_genet, via_grpc, via_http)
    merged = False
    with channel, ThreadPoolExecutor(len(calls)) as pool:
        for attempt in range(10):
            batches = server.metric("genet_batch_size_count")
            barrier = threading.Barrier(len(calls))

            def together(call):
                barrier.wait()
                return call(images[0])

            futures = [pool.submit(together, call) for call in calls]
            results = [future.result() for future in futures]
            for result in results:
                np.testing.assert_allclose(result, dense[0], rtol=0, atol=1e-5)
            if server.metric("genet_batch_size_count") - batches < len(calls):
                merged = True
                break
    assert merged, "requests of different protocols never shared a batch"
    for method in ("Classify", "ModelInfer", "http.ModelInfer"):
        assert server.metric("genet_requests_total", method=method, code="OK") > 0


# ---- tokens ----

@pytest.fixture(scope="module")
def token_server(start_module_server, tmp_path_factory):
    path = tmp_path_factory.mktemp("tokens") / "tokens.txt"
    path.write_text(TOKEN + "\n")
    return start_module_server("--http-port", "0", "--auth-token-file", str(path))


def test_http_and_grpc_v2_need_the_token_except_health(token_server, pixels):
    url = infer_url(token_server)
    body = {"inputs": [pixels_json(pixels[:1])]}
    missing = requests.post(url, json=body, timeout=30)
    assert missing.status_code == 401 and "bearer token" in missing.json()["error"]
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = requests.post(url, json=body, headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 403 and "not accepted" in wrong.json()["error"]
    assert requests.get(token_server.http_url + "/v2/models/" + MODEL_NAME, timeout=10).status_code == 401
    for open_path in ("/v2/health/live", "/v2/health/ready"):
        assert requests.get(token_server.http_url + open_path, timeout=10).status_code == 200
    ok = requests.post(url, json=body, headers={"Authorization": "Bearer " + TOKEN}, timeout=60)
    assert ok.status_code == 200, ok.text
    channel, stub = kserve_stub(token_server)
    with channel:
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        with pytest.raises(grpc.RpcError) as error:
            stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL_NAME), timeout=10)
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL_NAME), timeout=10,
                                      metadata=(("authorization", "Bearer " + TOKEN),))
        assert metadata.name == MODEL_NAME


# ---- the client library's protocols ----

def test_the_client_library_gives_the_same_results_over_every_protocol(server, images, genet_scores):
    from clients.kserve import PROTOCOLS, create_client
    _, ranking = genet_scores
    targets = {"genet": server.address, "genet-stream": server.address, "kserve-grpc": server.address,
               "kserve-http": server.http_url}
    for protocol in PROTOCOLS:
        with create_client(protocol, targets[protocol], model_name=MODEL_NAME, timeout_s=60) as client:
            result = client.classify(images, top_k=3)
        assert result.model_name == MODEL_NAME, protocol
        assert [[(p.class_id, p.label) for p in image] for image in result.predictions] == \
            [row[:3] for row in ranking], protocol


def test_benchmark_measures_the_three_protocols_side_by_side(server, images, tmp_path):
    from clients.benchmark.cli import main
    paths = []
    for index, image in enumerate(images[:2]):
        paths.append(str(tmp_path / f"image{index}.jpg"))
        (tmp_path / f"image{index}.jpg").write_bytes(image)
    status = main(["--target", server.address, "--http-target", server.http_url, "--label", "s",
                   "--protocol", "genet,kserve-grpc,kserve-http", "--concurrency", "2", "--warmup", "0.2",
                   "--duration", "1", "--images", *paths, "--no-offline", "--out", str(tmp_path / "out")])
    assert status == 0
    runs = json.loads((tmp_path / "out" / "benchmark.json").read_text())["runs"]
    assert [(run["server"], run["protocol"]) for run in runs] == [
        ("s genet", "genet"), ("s kserve-grpc", "kserve-grpc"), ("s kserve-http", "kserve-http")]
    assert all(run["throughput_ips"] > 0 and not run["errors"] for run in runs)


# ---- the browser page ----

def test_the_browser_page_shows_genet_v1_top1(server, tmp_path):
    from clients import browser
    reason = browser.missing()
    if reason:
        pytest.skip(reason)
    photos = sorted((REPO_ROOT / "data" / "photos").glob("*.jpg"))[:2]
    if not photos:
        pytest.skip("no data/photos (make data)")
    with grpc.insecure_channel(server.address) as channel:
        response = classifier_pb2_grpc.ClassifierStub(channel).Classify(
            classifier_pb2.ClassifyRequest(images=[p.read_bytes() for p in photos], top_k=5), timeout=60)
    driver = browser.open_browser()
    try:
        shown = browser.classify_on_page(driver, server.http_url, photos)
        driver.save_screenshot(str(tmp_path / "page.png"))
        model = driver.find_element("id", "model-name").text
        backend = driver.find_element("id", "backend").text
    finally:
        driver.quit()
    assert (model, backend) == (MODEL_NAME, "mindspore_lite")
    assert [labels for labels in shown] == [[p.label for p in r.predictions] for r in response.results]
    assert (tmp_path / "page.png").stat().st_size > 0


# ---- TLS ----

def test_https_with_the_grpc_certificates_and_client_ca(pki, model_repository, tmp_path):
    from tests.serving.tls_testing import client_credentials, have_openssl, start_tls_server
    if not have_openssl():
        pytest.skip("needs the openssl command")
    server = start_tls_server(model_repository, tmp_path, client_credentials(pki, pki.client_cert, pki.client_key),
                              "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
                              "--tls-client-ca", str(pki.ca), "--http-port", "0")
    try:
        assert server.http_url.startswith("https://")
        ready = server.http_url + f"/v2/models/{MODEL_NAME}/ready"
        client = (str(pki.client_cert), str(pki.client_key))
        assert requests.get(ready, verify=str(pki.ca), cert=client, timeout=10).status_code == 200
        with pytest.raises(requests.exceptions.ConnectionError):  # TLS 1.3: refused after the handshake
            requests.get(ready, verify=str(pki.ca), timeout=10)  # no client certificate
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(ready, verify=str(pki.rogue_ca), cert=client, timeout=10)  # a server it does not trust
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(server.http_url.replace("https://", "http://") + "/v2/health/live", timeout=10)
    finally:
        assert server.stop() == 0, server.log()


def test_plaintext_http_beyond_loopback_needs_allow_insecure(model_repository):
    completed = subprocess.run([sys.executable, "-m", "serving", "--model-repository", str(model_repository),
                                "--port", "0", "--http-port", "0", "--http-host", "0.0.0.0"],
                               cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2 and "--http-host 0.0.0.0 is reachable" in completed.stderr, completed.stderr
