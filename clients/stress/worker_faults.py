"""Inference-worker faults under load: a worker killed with kill -9, and one hung past --inference-timeout-s.

A server of its own, on loopback, with two workers (--instances 2) and a 2 s inference timeout takes
a closed loop of 4-image requests. A worker (a child process of the server) is killed with SIGKILL
(worker-crash); once it is replaced, one is stopped with SIGSTOP, as a runtime stuck in a native call
would be (worker-hang). Each check asserts: the calls that failed are those of one batch at most
(UNAVAILABLE naming the worker's loss; one batch holds max batch size / images per request calls) and
at least one (the fault hit a batch); every other call is OK; the restart is counted in
genet_worker_restarts_total{reason}; the server is SERVING again. At the end the server must exit 0
after SIGTERM with none of its worker processes left, the stopped one included.
"""
import os
import signal
import threading
import time
from pathlib import Path
from typing import List, Sequence, Set

import psutil
from grpc_health.v1 import health_pb2

from clients.benchmark.load import run_closed_loop
from clients.benchmark.runner import build_requests
from clients.benchmark.servers import ServerProcess
from clients.client import ClassifierClient, RetryPolicy
from clients.stress import forge
from clients.stress.results import CheckResult, codes, examples
from genet.v1 import classifier_pb2

MAX_BATCH_SIZE = 8
IMAGES_PER_REQUEST = 4
CONCURRENCY = 8
INFERENCE_TIMEOUT_S = 2.0
OPTIONS = ("--instances", "2", "--inference-timeout-s", str(INFERENCE_TIMEOUT_S), "--max-batch-size",
           str(MAX_BATCH_SIZE), "--max-queue-delay-ms", "5", "--max-queue-size", "256", "--threads", "1",
           "--workers", "1")
LOSSES = ("the inference worker failed during this batch", "(--inference-timeout-s): its worker was killed")
"""Details of a call failed with its batch's worker (serving.workers.pool)."""
RECOVERY_S = 60.0
"""Bound on the restart (a Lite load and warm-up: 2-5 s here) and on SERVING again."""
CALL_TIMEOUT_S = 30.0


def run_worker_faults(repository: Path, backend: str, python: str, log_dir: Path, load_s: float) -> List[CheckResult]:
    """worker-crash and worker-hang against one server, which must then exit 0 and leave no worker behind."""
    args = ["--model-repository", str(repository), "--backend", backend, *OPTIONS]
    images = [forge.encode(forge.sample_rgb(120, 160, seed=300 + i), "JPEG") for i in range(16)]
    requests = build_requests(images, IMAGES_PER_REQUEST)
    seen: Set[int] = set()
    with ServerProcess(args, log_dir / "server-workers.log", python=python) as server, \
            ClassifierClient(server.address, timeout_s=CALL_TIMEOUT_S, retry=RetryPolicy(max_attempts=1)) as client:
        results = [_fault(server, client, requests, name, reason, signum, load_s, seen)
                   for name, reason, signum in (("worker-crash", "died", signal.SIGKILL),
                                                ("worker-hang", "timeout", signal.SIGSTOP))]
        seen.update(_workers(server))
        status = server.stop()
    left = sorted(pid for pid in seen if _running(pid))
    for result in results:
        result.require(status == 0, f"the server exited with {status} after SIGTERM")
        result.require(not left, f"worker processes left behind: {left}")
        result.details.update(exit_status=status, workers_seen=len(seen), workers_left=left)
    return results


def _fault(server: ServerProcess, client: ClassifierClient, requests: Sequence[classifier_pb2.ClassifyRequest],
           name: str, reason: str, signum: int, load_s: float, seen: Set[int]) -> CheckResult:
    """Closed-loop load for load_s; `signum` to a worker after a third of it; then wait for its replacement."""
    restarts = server.metric("genet_worker_restarts_total", reason=reason)
    victim = _workers(server)[0]
    seen.update(_workers(server))
    outcome = {}
    loader = threading.Thread(target=lambda: outcome.setdefault("m", run_closed_loop(
        client, requests, CONCURRENCY, 0.0, load_s, CALL_TIMEOUT_S)), name=f"{name}-load")
    loader.start()
    time.sleep(load_s / 3)
    os.kill(victim, signum)
    loader.join()
    recovered_s = _wait_for_recovery(server, restarts, reason)
    records = outcome["m"].records
    with_the_worker = [r for r in records if r.code == "UNAVAILABLE" and any(loss in r.details for loss in LOSSES)]
    lost = [r for r in records if r.code != "OK" and r not in with_the_worker]
    one_batch = MAX_BATCH_SIZE // IMAGES_PER_REQUEST
    result = CheckResult(name, faults=1, requests=len(records) + outcome["m"].unfinished,
                         lost=len(lost) + outcome["m"].unfinished)
    result.load = {"concurrency": CONCURRENCY, "duration_s": load_s, "achieved_rps": round(len(records) / load_s, 1)}
    result.require(result.lost == 0, f"{result.lost} calls lost beside the worker's batch: {examples(lost)}")
    result.require(1 <= len(with_the_worker) <= one_batch, f"{len(with_the_worker)} calls failed with the worker "
                                                           f"(one batch: 1 to {one_batch})")
    result.require(recovered_s is not None, f"no restart counted and SERVING within {RECOVERY_S:g} s")
    result.details = {"codes": codes(records), "failed_with_the_worker": len(with_the_worker),
                      "details": sorted({r.details for r in with_the_worker})[:3], "victim_pid": victim,
                      "recovered_s": recovered_s}
    recovery = f"replaced and SERVING {recovered_s:.1f} s after the load" if recovered_s is not None else "not replaced"
    result.summary = (f"{signal.Signals(signum).name} to a worker under {CONCURRENCY} calls in flight: "
                      f"{len(with_the_worker)} calls failed with its batch, {result.lost} lost; {recovery}")
    return result


def _wait_for_recovery(server: ServerProcess, restarts: float, reason: str):
    """Seconds until the restart is counted and health is SERVING; None if not within RECOVERY_S."""
    started = time.monotonic()
    while time.monotonic() - started < RECOVERY_S:
        if (server.metric("genet_worker_restarts_total", reason=reason) > restarts
                and server.health() == health_pb2.HealthCheckResponse.SERVING):
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def _workers(server: ServerProcess) -> List[int]:
    """The pids of the server's worker processes (its children)."""
    return [child.pid for child in psutil.Process(server.process.pid).children()]


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (not gone, not a zombie)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
