"""Watching a server process from outside: its resident memory (psutil) and its health (grpc.health.v1)."""
import threading
import time
from typing import List

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

MIB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    """Resident set size of the process."""
    return psutil.Process(pid).memory_info().rss


def health_status(target: str, timeout_s: float = 2.0, service: str = "") -> str:
    """The server's health status name (SERVING, NOT_SERVING, ...), or "UNREACHABLE (<code>)"."""
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as error:
            return f"UNREACHABLE ({error.code().name})"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


class RssSampler:
    """Samples a process's RSS every interval_s in a background thread while in the `with` block."""

    def __init__(self, pid: int, interval_s: float = 0.25):
        self.pid = pid
        self.interval_s = interval_s
        self.samples: List[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> "RssSampler":
        self.samples.append(rss_bytes(self.pid))
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> int:
        """The largest RSS sampled."""
        return max(self.samples)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.samples.append(rss_bytes(self.pid))
            except psutil.NoSuchProcess:
                return


def wait_for(predicate, timeout_s: float, interval_s: float = 0.1) -> bool:
    """Polls predicate() until it is true (True) or timeout_s passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())
