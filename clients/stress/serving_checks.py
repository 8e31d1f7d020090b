"""The serving checks, run against real `python -m serving` processes (clients.benchmark.servers).

The main server takes, in order: the bad-input corpus and capacity and overload, each over genet.v1
gRPC and then over the KServe v2 HTTP port (`-http`), a hot reload under load, and SIGTERM under load
(which ends it). The cancellation check needs batches that wait
seconds for company, the flood of large requests a low --max-concurrent-rpcs, the worker faults two
workers and a short inference timeout, and `sigterm-stream` (SIGTERM under load over one
ClassifyStream) a server to stop: each gets a server of its own.
"""
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, FrozenSet, List

from clients.benchmark.runner import build_requests
from clients.benchmark.servers import ServerProcess
from clients.client import ClassifierClient, RetryPolicy
from clients.kserve import KServeHttpClient
from clients.streaming import StreamingClassifierClient
from clients.stress import forge
from clients.stress.bad_inputs import run_bad_inputs
from clients.stress.cancellation import CANCEL_SERVER_OPTIONS, run_cancellation
from clients.stress.corpus import Limits, build_corpus
from clients.stress.flood import run_flood
from clients.stress.overload import measure_capacity, run_overload
from clients.stress.plan import Plan
from clients.stress.reload import RELOAD_OPTION, run_reload
from clients.stress.results import CheckResult
from clients.stress.shutdown import run_sigterm
from clients.stress.worker_faults import run_worker_faults

logger = logging.getLogger(__name__)

GRACE_PERIOD_S = 15.0
SERVER_OPTIONS = ("--max-batch-size", "8", "--max-queue-delay-ms", "5", "--max-queue-size", "256",
                  "--max-images-per-request", "32", "--max-message-mb", "4", "--workers", "1", "--threads", "1",
                  "--grace-period-s", str(GRACE_PERIOD_S))
"""The main server, tuned for this 2-core machine (measured at 4x overload): one preprocessing worker,
as two workers and the inference thread starve the event loop of the GIL and rejections then wait
0.1-1 s; 32-image requests, as the GIL-bound server spends ~3 ms per rejected RPC and keeps 90% of
its throughput at 4x with 32 images per request, 72% with 16."""
RELOAD_INTERVAL_S = 0.5
IMAGES_PER_REQUEST = 32
MAIN_SERVER_CHECKS = ("bad-inputs", "bad-inputs-http", "overload", "overload-http", "reload", "sigterm")
LOAD_IMAGES = 64


@dataclass(frozen=True)
class Setup:
    """What the serving checks run against."""

    repository: Path
    model_name: str
    log_dir: Path
    backend: str
    python: str
    plan: Plan
    skip: FrozenSet[str]


def load_requests() -> list:
    """Distinct requests of IMAGES_PER_REQUEST photo-like 160x120 JPEGs each."""
    images = [forge.encode(forge.sample_rgb(120, 160, seed=100 + i), "JPEG", quality=90) for i in range(LOAD_IMAGES)]
    return build_requests(images, IMAGES_PER_REQUEST)


def guarded(name: str, skip: FrozenSet[str], check: Callable[[], CheckResult]) -> CheckResult:
    """check() unless name is skipped; an exception becomes a failed result instead of ending the suite."""
    if name in skip:
        return CheckResult(name, skipped=f"skipped (--skip {name})")
    try:
        return check()
    except Exception as error:  # the suite reports every check, whatever broke
        logger.exception("check %s crashed", name)
        return CheckResult(name, failures=[f"crashed: {type(error).__name__}: {error}"])


def _client(address: str) -> ClassifierClient:
    return ClassifierClient(address, timeout_s=30.0, retry=RetryPolicy(max_attempts=1))


def main_server_checks(setup: Setup) -> List[CheckResult]:
    """Bad inputs and overload (genet.v1 gRPC, then KServe v2 HTTP), hot reload and SIGTERM against one server,
    in that order."""
    args = ["--model-repository", str(setup.repository), "--backend", setup.backend, *SERVER_OPTIONS,
            RELOAD_OPTION, str(RELOAD_INTERVAL_S), "--http-port", "0"]
    plan, skip, results = setup.plan, setup.skip, []
    requests = load_requests()
    with ServerProcess(args, setup.log_dir / "server-main.log", python=setup.python,
                       grace_s=GRACE_PERIOD_S + 30) as server, _client(server.address) as client:
        pid, info = server.process.pid, client.model_info()
        limits = Limits(info.limits.max_images_per_request, info.limits.max_message_bytes,
                        info.limits.max_image_pixels, info.preprocessing.resize_size)
        concurrency = load_concurrency(info)
        with KServeHttpClient(server.http_url, info.name, timeout_s=30.0) as http_client:
            protocols = (("", client), ("-http", http_client))  # genet.v1 gRPC, then KServe v2 HTTP
            for suffix, protocol_client in protocols:
                results.append(guarded(f"bad-inputs{suffix}", skip, lambda: run_bad_inputs(
                    protocol_client, server.address, pid, build_corpus(limits), plan.corpus_rounds, info.num_classes,
                    f"bad-inputs{suffix}")))
            capacities = {suffix: _capacity(protocol_client, requests, concurrency, plan.capacity_s, suffix)
                          for suffix, protocol_client in protocols}
            for suffix, protocol_client in protocols:
                results.append(guarded(f"overload{suffix}", skip, lambda: run_overload(
                    protocol_client, server.address, pid, requests, capacities[suffix], info.batching.max_queue_size,
                    plan.overload_factor, plan.overload_s, f"overload{suffix}")))
        capacity = capacities[""]
        results.append(guarded("reload", skip, lambda: run_reload(
            client, requests, concurrency, setup.repository, setup.model_name, plan.reload_s)))
        results.append(guarded("sigterm", skip, lambda: run_sigterm(
            client, requests, plan.sigterm_factor * capacity["throughput_rps"], server.stop, GRACE_PERIOD_S,
            plan.sigterm_before_s, plan.sigterm_after_s)))
    return results


def load_concurrency(info) -> int:
    """The closed loop's concurrency that measures capacity: half the queue in IMAGES_PER_REQUEST requests."""
    return max(1, info.batching.max_queue_size // IMAGES_PER_REQUEST // 2)


def _capacity(client, requests: list, concurrency: int, duration_s: float, suffix: str) -> dict:
    capacity = measure_capacity(client, requests, concurrency, duration_s)
    logger.info("capacity%s: %.1f requests/s (%.1f images/s, from the %s)", suffix, capacity["throughput_rps"],
                capacity["throughput_ips"], capacity["capacity_from"])
    return capacity


def cancellation_check(setup: Setup) -> CheckResult:
    """Cancellations and expired deadlines against a server of their own, which must then exit 0."""
    args = ["--model-repository", str(setup.repository), "--backend", setup.backend, *CANCEL_SERVER_OPTIONS]
    image = forge.encode(forge.sample_rgb(120, 160, seed=7), "JPEG")
    with ServerProcess(args, setup.log_dir / "server-cancellation.log", python=setup.python) as server:
        result = run_cancellation(server.address, server.metrics_url, image)
        status = server.stop()
    result.require(status == 0, f"the server exited with {status} after the check")
    return result


def sigterm_stream_check(setup: Setup) -> CheckResult:
    """The sigterm check with its load on one ClassifyStream, against a server of its own."""
    args = ["--model-repository", str(setup.repository), "--backend", setup.backend, *SERVER_OPTIONS]
    requests = load_requests()
    with ServerProcess(args, setup.log_dir / "server-sigterm-stream.log", python=setup.python,
                       grace_s=GRACE_PERIOD_S + 30) as server, \
            StreamingClassifierClient(server.address, timeout_s=30.0) as client:
        with _client(server.address) as unary:
            concurrency = load_concurrency(unary.model_info())
        capacity = _capacity(client, requests, concurrency, setup.plan.capacity_s, "-stream")
        return run_sigterm(client, requests, setup.plan.sigterm_factor * capacity["throughput_rps"], server.stop,
                           GRACE_PERIOD_S, setup.plan.sigterm_before_s, setup.plan.sigterm_after_s, "sigterm-stream")


def serving_checks(setup: Setup) -> List[CheckResult]:
    """Every serving check, each reported even when another one crashed or its server did not start."""
    try:
        results = main_server_checks(setup)
    except Exception as error:  # e.g. the server did not start: every check on it failed
        logger.exception("the main server checks crashed")
        results = [guarded(name, setup.skip, lambda crash=error: _raise(crash)) for name in MAIN_SERVER_CHECKS]
    results.append(guarded("sigterm-stream", setup.skip, lambda: sigterm_stream_check(setup)))
    results.append(guarded("cancellation", setup.skip, lambda: cancellation_check(setup)))
    results.append(guarded("flood", setup.skip, lambda: run_flood(
        setup.repository, setup.backend, setup.python, setup.log_dir, compare=setup.plan.flood_compare)))
    return results + worker_fault_checks(setup)


def worker_fault_checks(setup: Setup) -> List[CheckResult]:
    """worker-crash and worker-hang (skipped together with --skip workers), each reported even if the other crashed."""
    names = ("worker-crash", "worker-hang")
    if "workers" in setup.skip:
        return [CheckResult(name, skipped="skipped (--skip workers)") for name in names]
    try:
        return run_worker_faults(setup.repository, setup.backend, setup.python, setup.log_dir,
                                 setup.plan.worker_fault_s)
    except Exception as error:  # e.g. the server did not start
        logger.exception("the worker fault checks crashed")
        return [CheckResult(name, failures=[f"crashed: {type(error).__name__}: {error}"]) for name in names]


def _raise(error: Exception) -> CheckResult:
    raise error
