"""A flood of large requests: the server's memory stays bounded by --max-concurrent-rpcs.

FLOOD_CALLS Classify calls, each carrying one "image" of random bytes just under --max-message-mb,
are started at once over FLOOD_CHANNELS fresh connections (loopback) against a server of its own
started with --max-concurrent-rpcs FLOOD_LIMIT. That option is both gRPC's server-wide
maximum_concurrent_rpcs (calls beyond it: RESOURCE_EXHAUSTED) and HTTP/2's MAX_CONCURRENT_STREAMS
per connection (streams beyond it are refused before their data is read: UNAVAILABLE "RST_STREAM
... error code 7", which clients may retry). Those two refusals and INVALID_ARGUMENT (the admitted
calls: not an image) are the allowed outcomes. The peak RSS of the server (VmHWM, reset right before
the flood through /proc/PID/clear_refs, so every transient peak counts, not only sampled ones) must
grow by at most RSS_COPIES_PER_STREAM messages per stream a connection may hold, times the
connections. Health must say SERVING right after. With `compare`, the same flood also runs against
a server whose limit is above the flood, and its numbers are reported beside (not judged).
"""
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Sequence

import grpc

from clients.benchmark.servers import ServerProcess
from clients.stress.probe import MIB, health_status
from clients.stress.results import REFUSED_STREAM, CheckResult
from genet.v1 import classifier_pb2, classifier_pb2_grpc

MESSAGE_MB = 16
FLOOD_LIMIT = 4
FLOOD_CALLS = 48
FLOOD_CHANNELS = 2
TIMEOUT_S = 60.0
RSS_COPIES_PER_STREAM = 7
"""Messages' worth of memory one received stream may cost: measured 4 with grpcio 1.62 (gRPC's receive
buffer, the bytes Python parses, the image field, allocator slack; serving/README.md) and 5.8-6.1 with
grpcio 1.85, the front's since it runs in .venv (Python 3.11), plus one of margin."""
FLOOD_OPTIONS = ("--max-message-mb", str(MESSAGE_MB), "--max-images-per-request", "1", "--workers", "1",
                 "--threads", "1")


def run_flood(repository: Path, backend: str, python: str, log_dir: Path, compare: bool) -> CheckResult:
    """The flood against a server limited to FLOOD_LIMIT RPCs (and, with compare, one unlimited)."""
    result = CheckResult("flood", faults=1)
    limited = _flood_server(repository, backend, python, log_dir, FLOOD_LIMIT)
    result.requests = sum(limited["codes"].values())
    allowed = ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "UNAVAILABLE (refused stream)")
    result.lost = sum(count for code, count in limited["codes"].items() if code not in allowed)
    bound_mib = RSS_COPIES_PER_STREAM * FLOOD_LIMIT * FLOOD_CHANNELS * MESSAGE_MB
    result.require(result.lost == 0, f"calls ended other than {' or '.join(allowed)}: {limited['codes']}")
    result.require(limited["codes"].get("INVALID_ARGUMENT", 0) < FLOOD_CALLS, "no call was refused: the limit did "
                   "not act")
    result.require(limited["rss_growth_mib"] <= bound_mib,
                   f"peak RSS grew {limited['rss_growth_mib']} MiB (bound {bound_mib} MiB)")
    result.require(limited["health_after"] == "SERVING", f"health {limited['health_after']} right after the flood")
    result.details = {"limited": limited, "rss_growth_bound_mib": bound_mib}
    if compare:
        result.details["unlimited"] = _flood_server(repository, backend, python, log_dir, FLOOD_CALLS + 1)
    unlimited = f"; without the limit +{result.details['unlimited']['rss_growth_mib']} MiB" if compare else ""
    result.summary = (f"{FLOOD_CALLS} x {MESSAGE_MB} MiB at once on {FLOOD_CHANNELS} connections, limit {FLOOD_LIMIT}: "
                      f"peak RSS +{limited['rss_growth_mib']} MiB (bound {bound_mib}){unlimited}; "
                      f"codes {limited['codes']}")
    return result


def _flood_server(repository: Path, backend: str, python: str, log_dir: Path, limit: int) -> dict:
    """Start a server with --max-concurrent-rpcs limit, flood it, measure; stopped afterwards."""
    args = ["--model-repository", str(repository), "--backend", backend, *FLOOD_OPTIONS,
            "--max-concurrent-rpcs", str(limit)]
    with ServerProcess(args, log_dir / f"server-flood-{limit}.log", python=python) as server:
        pid = server.process.pid
        reset_peak_rss(pid)
        before = _status_kib(pid, "VmRSS")
        outcome = flood(server.address, os.urandom(MESSAGE_MB * MIB - 64 * 1024))
        peak, after = _status_kib(pid, "VmHWM"), _status_kib(pid, "VmRSS")
        health_after = health_status(server.address, timeout_s=5.0)
    return {"max_concurrent_rpcs": limit, "calls": FLOOD_CALLS, "connections": FLOOD_CHANNELS,
            "message_mib": MESSAGE_MB, "codes": outcome,
            "rss_before_mib": round(before / 1024, 1), "rss_peak_mib": round(peak / 1024, 1),
            "rss_after_mib": round(after / 1024, 1), "rss_growth_mib": round((peak - before) / 1024, 1),
            "health_after": health_after}


def flood(address: str, image: bytes) -> Dict[str, int]:
    """FLOOD_CALLS Classify calls of `image` started together over FLOOD_CHANNELS channels; codes by name."""
    request = classifier_pb2.ClassifyRequest(images=[image])
    options = [("grpc.max_send_message_length", -1)]
    channels = [grpc.insecure_channel(address, options=options) for _ in range(FLOOD_CHANNELS)]
    try:
        stubs = [classifier_pb2_grpc.ClassifierStub(channel) for channel in channels]
        with ThreadPoolExecutor(max_workers=FLOOD_CALLS) as pool:
            codes = list(pool.map(lambda index: _code(stubs[index % len(stubs)], request), range(FLOOD_CALLS)))
    finally:
        for channel in channels:
            channel.close()
    return {code: codes.count(code) for code in sorted(set(codes))}


def _code(stub: classifier_pb2_grpc.ClassifierStub, request: classifier_pb2.ClassifyRequest) -> str:
    try:
        stub.Classify(request, timeout=TIMEOUT_S)
    except grpc.RpcError as error:
        refused = error.code() == grpc.StatusCode.UNAVAILABLE and REFUSED_STREAM in (error.details() or "")
        return "UNAVAILABLE (refused stream)" if refused else error.code().name
    return "OK"


def reset_peak_rss(pid: int) -> None:
    """Reset the process's VmHWM to its current RSS (Linux: clear_refs 5)."""
    with open(f"/proc/{pid}/clear_refs", "w") as handle:
        handle.write("5")


def _status_kib(pid: int, field: str) -> int:
    """A memory field of /proc/PID/status in KiB (VmRSS, VmHWM)."""
    lines: Sequence[str] = Path(f"/proc/{pid}/status").read_text().splitlines()
    values: List[int] = [int(line.split()[1]) for line in lines if line.startswith(f"{field}:")]
    return values[0]
