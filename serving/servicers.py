"""gRPC servicers: convert messages, delegate to the data plane, map errors to statuses in one place.

`recorded_call` records every protocol's calls (genet.v1, KServe v2 gRPC and HTTP) in the same metrics.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import Awaitable, Iterator, Optional, Tuple, TypeVar

import grpc
from google.protobuf import json_format

from genet.v1 import classifier_pb2, classifier_pb2_grpc
from serving.dataplane import Classification, DataPlane
from serving.errors import ServingError
from serving.metrics import ServingMetrics
from serving.streams import answer_stream

LOG = logging.getLogger(__name__)
CLASSIFIER_SERVICE = classifier_pb2.DESCRIPTOR.services_by_name["Classifier"].full_name
T = TypeVar("T")


class CallOutcome:
    """The status code a call ends with (a grpc.StatusCode name), set by the code handling it."""

    code = "OK"


@contextlib.contextmanager
def recorded_call(metrics: ServingMetrics, method: str) -> Iterator[CallOutcome]:
    """Count the call in progress, then its outcome's code and its latency (every protocol's handlers)."""
    started = time.monotonic()
    outcome = CallOutcome()
    metrics.in_progress.labels(method=method).inc()
    try:
        yield outcome
    finally:
        # Recorded before the status leaves: a client holding its answer finds it counted.
        metrics.in_progress.labels(method=method).dec()
        metrics.requests.labels(method=method, code=outcome.code).inc()
        metrics.request_latency.labels(method=method).observe(time.monotonic() - started)


def rpc_method(handler):
    """Wrap a servicer method: ServingError -> its status, anything else -> INTERNAL; record metrics."""
    method = handler.__name__

    @functools.wraps(handler)
    async def wrapper(self, request, context):
        response, error = await recorded_outcome(self.metrics, method, handler(self, request, context), context)
        if error is None:
            return response
        code, message = error
        await context.abort(getattr(grpc.StatusCode, code), message)

    return wrapper


async def recorded_outcome(metrics: ServingMetrics, method: str, work: Awaitable[T],
                           context) -> Tuple[Optional[T], Optional[Tuple[str, str]]]:
    """Await `work` (a call, or one request of a stream), recorded as a call of `method`: (its result, None)
    or, when it failed, (None, (status code name, message)). Cancellation propagates."""
    with recorded_call(metrics, method) as outcome:
        try:
            return await work, None
        except asyncio.CancelledError:
            outcome.code = "DEADLINE_EXCEEDED" if _deadline_passed(context) else "CANCELLED"
            raise
        except Exception as error:
            outcome.code, message = status_of(error, method)
            return None, (outcome.code, message)


def status_of(error: Exception, method: str) -> Tuple[str, str]:
    """The status (code name, message) a call of `method` that raised `error` ends with: a ServingError's
    own, anything else (a bug: logged) INTERNAL without internals."""
    if isinstance(error, ServingError):
        return error.code, error.message
    LOG.error("%s failed", method, exc_info=error)
    return "INTERNAL", f"internal error in {method}: {type(error).__name__}"


class ClassifierServicer(classifier_pb2_grpc.ClassifierServicer):
    """genet.v1.Classifier over a DataPlane."""

    def __init__(self, dataplane: DataPlane, metrics: ServingMetrics) -> None:
        self.dataplane = dataplane
        self.metrics = metrics

    @rpc_method
    async def Classify(self, request, context):
        """Ranked labels for every image of the request, in request order."""
        return await self._classify(request, context)

    async def ClassifyStream(self, request_iterator, context):
        """Classify every request of the stream as it comes; one ClassifyStreamResponse each, as each finishes."""
        async def answer(request):
            response, error = await recorded_outcome(self.metrics, "ClassifyStream",
                                                     self._classify(request, context), context)
            if error is None:
                return classifier_pb2.ClassifyStreamResponse(request_id=request.request_id, response=response)
            code, message = error
            return classifier_pb2.ClassifyStreamResponse(
                request_id=request.request_id,
                error=classifier_pb2.Status(code=getattr(grpc.StatusCode, code).value[0], message=message))

        await answer_stream(context, answer, lambda request: len(request.images), self.dataplane)

    async def _classify(self, request, context) -> classifier_pb2.ClassifyResponse:
        result = await self.dataplane.classify(list(request.images), request.top_k, request.model_version,
                                               deadline_of(context))
        return _classify_response(result, request.request_id)

    @rpc_method
    async def GetModelInfo(self, request, context):
        """What is served: model, labels, input, preprocessing, backend, batching, limits."""
        info = self.dataplane.model_info(request.model_version)
        return json_format.ParseDict(info, classifier_pb2.ModelInfo())


def _classify_response(result: Classification, request_id: str) -> classifier_pb2.ClassifyResponse:
    response = classifier_pb2.ClassifyResponse(model_name=result.model_name, model_version=result.model_version,
                                               request_id=request_id)
    for predictions in result.results:
        response.results.add().predictions.extend(
            classifier_pb2.Prediction(class_id=p.class_id, label=p.label, score=p.score) for p in predictions)
    return response


def deadline_of(context) -> Optional[float]:
    """The caller's deadline as a time.monotonic() value, or None when it set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _deadline_passed(context) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0
