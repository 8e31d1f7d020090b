"""Client library for the genet.v1.Classifier service: a context manager over the generated stub.

    with ClassifierClient("127.0.0.1:8500") as client:
        info = client.model_info()
        result = client.classify(["cat.jpg"], top_k=3)
"""
import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import grpc

from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.channel import TlsConfig, create_channel
from genet.v1 import classifier_pb2, classifier_pb2_grpc

logger = logging.getLogger(__name__)

Image = Union[bytes, str, os.PathLike]
"""An encoded image (bytes) or the path of an image file."""


class ClientError(Exception):
    """A failed call, carrying its gRPC status code and the server's details."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> "ClientError":
        """The ClientError for a grpc.RpcError raised by a call."""
        return cls(error.code(), error.details() or "")


@dataclass(frozen=True)
class Prediction:
    """One ranked class of an image."""

    class_id: int
    label: str
    score: float


@dataclass(frozen=True)
class ClassifyResult:
    """The predictions for every image of a request, in request order, and the model that made them."""

    predictions: List[List[Prediction]]
    model_name: str
    model_version: str


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of calls that failed with UNAVAILABLE, with exponential backoff and full jitter."""

    max_attempts: int = 4
    """Attempts in all, the first included; 1 disables retries."""
    initial_backoff_s: float = 0.1
    """Upper bound of the pause before the second attempt."""
    max_backoff_s: float = 2.0
    """Upper bound of any pause."""
    multiplier: float = 2.0
    """Growth of the pause bound from one attempt to the next."""

    def backoff_s(self, attempt: int) -> float:
        """The pause after the given failed attempt (1-based)."""
        bound = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        return random.uniform(0.0, bound)


ResultCallback = Callable[[Optional[ClassifyResult], Optional[ClientError]], None]


class ClassifierClient:
    """A client of one server, or of several replicas with round_robin load balancing.

    target is a gRPC target ("host:port", "ipv4:ip1:p1,ip2:p2", "dns:///name:port"); see
    clients.channel.join_targets for several addresses. Every call carries a deadline
    (timeout_s unless given per call) and the bearer token, if any, as
    "authorization: Bearer <token>" metadata. Calls failing with UNAVAILABLE are retried
    within that deadline according to retry; any failure raises ClientError.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        tls: Optional[TlsConfig] = None,
        token: Optional[str] = None,
        options: Sequence[Tuple[str, object]] = (),
        interceptors: Sequence[grpc.UnaryUnaryClientInterceptor] = (),
    ):
        self.target = target
        self._timeout_s = timeout_s
        self._retry = retry
        self._metadata = bearer_metadata(token)
        self._channel = create_channel(target, tls, options)
        channel = grpc.intercept_channel(self._channel, *interceptors) if interceptors else self._channel
        self._stub = classifier_pb2_grpc.ClassifierStub(channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def __enter__(self) -> "ClassifierClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        self._channel.close()

    def wait_until_serving(self, timeout_s: float, poll_s: float = 0.5) -> None:
        """Block until the server's health reports SERVING for the Classifier service.

        For scripts that start a server and then use it: the port opens before the model is
        loaded and warmed. Raises ClientError(DEADLINE_EXCEEDED) if it is not SERVING in time.
        """
        deadline = time.monotonic() + timeout_s
        request = health_pb2.HealthCheckRequest(service=classifier_pb2.DESCRIPTOR.services_by_name["Classifier"].full_name)
        status = "no answer"
        while time.monotonic() < deadline:
            try:
                reply = self._health.Check(request, timeout=max(min(poll_s * 4, deadline - time.monotonic()), 0.01),
                                           wait_for_ready=True)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as error:
                status = error.code().name
            time.sleep(poll_s)
        raise ClientError(grpc.StatusCode.DEADLINE_EXCEEDED,
                          f"server not SERVING after {timeout_s:.0f} s (last status: {status})")

    def model_info(self, model_version: str = "", timeout_s: Optional[float] = None) -> classifier_pb2.ModelInfo:
        """What the server serves: labels, input, preprocessing, backend, batching settings."""
        request = classifier_pb2.GetModelInfoRequest(model_version=model_version)
        return self._call(self._stub.GetModelInfo, request, timeout_s)

    def classify(
        self,
        images: Sequence[Image],
        top_k: int = 5,
        model_version: str = "",
        timeout_s: Optional[float] = None,
    ) -> ClassifyResult:
        """The top_k predictions of every image, in the order given."""
        request = make_request(images, top_k, model_version)
        return to_result(self._call(self._stub.Classify, request, timeout_s))

    def async_classify(
        self,
        request: classifier_pb2.ClassifyRequest,
        callback: ResultCallback,
        timeout_s: Optional[float] = None,
    ) -> None:
        """Starts one Classify call, without retries; callback(result, error) runs on a gRPC thread."""
        future = self._stub.Classify.future(
            request, timeout=timeout_s or self._timeout_s, metadata=self._metadata
        )
        future.add_done_callback(lambda done: deliver_result(done, callback))

    def _call(self, method, request, timeout_s: Optional[float]):
        """Calls method until it succeeds, fails other than UNAVAILABLE, or attempts or time run out."""
        deadline = time.monotonic() + (timeout_s or self._timeout_s)
        attempt = 1
        while True:
            try:
                return method(request, timeout=max(deadline - time.monotonic(), 0.0), metadata=self._metadata)
            except grpc.RpcError as error:
                pause = self._retry.backoff_s(attempt)
                if (
                    error.code() != grpc.StatusCode.UNAVAILABLE
                    or attempt >= self._retry.max_attempts
                    or time.monotonic() + pause >= deadline
                ):
                    raise ClientError.from_rpc_error(error) from None
                logger.info("attempt %d on %s unavailable, retrying in %.3f s", attempt, self.target, pause)
            time.sleep(pause)
            attempt += 1


class CallbackClient:
    """classify and context management on top of a subclass's async_classify (the KServe and stream clients)."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection(s)."""

    def classify(self, images: Sequence[Image], top_k: int = 5, model_version: str = "",
                 timeout_s: Optional[float] = None) -> ClassifyResult:
        """The top_k predictions of every image, in the order given; ClientError on failure, and
        DEADLINE_EXCEEDED when no answer came within timeout_s (default: the client's) and a second."""
        done = threading.Event()
        outcome: List = []

        def callback(result, error):
            outcome.extend((result, error))
            done.set()

        timeout_s = timeout_s or self._timeout_s
        self.async_classify(make_request(images, top_k, model_version), callback, timeout_s)
        if not done.wait(timeout_s + 1.0):  # a call's own deadline ends it first; a stream's request has none
            raise ClientError(grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer within {timeout_s:g} s")
        result, error = outcome
        if error is not None:
            raise error
        return result

    def async_classify(self, request: classifier_pb2.ClassifyRequest, callback: ResultCallback,
                       timeout_s: Optional[float] = None) -> None:
        """Start one request; callback(result, error) runs on another thread when it ends."""
        raise NotImplementedError


def bearer_metadata(token: Optional[str]) -> Tuple[Tuple[str, str], ...]:
    """The call metadata carrying token ("authorization: Bearer <token>"); none without a token."""
    if not token:
        return ()
    if len(token.split()) != 1 or not token.isprintable() or not token.isascii():
        raise ValueError("the bearer token must be one word of printable ASCII characters (a token file holds "
                         "exactly one token)")
    return (("authorization", f"Bearer {token.strip()}"),)


def deliver_result(future: grpc.Future, callback: ResultCallback,
             convert: Optional[Callable[[Any], ClassifyResult]] = None) -> None:
    """Hand `future`'s response, converted to a ClassifyResult (default: to_result), or its error to `callback`."""
    try:
        response = future.result()
    except grpc.RpcError as error:
        callback(None, ClientError.from_rpc_error(error))
    except grpc.FutureCancelledError:
        callback(None, ClientError(grpc.StatusCode.CANCELLED, "cancelled by the client"))
    else:
        callback((convert or to_result)(response), None)


def read_image(image: Image) -> bytes:
    """The encoded bytes of an image given as bytes or as a path."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    return Path(image).read_bytes()


def make_request(images: Sequence[Image], top_k: int = 5, model_version: str = "") -> classifier_pb2.ClassifyRequest:
    """A ClassifyRequest for images given as bytes or paths."""
    return classifier_pb2.ClassifyRequest(
        images=[read_image(image) for image in images], top_k=top_k, model_version=model_version
    )


def to_result(response: classifier_pb2.ClassifyResponse) -> ClassifyResult:
    """The ClassifyResult of a ClassifyResponse."""
    predictions = [
        [Prediction(p.class_id, p.label, p.score) for p in image.predictions] for image in response.results
    ]
    return ClassifyResult(predictions, response.model_name, response.model_version)
