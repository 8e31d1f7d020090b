"""Closed-loop load from h2load (nghttp2's HTTP/2 load generator, written in C) instead of this process.

On a machine where the load generator shares the cores with the server, what it burns is taken from the
server: the Python load generator (clients.benchmark.load over grpcio) costs about 0.3 CPU ms per call,
h2load about 0.07. h2load repeats one call as bytes on the wire (`WireCall`: the first request of the
level, built by the same code as the Python clients'; the Python generator cycles through up to 16) for
the level's duration, keeping `concurrency` calls in flight, and logs each call's start, HTTP status and
duration, which become the level's records.

gRPC reports its status in trailers, which h2load does not read: a failed gRPC call looks like any other
HTTP 200. So the status codes of gRPC levels come from the server's own count of the calls it answered
(`genet_requests_total` of the level's method, read from its /metrics), and the throughput counts only the
calls the server answered OK (`count_server_errors`). Open-loop levels (fixed request rates) stay with the
Python load generator: h2load has no fixed request rate.
"""
from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

from clients.benchmark import server_metrics
from clients.benchmark.load import Measurement, Record
from clients.client import bearer_metadata
from clients.kserve import HTTP_CODES, http_infer_request, infer_request
from genet.v1 import classifier_pb2
from inference import grpc_predict_v2_pb2

INSTALL_HINT = "install nghttp2's h2load (Debian: apt-get install nghttp2-client; or `make h2load` as root)"
PROTOCOLS = ("genet", "kserve-grpc", "kserve-http")


@dataclass(frozen=True)
class WireCall:
    """One call as h2load sends it: path, headers and body, over HTTP/1.1 or HTTP/2 (prior knowledge)."""

    path: str
    headers: Tuple[Tuple[str, str], ...]
    body: bytes
    http1: bool
    method: str
    """The server's `method` label of genet_requests_total for this call."""


@dataclass(frozen=True)
class H2loadTarget:
    """Where and how h2load sends a level's calls: the server's address for `protocol` (host:port)."""

    address: str
    protocol: str
    model_name: str
    token: Optional[str] = None

    def call(self, request: classifier_pb2.ClassifyRequest, timeout_s: float) -> WireCall:
        """`request` on the wire in this target's protocol."""
        return wire_call(self.protocol, request, self.model_name, timeout_s, self.token)


def h2load_path() -> str:
    """The h2load executable; RuntimeError naming how to install it when it is missing."""
    path = shutil.which("h2load")
    if path is None:
        raise RuntimeError(f"--load-generator h2load: h2load is not on PATH; {INSTALL_HINT}")
    return path


def wire_call(protocol: str, request: classifier_pb2.ClassifyRequest, model_name: str, timeout_s: float,
              token: Optional[str]) -> WireCall:
    """`request` as `protocol` puts it on the wire, with its deadline and bearer token."""
    auth = bearer_metadata(token)
    if protocol == "genet":
        return _grpc_call(classifier_pb2.DESCRIPTOR.services_by_name["Classifier"], "Classify", request,
                          timeout_s, auth)
    if protocol == "kserve-grpc":
        return _grpc_call(grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"], "ModelInfer",
                          infer_request(request, model_name), timeout_s, auth)
    if protocol == "kserve-http":
        path, headers, body = http_infer_request(request, model_name, timeout_s)
        return WireCall(path, tuple(headers.items()) + auth, body, http1=True, method="http.infer")
    raise ValueError(f"h2load cannot send {protocol!r} calls: choose one of {', '.join(PROTOCOLS)}")


def _grpc_call(service, method: str, message, timeout_s: float, auth) -> WireCall:
    """A unary gRPC call: POST /<service>/<method>, the message behind its 5-byte length prefix."""
    payload = message.SerializeToString()
    headers = (("content-type", "application/grpc"), ("te", "trailers"),
               ("grpc-timeout", f"{_whole_ms(timeout_s)}m")) + auth
    return WireCall(f"/{service.full_name}/{method}", headers, b"\0" + struct.pack(">I", len(payload)) + payload,
                    http1=False, method=method)


def run_closed_loop(address: str, call: WireCall, images: int, concurrency: int, warmup_s: float,
                    duration_s: float, timeout_s: float) -> Measurement:
    """h2load keeps `concurrency` calls in flight for warmup_s + duration_s; the records of every call, and
    the measurement window after the warm-up (as the Python load generator's, so CPU per image is comparable).

    gRPC calls share one HTTP/2 connection (as a grpcio channel does); HTTP/1.1 calls take one connection
    each. A connection that sees no activity for timeout_s is closed (its calls then fail). Every record
    is "OK" for HTTP 200, else the gRPC code of its HTTP status (HTTP/1.1) or "HTTP_<status>".
    """
    connections = ["-c", str(concurrency), "--h1"] if call.http1 else ["-c", "1", "-m", str(concurrency)]
    headers = [option for name, value in call.headers for option in ("-H", f"{name}: {value}")]
    with tempfile.TemporaryDirectory(prefix="genet-h2load-") as folder:
        body, log = Path(folder) / "body", Path(folder) / "calls.tsv"
        body.write_bytes(call.body)
        command = [h2load_path(), *connections, "-D", f"{_whole_ms(warmup_s + duration_s)}ms",
                   "-N", f"{_whole_ms(timeout_s)}ms", "-d", str(body), "--log-file", str(log), *headers,
                   f"http://{address}{call.path}"]
        completed = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   timeout=warmup_s + duration_s + timeout_s + 30.0, check=False)
        if completed.returncode != 0 or not log.exists():
            output = completed.stdout.decode("utf-8", "replace").strip().splitlines()[-3:]
            raise RuntimeError(f"h2load failed (exit status {completed.returncode}): {' / '.join(output)}")
        records = [_record(line, images, call.http1) for line in log.read_text().splitlines() if line.strip()]
    if not records:
        raise RuntimeError(f"h2load finished no call to {address}{call.path} in {duration_s:g} s")
    window_start = min(record.start for record in records) + warmup_s
    return Measurement(records, window_start, window_start + duration_s, unfinished=0)


def _whole_ms(seconds: float) -> int:
    """A duration in whole milliseconds, at least 1: h2load's options and gRPC's timeout header take whole units."""
    return max(1, round(seconds * 1000))


def _record(line: str, images: int, http1: bool) -> Record:
    """One line of h2load's --log-file: start (microseconds since the epoch), HTTP status, duration (us)."""
    start_us, status, duration_us = (int(field) for field in line.split("\t")[:3])
    start = start_us / 1e6
    if status == 200:
        code = "OK"
    elif http1 and status in HTTP_CODES:
        code = HTTP_CODES[status].name
    else:
        code = f"HTTP_{status}"
    return Record(start, start + duration_us / 1e6, images, code, start, "")


def server_errors(before: server_metrics.Samples, after: server_metrics.Samples, method: str,
                  concurrency: int) -> Dict[str, int]:
    """Calls of `method` the server answered with another status than OK between two scrapes, by code.

    h2load stops with up to `concurrency` calls in flight and closes the connection, which the server
    counts as CANCELLED calls: that many CANCELLED are the end of the run, not errors.
    """
    codes = {dict(labels).get("code") for name, labels in after
             if name == "genet_requests_total" and dict(labels).get("method") == method}
    counts = {code: int(server_metrics.delta(before, after, "genet_requests_total", method=method, code=code))
              for code in codes if code != "OK"}
    counts["CANCELLED"] = counts.get("CANCELLED", 0) - concurrency
    return {code: count for code, count in sorted(counts.items()) if count > 0}


def count_server_errors(summary: dict, errors: Dict[str, int], images_per_request: int) -> None:
    """Put the server's count of failed gRPC calls into a level's summary, which h2load saw as HTTP 200.

    The server's count covers the warm-up too, and a failed call cannot be told apart in h2load's records:
    all of them are taken off the successful calls and the throughput, which can therefore only be
    underestimated, never inflated by fast failures.
    """
    if not errors:
        return
    failed = sum(errors.values())
    duration = summary["duration_s"]
    summary["errors"] = dict(sorted({**summary["errors"], **errors}.items()))
    summary["successful"] = max(0, summary["successful"] - failed)
    summary["throughput_rps"] = round(max(0.0, summary["throughput_rps"] - failed / duration), 3)
    summary["throughput_ips"] = round(summary["throughput_rps"] * images_per_request, 3)
