"""Starts `python -m serving` child processes on free ports: the one server launcher of the project.

Used by the benchmark (servers it starts itself, e.g. max batch size 1 against 16) and by the
serving and client tests:

    with ServerProcess(["--model-repository", "models", "--backend", "mslite"], log_path) as server:
        channel = grpc.insecure_channel(server.address)      # started and SERVING here
        server.metric("genet_requests_total", method="Classify", code="OK")
    # stopped with SIGTERM here

The child's output goes to a log file; its ports are read from its `serving on` / `metrics on` lines.
"""
from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.benchmark.server_metrics import scrape, value
from runtime_env import REPO_ROOT

logger = logging.getLogger(__name__)

PORT_LINE = re.compile(r"serving on (\S+):(\d+)")
METRICS_LINE = re.compile(r"metrics on (?:http://)?(\S+?):(\d+)")
HTTP_LINE = re.compile(r"http on (https?)://(\S+?):(\d+)")
_WILDCARDS = ("0.0.0.0", "[::]", "::", "")


class ServerProcess:
    """A `python -m serving ARGS` child on 127.0.0.1 and free ports; a context manager (start, stop).

    `args` come after `--host 127.0.0.1 --port 0 --metrics-port 0`, so they may override them;
    `credentials` are for a server that speaks TLS; `checkout` is the repository whose code runs (default:
    this one; clients.benchmark.checkouts starts others). Once started: `address` (host:port), `metrics_url`,
    `http_url` (the KServe v2 HTTP endpoint's base URL when started with --http-port, else None),
    `process` (the Popen) and `health_seen` (the distinct health statuses seen while waiting for SERVING).
    """

    def __init__(self, args: Sequence[str], log_path: Path, *, python: Optional[str] = None,
                 startup_timeout_s: float = 300.0, grace_s: float = 60.0,
                 credentials: Optional[grpc.ChannelCredentials] = None, checkout: Path = REPO_ROOT) -> None:
        self.args = ["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", *args]
        self.checkout = checkout  # the repository whose server runs (its code: the process starts there)
        self.log_path = Path(log_path)
        self.python = python or sys.executable  # the front runs in .venv for every backend (docs/workers.md)
        self.process: Optional[subprocess.Popen] = None
        self.address: Optional[str] = None
        self.metrics_url: Optional[str] = None
        self.http_url: Optional[str] = None
        self.health_seen: List[int] = []
        self._startup_timeout_s = startup_timeout_s
        self._grace_s = grace_s
        self._credentials = credentials

    def arg(self, flag: str) -> Optional[str]:
        """The value the server is started with for `flag` (the last one wins), or None."""
        values = [self.args[i + 1] for i, arg in enumerate(self.args[:-1]) if arg == flag]
        return values[-1] if values else None

    def start(self) -> "ServerProcess":
        """Launch the process and wait until its health service says SERVING (stopped again on failure)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([self.python, "-m", "serving", *self.args], cwd=str(self.checkout),
                                            stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + self._startup_timeout_s
            self.address = _endpoint(self._wait_for_line(PORT_LINE, deadline))
            self.metrics_url = f"http://{_endpoint(self._wait_for_line(METRICS_LINE, deadline))}/metrics"
            if self.arg("--http-port") is not None:
                scheme, host, port = self._wait_for_line(HTTP_LINE, deadline).groups()
                self.http_url = f"{scheme}://{_endpoint_of(host, port)}"
            self._wait_until_serving(deadline)
        except BaseException:
            self.stop()
            raise
        logger.info("server on %s (log %s)", self.address, self.log_path)
        return self

    def health(self, service: str = "") -> int:
        """The health status of `service` ("" is the whole server); grpc.RpcError when it cannot answer."""
        with self._channel() as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                              timeout=5)
        return reply.status

    def metric(self, name: str, **labels: str) -> float:
        """One sample's current value from /metrics, e.g. metric("genet_batch_size_bucket", le="1.0"); 0 if absent."""
        return value(scrape(self.metrics_url), name, **labels)

    def stop(self, signum: int = signal.SIGTERM) -> Optional[int]:
        """Send `signum` and return the exit status; SIGKILL after the grace period. None if never started."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signum)
        try:
            return self.process.wait(self._grace_s)
        except subprocess.TimeoutExpired:
            logger.warning("server %s ignored %s for %.0f s: killing it", self.address, signal.Signals(signum).name,
                           self._grace_s)
            self.process.kill()
            return self.process.wait()

    def log(self) -> str:
        """Everything the server wrote so far."""
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _channel(self) -> grpc.Channel:
        if self._credentials is None:
            return grpc.insecure_channel(self.address)
        return grpc.secure_channel(self.address, self._credentials)

    def _wait_for_line(self, pattern: "re.Pattern", deadline: float) -> "re.Match":
        while True:
            match = pattern.search(self.log())
            if match:
                return match
            self._check_alive(deadline, f"no {pattern.pattern!r} line")
            time.sleep(0.05)

    def _wait_until_serving(self, deadline: float) -> None:
        while True:
            try:
                seen = self.health()
            except grpc.RpcError:
                seen = None
            if seen is not None and self.health_seen[-1:] != [seen]:
                self.health_seen.append(seen)
            if seen == health_pb2.HealthCheckResponse.SERVING:
                return
            self._check_alive(deadline, "not SERVING")
            time.sleep(0.05)

    def _check_alive(self, deadline: float, waiting_for: str) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"server exited with {self.process.returncode} before serving; "
                               f"log {self.log_path}:\n{self._log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"server {waiting_for} after {self._startup_timeout_s:.0f} s; "
                               f"log {self.log_path}:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


def _endpoint(match: "re.Match") -> str:
    """host:port from a log line's match, a wildcard host replaced by loopback."""
    return _endpoint_of(*match.groups())


def _endpoint_of(host: str, port: str) -> str:
    return f"{'127.0.0.1' if host in _WILDCARDS else host}:{port}"


@dataclass(frozen=True)
class ServerSpec:
    """How the benchmark starts one server."""

    label: str
    """Name of the server setting in the report, e.g. "mbs16"."""
    model_repository: Path
    backend: str = "mslite"
    python: Optional[str] = None
    """Interpreter of the server's front; default: this one (the workers pick their backend's own)."""
    options: Tuple[str, ...] = ()
    """Further `python -m serving` options, e.g. ("--max-batch-size", "16")."""

    def process(self, log_path: Path) -> ServerProcess:
        """The (not yet started) server process of this spec."""
        args = ["--model-repository", str(self.model_repository), "--backend", self.backend, *self.options]
        return ServerProcess(args, log_path, python=self.python)
