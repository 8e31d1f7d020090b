"""The gRPC server: Classifier, KServe v2, health and reflection services; the KServe v2 HTTP endpoint; lifecycle.

Lifecycle: bind and start with health NOT_SERVING -> load and warm the model -> SERVING, with
the repository watcher swapping in new versions (`serving.reload`) -> (stop requested) stop the
watcher, NOT_SERVING, stop accepting, finish queued and in-flight work within the grace period ->
release the models. While the latest version is out of service (no live inference worker, or a
failed batcher), health is NOT_SERVING. TLS and token authentication (`serving.tls`,
`serving.auth`) wrap every service. The HTTP endpoint (`--http-port`, `serving.kserve.http`) runs on
the same event loop and data plane, and stops with the gRPC server.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional, Tuple

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from genet.v1 import classifier_pb2_grpc
from inference import grpc_predict_v2_pb2_grpc
from modelrepo.manifest import Manifest
from serving.auth import BearerTokens, TokenAuthInterceptor
from serving.dataplane import DataPlane
from serving.health import HEALTH_SERVICE, HealthServicer
from serving.kserve.grpc_servicer import KSERVE_SERVICE, OPEN_METHODS, KServeServicer
from serving.kserve.http import KServeHttp, start_http_server, stop_http_server
from serving.kserve.service import KServeService
from serving.metrics import ServingMetrics, start_metrics_server
from serving.model import load_model
from serving.registry import ModelRegistry
from serving.reload import ReloadMetrics, RepositoryWatcher
from serving.servicers import CLASSIFIER_SERVICE, ClassifierServicer
from serving.settings import Settings

LOG = logging.getLogger(__name__)
HEALTH_SERVICES = ("", CLASSIFIER_SERVICE, KSERVE_SERVICE)  # "" is the server's overall health


@dataclass(frozen=True)
class Security:
    """What start-up read for transport security and authentication."""

    credentials: Optional[grpc.ServerCredentials] = None
    """TLS server credentials; None serves plaintext."""
    tokens: Optional[List[bytes]] = None
    """Accepted bearer tokens; None lets every call in."""
    ssl_context: Optional[ssl.SSLContext] = None
    """The same TLS for the HTTP endpoint; None serves plain HTTP."""


async def create_server(settings: Settings, kserve: KServeService, health_servicer: HealthServicer,
                        metrics: ServingMetrics, tokens: Optional[BearerTokens] = None,
                        credentials: Optional[grpc.ServerCredentials] = None) -> Tuple[grpc.aio.Server, int]:
    """Build, bind and start the gRPC server; returns it with the bound port (settings.port 0 picks one)."""
    interceptors = []
    if tokens is not None:
        interceptors.append(TokenAuthInterceptor(tokens, open_methods=OPEN_METHODS))
    # maximum_concurrent_rpcs bounds the handlers, but gRPC still receives every request sent on a
    # connection; HTTP/2's MAX_CONCURRENT_STREAMS bounds what one connection can send (serving/README.md).
    server = grpc.aio.server(interceptors=interceptors, maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
                             options=[("grpc.max_receive_message_length", settings.max_message_bytes),
                                      ("grpc.max_send_message_length", settings.max_message_bytes),
                                      ("grpc.max_concurrent_streams", settings.max_concurrent_rpcs)])
    classifier_pb2_grpc.add_ClassifierServicer_to_server(ClassifierServicer(kserve.dataplane, metrics), server)
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(KServeServicer(kserve, metrics), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((CLASSIFIER_SERVICE, KSERVE_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME),
                                        server)
    address = f"{settings.host}:{settings.port}"
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot bind {address}")
    await server.start()
    return server, port


async def serve(settings: Settings, manifest: Manifest, stop: asyncio.Event,
                security: Security = Security(), rescan: Optional[asyncio.Event] = None) -> None:
    """Serve `manifest`'s model (then newer versions) until `stop` is set, then shut down gracefully.

    Setting `rescan` makes the repository watcher scan at once (SIGHUP).
    """
    metrics = ServingMetrics(settings.max_batch_size)
    health_servicer = HealthServicer(HEALTH_SERVICES)

    def on_failure() -> None:
        asyncio.ensure_future(_publish_readiness(registry, health_servicer, metrics))

    registry = ModelRegistry(manifest.name, lambda m: load_model(m, settings, metrics, on_failure))
    watcher = RepositoryWatcher(settings.model_repository, registry, settings.backend, settings.keep_versions,
                                ReloadMetrics(metrics.registry))
    pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="preprocess")
    kserve = KServeService(DataPlane(registry, settings, metrics, pool), lambda: health_servicer.serving)
    tokens = None if security.tokens is None else BearerTokens(security.tokens, metrics.registry)
    server, port = await create_server(settings, kserve, health_servicer, metrics, tokens, security.credentials)
    LOG.info("serving on %s:%d (%s%s)", settings.host, port, _describe_transport(settings),
             ", bearer tokens required" if security.tokens is not None else "")
    httpd, watching, http_runner = None, None, None
    try:
        if settings.http_port is not None:
            http_runner, http_port = await start_http_server(
                KServeHttp(kserve, metrics, tokens), settings.http_address, settings.http_port,
                settings.max_message_bytes, security.ssl_context)
            LOG.info("http on %s://%s:%d (KServe v2 REST; the browser page at /)",
                     "https" if security.ssl_context else "http", settings.http_address, http_port)
        if settings.metrics_port is not None:
            httpd, metrics_port = start_metrics_server(metrics, settings.metrics_address, settings.metrics_port)
            LOG.info("metrics on %s:%d", settings.metrics_address, metrics_port)
        if await _load_unless_stopped(watcher.load_first(manifest), stop):
            await _publish_readiness(registry, health_servicer, metrics)
            watching = asyncio.ensure_future(watcher.run(rescan or asyncio.Event(), settings.reload_interval_s))
            await stop.wait()
    finally:
        if watching is not None:
            await _cancel(watching)  # before closing the registry: a load under way is abandoned
        await _shut_down(settings, server, http_runner, health_servicer, registry, metrics)
        pool.shutdown(wait=False)
        if httpd is not None:
            httpd.shutdown()


def _describe_transport(settings: Settings) -> str:
    if settings.tls_client_ca is not None:
        return "mutual TLS"
    return "TLS" if settings.tls else "plaintext"


async def _load_unless_stopped(load, stop: asyncio.Event) -> bool:
    """Await the coroutine `load`; False if a stop request came first (the load is then abandoned)."""
    loading = asyncio.ensure_future(load)
    stopping = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait([loading, stopping], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if loading in done:
        loading.result()  # raises what the load raised
        return True
    await _cancel(loading)
    return False


async def _cancel(task: asyncio.Future) -> None:
    """Cancel `task` and wait until it has ended."""
    task.cancel()
    await asyncio.wait([task])


async def _publish_readiness(registry: ModelRegistry, health_servicer: HealthServicer,
                             metrics: ServingMetrics) -> None:
    """Health SERVING and genet_model_ready 1 while the latest version is in service, else NOT_SERVING and 0."""
    ready = registry.ready
    metrics.model_ready.set(int(ready))
    await health_servicer.set_serving(ready)
    if ready:
        LOG.info("health SERVING: %s version %s", registry.name, registry.latest)
    else:
        LOG.error("health NOT_SERVING: %s version %s is out of service", registry.name, registry.latest)


async def _shut_down(settings: Settings, server: grpc.aio.Server, http_runner: Optional[web.AppRunner],
                     health_servicer: HealthServicer, registry: ModelRegistry, metrics: ServingMetrics) -> None:
    """NOT_SERVING; the batchers flush what was admitted while new calls are refused; then the listeners stop.

    The listeners stop last because gRPC answers CANCELLED, not UNAVAILABLE, to a call that arrives in
    the moment it stops accepting: while the batchers drain, such a call reaches its handler and is
    refused as documented. RPCs still running at the end of the grace period are cancelled by gRPC.
    """
    LOG.info("shutting down: finishing queued and in-flight requests (grace period %.1f s)",
             settings.grace_period_s)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.grace_period_s
    await health_servicer.drain()
    metrics.model_ready.set(0)
    await registry.close(settings.grace_period_s)  # batch delays end at once; admission refuses
    remaining_s = max(0.0, deadline - loop.time())
    stopping = [server.stop(remaining_s)]
    if http_runner is not None:
        stopping.append(stop_http_server(http_runner, remaining_s))
    await asyncio.gather(*stopping)
    LOG.info("stopped")
