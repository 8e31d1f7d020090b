"""KServe v2 clients with ClassifierClient's classify interface: the same images and results over
`inference.GRPCInferenceService` (kserve-grpc) or HTTP/REST (kserve-http).

Images go as the BYTES input `images` (raw form on gRPC, the binary tensor data extension on HTTP);
the top-k come back through the classification extension ("score:index:label"). Neither client
retries: the benchmark's calls are single attempts anyway (`ClassifierClient.async_classify`).

    with create_client("kserve-http", "127.0.0.1:8000", model_name="genet_res50") as client:
        result = client.classify(["cat.jpg"], top_k=3)
"""
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote

import grpc
import requests

from clients.channel import TlsConfig, create_channel
from clients.client import (CallbackClient, ClassifierClient, ClassifyResult, ClientError, Prediction,
                            ResultCallback, deliver_result, bearer_metadata)
from clients.streaming import StreamingClassifierClient
from genet.v1 import classifier_pb2
from inference import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc
from kserve_bytes import join_bytes, split_bytes

PROTOCOLS = ("genet", "genet-stream", "kserve-grpc", "kserve-http")
OUTPUT = "probabilities"
# HTTP status -> the gRPC code the server maps to it (docs/kserve.md).
HTTP_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
              403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
              413: grpc.StatusCode.RESOURCE_EXHAUSTED, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
              500: grpc.StatusCode.INTERNAL, 503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED}


def create_client(protocol: str, target: str, *, model_name: str = "", timeout_s: float = 10.0,
                  tls: Optional[TlsConfig] = None, token: Optional[str] = None, **genet_options):
    """A client speaking `protocol` (one of PROTOCOLS) to `target` (host:port; the HTTP port for kserve-http)."""
    if protocol == "genet":
        return ClassifierClient(target, timeout_s=timeout_s, tls=tls, token=token, **genet_options)
    if protocol == "genet-stream":
        return StreamingClassifierClient(target, timeout_s=timeout_s, tls=tls, token=token)
    if protocol == "kserve-grpc":
        return KServeGrpcClient(target, model_name, timeout_s=timeout_s, tls=tls, token=token)
    if protocol == "kserve-http":
        return KServeHttpClient(target, model_name, timeout_s=timeout_s, tls=tls, token=token)
    raise ValueError(f"unknown protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")


class KServeGrpcClient(CallbackClient):
    """KServe v2 over gRPC."""

    def __init__(self, target: str, model_name: str, *, timeout_s: float = 10.0, tls: Optional[TlsConfig] = None,
                 token: Optional[str] = None) -> None:
        super().__init__(timeout_s)
        self.model_name = model_name
        self._channel = create_channel(target, tls, ())
        self._stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self._metadata = bearer_metadata(token)

    def close(self) -> None:
        self._channel.close()

    def async_classify(self, request: classifier_pb2.ClassifyRequest, callback: ResultCallback,
                       timeout_s: Optional[float] = None) -> None:
        """Start one ModelInfer call; callback(result, error) runs on a gRPC thread."""
        future = self._stub.ModelInfer.future(infer_request(request, self.model_name),
                                              timeout=timeout_s or self._timeout_s, metadata=self._metadata)
        future.add_done_callback(lambda done: deliver_result(done, callback, _v2_result))


class KServeHttpClient(CallbackClient):
    """KServe v2 over HTTP/REST (requests, in a thread pool: one keep-alive session per thread)."""

    def __init__(self, target: str, model_name: str, *, timeout_s: float = 10.0, tls: Optional[TlsConfig] = None,
                 token: Optional[str] = None, max_in_flight: int = 64) -> None:
        super().__init__(timeout_s)
        self.model_name = model_name
        scheme = "https" if tls is not None else "http"
        self.url = target if "://" in target else f"{scheme}://{target}"
        self._verify = str(tls.root_ca) if tls is not None and tls.root_ca else tls is not None
        self._cert = (str(tls.cert), str(tls.key)) if tls is not None and tls.cert else None
        metadata = bearer_metadata(token)
        self._headers = {"Authorization": metadata[0][1]} if metadata else {}
        self._pool = ThreadPoolExecutor(max_in_flight, thread_name_prefix="kserve-http")
        self._local = threading.local()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def async_classify(self, request: classifier_pb2.ClassifyRequest, callback: ResultCallback,
                       timeout_s: Optional[float] = None) -> None:
        """Send one infer request from the pool; callback(result, error) runs on a pool thread."""
        self._pool.submit(self._call, request, callback, timeout_s or self._timeout_s)

    def _call(self, request: classifier_pb2.ClassifyRequest, callback: ResultCallback, timeout_s: float) -> None:
        try:
            result = self._infer(request, timeout_s)
        except ClientError as error:
            callback(None, error)
        else:
            callback(result, None)

    def _infer(self, request: classifier_pb2.ClassifyRequest, timeout_s: float) -> ClassifyResult:
        path, headers, body = http_infer_request(request, self.model_name, timeout_s)
        try:
            response = self._session().post(f"{self.url}{path}", data=body, headers=dict(self._headers, **headers),
                                            timeout=timeout_s, verify=self._verify, cert=self._cert)
        except requests.Timeout:
            raise ClientError(grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer within {timeout_s} s") from None
        except requests.RequestException as error:
            raise ClientError(grpc.StatusCode.UNAVAILABLE, str(error)) from None
        if response.status_code != 200:
            raise ClientError(HTTP_CODES.get(response.status_code, grpc.StatusCode.UNKNOWN), _error_text(response))
        body = response.json()
        (output,) = body["outputs"]
        rows = _rows([item.encode() for item in output["data"]], output["shape"])
        return ClassifyResult(rows, body["model_name"], body["model_version"])

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session


def infer_request(request: classifier_pb2.ClassifyRequest, model_name: str) -> pb.ModelInferRequest:
    """The ModelInferRequest asking `model_name` for the top-k of `request`'s images (raw BYTES input)."""
    infer = pb.ModelInferRequest(model_name=model_name, model_version=request.model_version,
                                 raw_input_contents=[join_bytes(request.images)])
    infer.inputs.add(name="images", datatype="BYTES", shape=[len(request.images)])
    infer.outputs.add(name=OUTPUT).parameters["classification"].int64_param = request.top_k or 5
    return infer


def http_infer_request(request: classifier_pb2.ClassifyRequest, model_name: str,
                       timeout_s: float) -> Tuple[str, Dict[str, str], bytes]:
    """(path, headers, body) of the HTTP infer call for `request`: the binary tensor data extension."""
    raw = join_bytes(request.images)
    header = json.dumps({
        "inputs": [{"name": "images", "datatype": "BYTES", "shape": [len(request.images)],
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": OUTPUT, "parameters": {"classification": request.top_k or 5}}]}).encode()
    version = f"/versions/{quote(request.model_version, safe='')}" if request.model_version else ""
    headers = {"Inference-Header-Content-Length": str(len(header)), "Inference-Timeout-Ms": str(int(timeout_s * 1000)),
               "Content-Type": "application/octet-stream"}
    return f"/v2/models/{model_name}{version}/infer", headers, header + raw


def _v2_result(response) -> ClassifyResult:
    """A ModelInfer response (classification output, raw form) as a ClassifyResult."""
    output = response.outputs[0]
    return ClassifyResult(_rows(split_bytes(response.raw_output_contents[0]), output.shape),
                          response.model_name, response.model_version)


def _rows(items: Sequence[bytes], shape: Sequence[int]) -> List[List[Prediction]]:
    """[N, k] classification strings "score:index:label" -> predictions per image."""
    predictions = [_prediction(item) for item in items]
    k = int(shape[1])
    return [predictions[row * k:(row + 1) * k] for row in range(int(shape[0]))]


def _prediction(item: bytes) -> Prediction:
    score, index, label = item.decode("utf-8").split(":", 2)
    return Prediction(int(index), label, float(score))


def _error_text(response: requests.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text[:200]
