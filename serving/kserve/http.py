"""KServe v2 over HTTP/REST: aiohttp on the gRPC server's event loop, the same data plane, tokens and TLS.

Routes ({v}: /versions/<version> may follow the model's name; without it, the latest version):

| route | answer |
|---|---|
| GET /v2 | server metadata |
| GET /v2/health/live, /v2/health/ready | 200, or 503 while not ready (open without a token) |
| POST /v2/repository/index | Triton's repository index: [{"name", "version", "state"}] |
| GET /v2/models/{model}{v} | model metadata |
| GET /v2/models/{model}{v}/ready | 200, 503 while not ready, 404 unknown |
| POST /v2/models/{model}{v}/infer | JSON tensors, and the binary tensor data extension |
| POST /v2/models/{model}{v}/classify?top_k=5 | convenience: the body is one image file; JSON top-k labels |
| GET / | the browser page (open without a token; its calls send one) |

Errors are `{"error": "..."}` with the status of the gRPC code (`STATUS`); a body over --max-message-mb
is 413. The `Inference-Timeout-Ms` header sets a request's deadline (none without it); infer's `timeout`
request parameter (Triton's, microseconds) too, the earlier of the two winning.
"""
from __future__ import annotations

import asyncio
import json
import logging
import ssl
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from aiohttp import web

from serving.auth import BearerTokens
from serving.errors import InvalidInput
from serving.kserve import tensors
from serving.kserve.service import InferRequest, KServeService, RequestedOutput, deadline_after
from serving.kserve.tensors import BYTES, Tensor
from serving.metrics import ServingMetrics
from serving.servicers import recorded_call, status_of

LOG = logging.getLogger(__name__)

HEADER_LENGTH = "Inference-Header-Content-Length"
TIMEOUT_HEADER = "Inference-Timeout-Ms"
MIN_SHUTDOWN_S = 0.001  # aiohttp reads a shutdown timeout <= 0 as no timeout at all
STATUS = {"INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
          "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499, "INTERNAL": 500, "UNAVAILABLE": 503,
          "DEADLINE_EXCEEDED": 504}
# gRPC code names of HTTP statuses aiohttp raises itself (no route, wrong method, body too large), for metrics.
CODES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "UNIMPLEMENTED", 413: "RESOURCE_EXHAUSTED"}
OPEN_PATHS = frozenset({"/", "/v2/health/live", "/v2/health/ready"})
PAGE = Path(__file__).with_name("page.html")
MAX_LINE_BYTES = 64 * 1024


def operation(name: str) -> Callable:
    """Name a handler's operation: its calls are recorded as method="http.<name>"."""

    def mark(handler: Callable) -> Callable:
        handler.operation = name
        return handler

    return mark


class KServeHttp:
    """The handlers of the HTTP endpoint over a KServeService."""

    def __init__(self, service: KServeService, metrics: ServingMetrics, tokens: Optional[BearerTokens]) -> None:
        self.service = service
        self.metrics = metrics
        self.tokens = tokens

    def application(self, max_body_bytes: int) -> web.Application:
        """The aiohttp application: routes, and one middleware for tokens, errors and metrics."""
        app = web.Application(client_max_size=max_body_bytes, middlewares=[self._middleware])
        app.router.add_get("/", self.page)
        app.router.add_get("/v2", self.server_metadata)
        app.router.add_get("/v2/health/live", self.server_live)
        app.router.add_get("/v2/health/ready", self.server_ready)
        app.router.add_post("/v2/repository/index", self.repository_index)
        for model in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            app.router.add_get(model, self.model_metadata)
            app.router.add_get(f"{model}/ready", self.model_ready)
            app.router.add_post(f"{model}/infer", self.infer)
            app.router.add_post(f"{model}/classify", self.classify)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler) -> web.StreamResponse:
        name = getattr(request.match_info.handler, "operation", "other")
        with recorded_call(self.metrics, f"http.{name}") as outcome:
            try:
                self._authorise(request)
                return await handler(request)
            except _Refused as refusal:
                outcome.code = refusal.code
                return error_response(STATUS[refusal.code], refusal.message, {"WWW-Authenticate": "Bearer"})
            except web.HTTPException as error:  # no such route, wrong method, body too large
                outcome.code = CODES.get(error.status, "UNKNOWN")
                return error_response(error.status, _describe(error))
            except asyncio.CancelledError:  # the client went away
                outcome.code = "CANCELLED"
                raise
            except Exception as error:  # a ServingError's status, or a bug: logged, 500 without internals
                outcome.code, message = status_of(error, name)
                return error_response(STATUS.get(outcome.code, 500), message)

    def _authorise(self, request: web.Request) -> None:
        if self.tokens is None or request.path in OPEN_PATHS:
            return
        refusal = self.tokens.check(request.headers.get("Authorization"))
        if refusal is not None:
            raise _Refused(*refusal)

    @operation("Page")
    async def page(self, request: web.Request) -> web.StreamResponse:
        """The browser page."""
        return web.FileResponse(PAGE, headers={"Cache-Control": "no-cache"})

    @operation("ServerMetadata")
    async def server_metadata(self, request: web.Request) -> web.Response:
        """Name, version, extensions."""
        return web.json_response(self.service.server_metadata())

    @operation("ServerLive")
    async def server_live(self, request: web.Request) -> web.Response:
        """200 whenever it answers."""
        return web.json_response({"live": True})

    @operation("ServerReady")
    async def server_ready(self, request: web.Request) -> web.Response:
        """200 while the server is ready, else 503."""
        ready = self.service.server_ready()
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    @operation("RepositoryIndex")
    async def repository_index(self, request: web.Request) -> web.Response:
        """Triton's repository index (the page finds the model's name with it)."""
        return web.json_response(self.service.repository_index())

    @operation("ModelMetadata")
    async def model_metadata(self, request: web.Request) -> web.Response:
        """The model's versions, platform and tensors."""
        return web.json_response(self.service.model_metadata(*_model(request)))

    @operation("ModelReady")
    async def model_ready(self, request: web.Request) -> web.Response:
        """200 while the version is ready; 503 (not ready) and 404 (unknown) come as errors."""
        model = self.service.model(*_model(request))
        return web.json_response({"name": model.name, "version": model.version, "ready": True})

    @operation("ModelInfer")
    async def infer(self, request: web.Request) -> web.Response:
        """v2 inference: JSON tensors, binary tensor data after the JSON header where announced."""
        document, binary = _split_body(await request.read(), request.headers.get(HEADER_LENGTH))
        name, version = _model(request)
        infer_request = _infer_request(document, binary, name, version)
        result = await self.service.infer(infer_request, deadline_after(_timeout_s(request)))
        binary_default = infer_request.parameters.get("binary_data_output", False)
        requested = infer_request.outputs or [RequestedOutput(t.name, {}) for t in result.outputs]
        entries, chunks = [], []
        for tensor, output in zip(result.outputs, requested):
            entry: Dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
            if output.parameters.get("binary_data", binary_default) is True:
                chunks.append(tensors.to_raw(tensor))
                entry["parameters"] = {"binary_data_size": len(chunks[-1])}
            else:
                entry["data"] = _json_values(tensor)
            entries.append(entry)
        body: Dict[str, Any] = {"model_name": result.model_name, "model_version": result.model_version,
                                "outputs": entries}
        if result.id:
            body["id"] = result.id
        if not chunks:
            return web.json_response(body)
        header = json.dumps(body).encode("utf-8")
        return web.Response(body=b"".join([header] + chunks), content_type="application/octet-stream",
                            headers={HEADER_LENGTH: str(len(header))})

    @operation("Classify")
    async def classify(self, request: web.Request) -> web.Response:
        """Convenience for curl and the page: the body is one image file; top_k labels as JSON."""
        name, version = _model(request)
        self.service.model(name, version)
        try:
            top_k = int(request.query.get("top_k", "5"))
        except ValueError:
            raise InvalidInput("top_k must be an integer") from None
        if top_k < 0:
            raise InvalidInput("top_k must not be negative")
        result = await self.service.dataplane.classify([await request.read()], top_k, version,
                                                       deadline_after(_timeout_s(request)))
        return web.json_response({
            "model_name": result.model_name, "model_version": result.model_version,
            "predictions": [{"label": p.label, "class_id": p.class_id, "score": p.score} for p in result.results[0]]})


class _Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def error_response(status: int, message: str, headers: Optional[Dict[str, str]] = None) -> web.Response:
    """A v2 error: {"error": message} with `status`."""
    return web.json_response({"error": message}, status=status, headers=headers)


async def start_http_server(handlers: KServeHttp, host: str, port: int, max_body_bytes: int,
                            ssl_context: Optional[ssl.SSLContext]) -> Tuple[web.AppRunner, int]:
    """Serve on host:port (0 picks one) on the running event loop; returns the runner (stop_http_server
    stops it) and the bound port.

    A client that disconnects cancels its handler, like a cancelled gRPC call: its queued images are dropped.
    """
    # Request lines up to 64 KiB: a long version in the URL gets NOT_FOUND as over gRPC, not a parser error.
    runner = web.AppRunner(handlers.application(max_body_bytes), handler_cancellation=True, access_log=None,
                           max_line_size=MAX_LINE_BYTES)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        raise OSError(f"cannot bind HTTP {host}:{port}: {error}") from None
    return runner, runner.addresses[-1][1]


async def stop_http_server(runner: web.AppRunner, timeout_s: float) -> None:
    """Stop listening, close idle keep-alive connections, and give the requests in flight `timeout_s` to
    finish; past it, the ones left (a client still sending its body, say) are cancelled, as gRPC's
    stop(grace) cancels its calls."""
    for site in runner.sites:
        await site.stop()
    server = runner.server
    if server.connections:
        LOG.info("closing %d HTTP connection(s): a request still in flight gets the %.1f s left of the grace "
                 "period", len(server.connections), timeout_s)
    server.pre_shutdown()  # idle keep-alive connections close now, the others after their request
    await server.shutdown(max(timeout_s, MIN_SHUTDOWN_S))
    await runner.cleanup()


def _describe(error: web.HTTPException) -> str:
    if error.status == 413:  # the words of gRPC's "Received message larger than max"
        return f"request body larger than max (--max-message-mb): {error.text}"
    return error.reason


def _model(request: web.Request) -> Tuple[str, str]:
    return request.match_info["model"], request.match_info.get("version", "")


def _timeout_s(request: web.Request) -> Optional[float]:
    """The request's Inference-Timeout-Ms header in seconds, or None."""
    value = request.headers.get(TIMEOUT_HEADER)
    if value is None:
        return None
    try:
        milliseconds = float(value)
    except ValueError:
        milliseconds = float("nan")
    if not 0 < milliseconds < float("inf"):
        raise InvalidInput(f"{TIMEOUT_HEADER} must be a positive number of milliseconds, got {value[:32]!r}")
    return milliseconds / 1000.0


def _split_body(body: bytes, header_length: Optional[str]) -> Tuple[Dict[str, Any], bytes]:
    """The JSON document and the binary data after it (binary tensor data extension)."""
    length = len(body)
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            length = -1
        if not 0 <= length <= len(body):
            raise InvalidInput(f"{HEADER_LENGTH} must be an integer in 0..{len(body)} (the body's size), "
                               f"got {header_length[:32]!r}")
    try:
        document = json.loads(body[:length])
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidInput(f"the request body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidInput("the request body must be a JSON object")
    return document, body[length:]


def _infer_request(document: Dict[str, Any], binary: bytes, name: str, version: str) -> InferRequest:
    inputs, offset = [], 0
    for index, spec in enumerate(_objects(document, "inputs")):
        tensor, size = _input(spec, index, memoryview(binary)[offset:])
        inputs.append(tensor)
        offset += size
    if offset != len(binary):
        raise InvalidInput(f"{len(binary)} bytes of binary data follow the JSON header, the inputs' binary_data_size "
                           f"add up to {offset}")
    outputs = []
    for index, spec in enumerate(_objects(document, "outputs", required=False)):
        output_name = spec.get("name")
        if not isinstance(output_name, str):
            raise InvalidInput(f"output {index} has no name")
        outputs.append(RequestedOutput(output_name, _parameters(spec, f"output '{output_name[:64]}'")))
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    return InferRequest(name, version, request_id, inputs, outputs, _parameters(document, "request"))


def _input(spec: Dict[str, Any], index: int, binary: memoryview) -> Tuple[Tensor, int]:
    """One input tensor and how many bytes of the binary data it took."""
    name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(shape, list):
        raise InvalidInput(f"input {index} needs a string 'name', a string 'datatype' and a list 'shape'")
    size = _parameters(spec, f"input '{name[:64]}'").get("binary_data_size")
    if size is None:
        if "data" not in spec:
            raise InvalidInput(f"input '{name[:64]}' has neither 'data' nor a binary_data_size parameter")
        return tensors.from_values(name, datatype, shape, spec["data"]), 0
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= len(binary):
        raise InvalidInput(f"input '{name[:64]}': binary_data_size {size!r} exceeds the {len(binary)} bytes of binary "
                           "data left")
    return tensors.from_raw(name, datatype, shape, bytes(binary[:size])), size


def _objects(document: Dict[str, Any], key: str, required: bool = True) -> List[Dict[str, Any]]:
    value = document.get(key, None if required else [])
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise InvalidInput(f"'{key}' must be a list of objects")
    return value


def _parameters(spec: Dict[str, Any], what: str) -> Dict[str, Any]:
    parameters = spec.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput(f"the parameters of {what} must be an object")
    return parameters


def _json_values(tensor: Tensor) -> List[Any]:
    """Typed values for JSON: BYTES as UTF-8 strings."""
    values = tensors.to_values(tensor)
    if tensor.datatype == BYTES:
        return [value.decode("utf-8", "replace") for value in values]
    return values
