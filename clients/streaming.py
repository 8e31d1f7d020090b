"""Classify over streams: many requests on one genet.v1 ClassifyStream call instead of a call each.

No call is set up per request (README, Measured, for what that bought on 2 cores shared with the
client). Responses come back as each request finishes, matched to their requests by request_id.

    with StreamingClassifierClient("127.0.0.1:8500") as client:
        client.async_classify(make_request(["cat.jpg"]), lambda result, error: print(result, error))
        print(client.classify(["dog.jpg"]))

A stream has no per-request deadline: `classify` gives up after its timeout (DEADLINE_EXCEEDED), but
the request stays in flight on the server and its late answer is dropped. The server holds at most
its queue size in images of one stream and then stops reading it, so requests beyond that wait in
the stream (HTTP/2 flow control) instead of being refused. When the stream ends (the server shuts
down, the connection breaks), requests without an answer get the stream's error, e.g. UNAVAILABLE;
they were not computed and can be sent again. The next request opens a new stream.
"""
import itertools
import logging
import queue
import threading
from typing import Any, Callable, Dict, Optional, Tuple

import grpc

from clients.channel import TlsConfig, create_channel
from clients.client import CallbackClient, ClassifyResult, ClientError, ResultCallback, bearer_metadata, to_result
from genet.v1 import classifier_pb2, classifier_pb2_grpc

logger = logging.getLogger(__name__)

STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}
Outcome = Tuple[str, Optional[ClassifyResult], Optional[ClientError]]
"""A response read from a stream: its request id, and its result or its error."""
_END = object()


class RequestStream:
    """Requests over one bidirectional streaming call, each answered through its own callback.

    `send` may be called from any thread. A reader thread matches every response to its request with
    `read_outcome` and calls the request's callback with (result, None) or (None, ClientError). When the
    call ends, requests still unanswered get its error; `ended` is then True.
    """

    def __init__(self, method: grpc.StreamStreamMultiCallable, metadata, read_outcome: Callable[[Any], Outcome]):
        self._outgoing: "queue.Queue" = queue.Queue()
        self._pending: Dict[str, ResultCallback] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._read_outcome = read_outcome
        self.ended = False
        self.error: Optional[ClientError] = None
        """What ended the stream, once it has ended (None: it ended OK)."""
        self._responses = method(iter(self._outgoing.get, _END), metadata=metadata)
        self._reader = threading.Thread(target=self._read, name="stream-reader", daemon=True)
        self._reader.start()

    def send(self, build: Callable[[str], Any], callback: ResultCallback) -> bool:
        """Send the message `build(request_id)`; callback(result, error) runs on the reader thread.
        False, and nothing sent, if the stream has ended."""
        with self._lock:
            if self.ended:
                return False
            request_id = str(next(self._ids))
            self._pending[request_id] = callback
        self._outgoing.put(build(request_id))
        return True

    def close(self, timeout_s: Optional[float] = None) -> None:
        """Half-close: wait up to `timeout_s` for the outstanding responses, then cancel the call."""
        self._outgoing.put(_END)
        self._reader.join(timeout_s)
        self._responses.cancel()
        self._reader.join()

    def _read(self) -> None:
        error = None
        try:
            for response in self._responses:
                request_id, result, failure = self._read_outcome(response)
                with self._lock:
                    callback = self._pending.pop(request_id, None)
                if callback is None:
                    logger.warning("a response for unknown request id %r: ignored", request_id[:64])
                else:
                    callback(result, failure)
        except grpc.RpcError as ended:
            error = ClientError.from_rpc_error(ended)
        finally:
            with self._lock:
                self.ended, self.error = True, error
                unanswered, self._pending = self._pending, {}
            self._outgoing.put(_END)  # ends gRPC's thread that reads the requests, if it still waits
            error = error or ClientError(grpc.StatusCode.UNAVAILABLE, "the stream ended before the answer")
            for callback in unanswered.values():
                callback(None, error)


class StreamingClassifierClient(CallbackClient):
    """ClassifierClient's classify interface over genet.v1 ClassifyStream: one stream, opened at the first
    request and again after it ended."""

    def __init__(self, target: str, *, timeout_s: float = 10.0, tls: Optional[TlsConfig] = None,
                 token: Optional[str] = None, options=()) -> None:
        super().__init__(timeout_s)
        self._channel = create_channel(target, tls, options)
        self._method = classifier_pb2_grpc.ClassifierStub(self._channel).ClassifyStream
        self._metadata = bearer_metadata(token)
        self._stream: Optional[RequestStream] = None
        self._lock = threading.Lock()

    def close(self) -> None:
        """Wait for the outstanding responses (at most the client's timeout), then close the channel."""
        if self._stream is not None:
            self._stream.close(self._timeout_s)
        self._channel.close()

    def async_classify(self, request: classifier_pb2.ClassifyRequest, callback: ResultCallback,
                       timeout_s: Optional[float] = None) -> None:
        """Send one request on the stream (timeout_s does not apply: see the module's docstring)."""
        def build(request_id: str) -> classifier_pb2.ClassifyRequest:
            message = classifier_pb2.ClassifyRequest()
            message.CopyFrom(request)
            message.request_id = request_id
            return message

        for _ in range(2):  # the stream may end between the check and the send: then once on a new one
            with self._lock:
                if self._stream is None or self._stream.ended:
                    self._stream = RequestStream(self._method, self._metadata, _genet_outcome)
                stream = self._stream
            if stream.send(build, callback):
                return
        callback(None, stream.error or ClientError(grpc.StatusCode.UNAVAILABLE, "the stream ended at once"))


def _genet_outcome(response: classifier_pb2.ClassifyStreamResponse) -> Outcome:
    if response.HasField("error"):
        code = STATUS_CODES.get(response.error.code, grpc.StatusCode.UNKNOWN)
        return response.request_id, None, ClientError(code, response.error.message)
    return response.request_id, to_result(response.response), None
