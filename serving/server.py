"""The gRPC server: Classifier, health and reflection services, and its lifecycle.

Lifecycle: bind and start with health NOT_SERVING -> load and warm the model -> SERVING ->
(stop requested) NOT_SERVING, stop accepting, finish queued and in-flight work within the grace
period -> release the model.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Tuple

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from genet.v1 import classifier_pb2_grpc
from serving.dataplane import DataPlane
from serving.health import HEALTH_SERVICE, HealthServicer
from serving.manifest import Manifest
from serving.metrics import ServingMetrics, start_metrics_server
from serving.model import load_model
from serving.registry import ModelRegistry
from serving.servicers import CLASSIFIER_SERVICE, ClassifierServicer
from serving.settings import Settings

LOG = logging.getLogger(__name__)
HEALTH_SERVICES = ("", CLASSIFIER_SERVICE)  # "" is the server's overall health


async def create_server(settings: Settings, dataplane: DataPlane, health_servicer: HealthServicer,
                        metrics: ServingMetrics) -> Tuple[grpc.aio.Server, int]:
    """Build, bind and start the gRPC server; returns it with the bound port (settings.port 0 picks one)."""
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
    ])
    classifier_pb2_grpc.add_ClassifierServicer_to_server(ClassifierServicer(dataplane, metrics), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((CLASSIFIER_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server)
    address = "{}:{}".format(settings.host, settings.port)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError("cannot bind {}".format(address))
    await server.start()
    return server, port


async def serve(settings: Settings, manifest: Manifest, stop: asyncio.Event) -> None:
    """Run the server for `manifest`'s model until `stop` is set, then shut down gracefully."""
    metrics = ServingMetrics(settings.max_batch_size)
    registry = ModelRegistry(manifest.name, lambda m: load_model(m, settings, metrics))
    pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="preprocess")
    health_servicer = HealthServicer(HEALTH_SERVICES)
    server, port = await create_server(settings, DataPlane(registry, settings, metrics, pool), health_servicer,
                                       metrics)
    LOG.info("serving on %s:%d", settings.host, port)
    httpd = None
    try:
        if settings.metrics_port is not None:
            httpd, metrics_port = start_metrics_server(metrics, settings.host, settings.metrics_port)
            LOG.info("metrics on %s:%d", settings.host, metrics_port)
        if await _load_unless_stopped(registry, manifest, stop):
            metrics.model_ready.set(1)
            await health_servicer.set_serving(True)
            LOG.info("health SERVING: %s version %s", manifest.name, manifest.version)
            await stop.wait()
    finally:
        await _shut_down(settings, server, health_servicer, registry, metrics)
        pool.shutdown(wait=False)
        if httpd is not None:
            httpd.shutdown()


async def _load_unless_stopped(registry: ModelRegistry, manifest: Manifest, stop: asyncio.Event) -> bool:
    """Load and warm the model; False if a stop request came first (the load is then abandoned)."""
    loading = asyncio.ensure_future(registry.load(manifest))
    stopping = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait([loading, stopping], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if loading in done:
        loading.result()  # raises what the load raised
        return True
    loading.cancel()
    return False


async def _shut_down(settings: Settings, server: grpc.aio.Server, health_servicer: HealthServicer,
                     registry: ModelRegistry, metrics: ServingMetrics) -> None:
    """NOT_SERVING, then stop accepting RPCs while the batchers flush what was admitted."""
    LOG.info("shutting down: finishing queued and in-flight requests (grace period %.1f s)",
             settings.grace_period_s)
    await health_servicer.drain()
    metrics.model_ready.set(0)
    # Closing a batcher stops its batch delay at once; RPCs still running after the grace
    # period are cancelled by gRPC, which releases their queued work.
    await asyncio.gather(server.stop(settings.grace_period_s), registry.close())
    LOG.info("stopped")
