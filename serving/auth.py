"""Bearer-token authentication: one grpc.aio server interceptor in front of every service; the same
token check (`BearerTokens`) guards the KServe v2 HTTP endpoint.

A call must carry `authorization: Bearer <token>` metadata with one of the tokens of
`--auth-token-file`: no (or a malformed) header answers UNAUTHENTICATED, an unknown token
PERMISSION_DENIED. Health checks (grpc.health.v1, KServe v2's ServerLive and ServerReady) and
reflection stay open so that load balancers and orchestrators can probe the server without a
secret (they reveal only the status and the public proto). A refused call is answered before its
request is deserialised.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Iterable, List, Optional, Tuple

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, Counter

from serving.errors import StartupError

LOG = logging.getLogger(__name__)
BEARER = "bearer "
OPEN_SERVICES = (health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)


class TokenFileError(StartupError, ValueError):
    """The token file cannot be used (unreadable, empty, or a token with whitespace inside)."""


def read_tokens(path: str) -> List[bytes]:
    """The tokens of `path`, one per line; blank lines and lines starting with '#' are skipped."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle]
    except (OSError, UnicodeDecodeError) as error:
        raise TokenFileError(f"cannot read --auth-token-file {path}: {error}") from None
    tokens = [line for line in lines if line and not line.startswith("#")]
    if not tokens:
        raise TokenFileError(f"--auth-token-file {path} holds no token")
    if any(len(token.split()) != 1 or not token.isprintable() for token in tokens):
        raise TokenFileError(f"--auth-token-file {path}: a token contains whitespace or control characters")
    return [token.encode("utf-8") for token in tokens]


class BearerTokens:
    """The accepted tokens and the check of an `authorization` header, shared by gRPC and HTTP."""

    def __init__(self, tokens: Iterable[bytes], registry: CollectorRegistry) -> None:
        # Digests have one length, so the comparison time does not reveal a token's length either.
        self._digests = [hashlib.sha256(token).digest() for token in tokens]
        self._rejections = Counter("genet_auth_rejections", "Calls refused by token authentication, by code",
                                   ["code"], registry=registry)

    def check(self, header: Optional[str]) -> Optional[Tuple[str, str]]:
        """None when `header` holds an accepted token, else the status code name and message to answer with
        (counted as a rejection)."""
        refusal = self._refusal(header)
        if refusal is not None:
            self._rejections.labels(code=refusal[0]).inc()
        return refusal

    def _refusal(self, header: Optional[str]) -> Optional[Tuple[str, str]]:
        if header is None or not header.lower().startswith(BEARER) or not header[len(BEARER):].strip():
            return "UNAUTHENTICATED", "missing bearer token: send 'authorization: Bearer <token>'"
        if not self.accepts(header[len(BEARER):].strip().encode("utf-8")):
            return "PERMISSION_DENIED", "the bearer token is not accepted"
        return None

    def accepts(self, token: bytes) -> bool:
        """True if `token` is one of the accepted tokens; compares with every one in constant time."""
        digest = hashlib.sha256(token).digest()
        matches = [hmac.compare_digest(digest, accepted) for accepted in self._digests]
        return any(matches)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls to protected services unless they carry one of the accepted bearer tokens.

    `open_methods` are further full method names ("/package.Service/Method") that stay open.
    """

    def __init__(self, tokens: BearerTokens, open_services: Tuple[str, ...] = OPEN_SERVICES,
                 open_methods: Tuple[str, ...] = ()) -> None:
        self._tokens = tokens
        self._open_prefixes = tuple(f"/{service}/" for service in open_services)
        self._open_methods = frozenset(open_methods)

    async def intercept_service(self, continuation, handler_call_details):
        """Pass open and authorised calls on; answer the others with their status."""
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(self._open_prefixes) or method in self._open_methods:
            return handler
        refusal = self._tokens.check(_authorization(handler_call_details.invocation_metadata))
        if refusal is None:
            return handler
        code, message = refusal
        LOG.debug("refused %s: %s", method, message)
        return _refusing_handler(handler, getattr(grpc.StatusCode, code), message)


def _authorization(metadata) -> Optional[str]:
    """The value of the call's `authorization` metadata, if any."""
    for key, value in metadata or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


def _refusing_handler(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same streaming kind that aborts with `code` without parsing the request."""

    async def refuse(request_or_iterator, context):
        await context.abort(code, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)
