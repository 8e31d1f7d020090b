"""Servers the benchmark starts itself: `python -m serving` child processes on free ports.

Used to compare server settings (e.g. max batch size 1 against 16) in one report, and by
`make bench`. The child's output goes to a log file; its ports are read from its log lines.
"""
import logging
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
PORT_LINE = re.compile(r"serving on (\S+):(\d+)")
METRICS_LINE = re.compile(r"metrics on (?:http://)?(\S+?):(\d+)")


def default_server_python(backend: str) -> str:
    """The interpreter of the backend's environment: .venv-lite for mslite, this one for mindspore."""
    if backend == "mslite":
        return str(REPO_ROOT / ".venv-lite" / "bin" / "python")
    return sys.executable


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server."""

    label: str
    """Name of the server setting in the report, e.g. "mbs16"."""
    model_repository: Path
    backend: str = "mslite"
    python: Optional[str] = None
    """Interpreter to run it with; default: the backend's environment."""
    options: Tuple[str, ...] = ()
    """Further `python -m serving` options, e.g. ("--max-batch-size", "16")."""

    def command(self) -> list:
        """The command line of the server process, on free ports."""
        python = self.python or default_server_python(self.backend)
        return [python, "-m", "serving", "--model-repository", str(self.model_repository),
                "--backend", self.backend, "--port", "0", "--metrics-port", "0", *self.options]


class ServerProcess:
    """A running server: started and SERVING on entry, stopped with SIGTERM on exit."""

    def __init__(self, spec: ServerSpec, log_path: Path, startup_timeout_s: float = 300.0,
                 grace_s: float = 30.0):
        self.spec = spec
        self.log_path = Path(log_path)
        self.target: Optional[str] = None
        self.metrics_url: Optional[str] = None
        self._startup_timeout_s = startup_timeout_s
        self._grace_s = grace_s
        self._process: Optional[subprocess.Popen] = None

    def __enter__(self) -> "ServerProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(self.spec.command(), stdout=log, stderr=subprocess.STDOUT,
                                             cwd=str(REPO_ROOT), env=dict(os.environ))
        try:
            self._wait_until_serving(time.monotonic() + self._startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        logger.info("server %s on %s (log %s)", self.spec.label, self.target, self.log_path)
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> Optional[int]:
        """SIGTERM, then SIGKILL after the grace period; returns the exit status."""
        if self._process is None or self._process.poll() is not None:
            return None if self._process is None else self._process.returncode
        self._process.send_signal(signal.SIGTERM)
        try:
            return self._process.wait(self._grace_s)
        except subprocess.TimeoutExpired:
            logger.warning("server %s ignored SIGTERM for %.0f s: killing it", self.spec.label, self._grace_s)
            self._process.kill()
            return self._process.wait()

    def _wait_until_serving(self, deadline: float) -> None:
        while self.target is None or self.metrics_url is None:
            self._check_alive(deadline)
            text = self.log_path.read_text(errors="replace")
            port, metrics = PORT_LINE.search(text), METRICS_LINE.search(text)
            self.target = "{}:{}".format(*port.groups()) if port else None
            self.metrics_url = "http://{}:{}/metrics".format(*metrics.groups()) if metrics else None
            time.sleep(0.1)
        with grpc.insecure_channel(self.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while not _is_serving(health):
                self._check_alive(deadline)
                time.sleep(0.2)

    def _check_alive(self, deadline: float) -> None:
        if self._process.poll() is not None:
            raise RuntimeError("server {} exited with {} before serving; last log lines:\n{}".format(
                self.spec.label, self._process.returncode, self._log_tail()))
        if time.monotonic() > deadline:
            raise RuntimeError("server {} not serving after {:.0f} s; last log lines:\n{}".format(
                self.spec.label, self._startup_timeout_s, self._log_tail()))

    def _log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _is_serving(health: health_pb2_grpc.HealthStub) -> bool:
    try:
        reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0)
    except grpc.RpcError:
        return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING

