"""Start a real `python -m serving` process on port 0 and wait until its health check says SERVING.

Reusable by any test that needs a live server:

    with ServerProcess(LITE_PYTHON, ["--model-repository", repo, "--backend", "mslite"], log_dir) as server:
        channel = grpc.insecure_channel(server.address)
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
LITE_PYTHON = REPO_ROOT / ".venv-lite" / "bin" / "python"
MAIN_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
CLASSIFIER_SERVICE = "genet.v1.Classifier"
_BOUND = re.compile(r"serving on (\S+):(\d+)")
_METRICS = re.compile(r"metrics on (\S+):(\d+)")


class ServerProcess:
    """A server subprocess whose log goes to `log_dir`/server-<n>.log; a context manager."""

    def __init__(self, python: Path, args: Sequence[str], log_dir: Path, *, metrics: bool = True,
                 startup_timeout_s: float = 120.0, env: Optional[Dict[str, str]] = None) -> None:
        self.python = Path(python)
        self.args = list(args) + ["--host", "127.0.0.1", "--port", "0"]
        if metrics:
            self.args += ["--metrics-port", "0"]
        self.log_path = _fresh_log_path(Path(log_dir))
        self.startup_timeout_s = startup_timeout_s
        self.env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), **(env or {}))
        self.process: Optional[subprocess.Popen] = None
        self.port: Optional[int] = None
        self.metrics_port: Optional[int] = None
        self.health_seen: List[int] = []  # distinct health statuses seen while waiting, in order

    @property
    def address(self) -> str:
        """host:port of the gRPC server."""
        return "127.0.0.1:{}".format(self.port)

    def arg(self, flag: str) -> Optional[str]:
        """The value the server was started with for `flag` (the last one wins), or None."""
        values = [self.args[i + 1] for i, arg in enumerate(self.args[:-1]) if arg == flag]
        return values[-1] if values else None

    def start(self, wait_serving: bool = True) -> "ServerProcess":
        """Launch the process, wait for its bound-port line, then (optionally) for SERVING."""
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([str(self.python), "-m", "serving", *self.args], cwd=REPO_ROOT,
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.port = int(self._wait_for_line(_BOUND).group(2))
        if "--metrics-port" in self.args:
            self.metrics_port = int(self._wait_for_line(_METRICS).group(2))
        if wait_serving:
            self.wait_for_health(health_pb2.HealthCheckResponse.SERVING)
        return self

    def health(self, service: str = CLASSIFIER_SERVICE) -> int:
        """The current health status (a HealthCheckResponse.ServingStatus value)."""
        with grpc.insecure_channel(self.address) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=5)
        return response.status

    def wait_for_health(self, status: int, service: str = CLASSIFIER_SERVICE) -> None:
        """Poll the health service until it reports `status`; fail if the process exits first."""
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                seen = self.health(service)
            except grpc.RpcError:
                seen = None
            if seen is not None and (not self.health_seen or self.health_seen[-1] != seen):
                self.health_seen.append(seen)
            if seen == status:
                return
            time.sleep(0.05)
        raise TimeoutError("health never became {}; log:\n{}".format(status, self.log()))

    def metrics_text(self) -> str:
        """The Prometheus exposition text of /metrics."""
        url = "http://127.0.0.1:{}/metrics".format(self.metrics_port)
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """One sample's value from /metrics (0.0 when absent)."""
        wanted = name + ("{" + ",".join('{}="{}"'.format(k, v) for k, v in sorted(labels.items())) + "}"
                         if labels else "")
        for line in self.metrics_text().splitlines():
            if line.startswith("#"):
                continue
            sample, _, value = line.rpartition(" ")
            if _sorted_sample(sample) == wanted:
                return float(value)
        return 0.0

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        """Send `signum` and wait for the exit status."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def log(self) -> str:
        """Everything the server wrote so far."""
        return self.log_path.read_text(errors="replace")

    def _wait_for_line(self, pattern: "re.Pattern") -> "re.Match":
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            match = pattern.search(self.log())
            if match:
                return match
            self._check_alive()
            time.sleep(0.05)
        raise TimeoutError("no {!r} line; log:\n{}".format(pattern.pattern, self.log()))

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError("server exited with {}; log:\n{}".format(self.process.returncode, self.log()))

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _fresh_log_path(log_dir: Path) -> Path:
    log_dir.mkdir(parents=True, exist_ok=True)
    index = len(list(log_dir.glob("server-*.log")))
    return log_dir / "server-{}.log".format(index)


def _sorted_sample(sample: str) -> str:
    """Normalise `name{b="2",a="1"}` to sorted label order."""
    if "{" not in sample:
        return sample
    name, _, rest = sample.partition("{")
    labels = sorted(part for part in rest.rstrip("}").split(",") if part)
    return name + "{" + ",".join(labels) + "}"
