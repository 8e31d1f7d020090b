"""grpc.health.v1.Health with a status per service, whose Watch streams end when the server drains.

grpcio's reference servicer keeps every Watch stream open forever, so `server.stop(grace)` would
wait the whole grace period for probes' streams; here a stream sends NOT_SERVING and ends.
"""
from __future__ import annotations

import asyncio
from typing import Dict, Iterable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class HealthServicer(health_pb2_grpc.HealthServicer):
    """Check and Watch for a fixed set of services ("" is the server as a whole); NOT_SERVING at first."""

    def __init__(self, services: Iterable[str]) -> None:
        self._status: Dict[str, int] = {service: NOT_SERVING for service in services}
        self._changed = asyncio.Condition()
        self._draining = False

    @property
    def serving(self) -> bool:
        """True while the server as a whole is SERVING (not before the model is ready, nor once draining)."""
        return self._status.get("") == SERVING

    async def set_serving(self, serving: bool) -> None:
        """Set every service SERVING or NOT_SERVING (ignored once draining)."""
        if not self._draining:
            await self._update(SERVING if serving else NOT_SERVING)

    async def drain(self) -> None:
        """NOT_SERVING for good; open Watch streams send it and end."""
        self._draining = True
        await self._update(NOT_SERVING)

    async def Check(self, request, context):
        """The current status of `request.service`; NOT_FOUND for an unknown service."""
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request, context):
        """Stream the status of `request.service` on every change, until the server drains."""
        last = None
        while True:
            async with self._changed:
                while self._status.get(request.service, SERVICE_UNKNOWN) == last and not self._draining:
                    await self._changed.wait()
                status = self._status.get(request.service, SERVICE_UNKNOWN)
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            if self._draining:
                return

    async def _update(self, status: int) -> None:
        async with self._changed:
            for service in self._status:
                self._status[service] = status
            self._changed.notify_all()
