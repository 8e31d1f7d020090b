"""One server's load levels: prepared requests, the concurrency sweep and the fixed rates, summarised.

Besides latency and throughput each level records the CPU time spent per image by the server process
(its Prometheus process_cpu_seconds_total) and by this benchmark process: on a machine where client
and server share the cores, what the load generator burns is missing from the server's throughput.
It also records how busy the machine's cores were (`machine_busy`, 0-1 of all cores): a level that
leaves cores idle is limited by waiting, not by CPU; and, from the server's metrics, the mean batch it
ran and the mean batches computing when one started (`mean_batches_in_flight`: near 1 with several
workers, they took turns). With an `H2loadTarget`, h2load generates the closed-loop levels
(clients.benchmark.h2load); its CPU counts as the client's.
"""
import itertools
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import psutil

from clients.benchmark import h2load, server_metrics
from clients.benchmark.load import run_closed_loop, run_open_loop
from clients.benchmark.progress import ProgressLine
from clients.benchmark.stats import summarise
from clients.client import ClassifierClient, make_request
from genet.v1 import classifier_pb2

MAX_DISTINCT_REQUESTS = 16


@dataclass(frozen=True)
class LoadPlan:
    """The load levels and their shared settings."""

    concurrency: Sequence[int]
    rates: Sequence[float]
    images_per_request: Sequence[int]
    warmup_s: float
    duration_s: float
    timeout_s: float
    h2load_target: Optional[h2load.H2loadTarget] = None
    """Set: h2load sends the closed-loop levels (to this target); unset: this process does."""


def build_requests(images: Sequence[Path], images_per_request: int) -> List[classifier_pb2.ClassifyRequest]:
    """Up to 16 distinct requests of images_per_request images each, cycling through images."""
    count = max(1, min(MAX_DISTINCT_REQUESTS, len(images) // images_per_request))
    pool = itertools.cycle(images)
    return [make_request([next(pool) for _ in range(images_per_request)]) for _ in range(count)]


def run_levels(client: ClassifierClient, images: Sequence[Path], plan: LoadPlan, label: str,
               max_batch_size: Optional[int], metrics_url: Optional[str], progress: ProgressLine) -> List[dict]:
    """For each images-per-request value: every closed-loop concurrency, then every open-loop rate."""
    levels = [("concurrency", c) for c in plan.concurrency] + [("rate", r) for r in plan.rates]
    runs = []
    for images_per_request in plan.images_per_request:
        requests = build_requests(images, images_per_request)
        for mode, level in levels:
            name = f"{label} {mode}={level} img/req={images_per_request}"
            run = {"server": label, "max_batch_size": max_batch_size, "mode": mode, mode: level,
                   "images_per_request": images_per_request,
                   **_run_level(client, requests, plan, mode, level, metrics_url, progress.load(name))}
            progress.done(f"{name}: {run['throughput_ips']:.1f} img/s, p99 {run['latency_ms']['p99']} ms, "
                          f"errors {run['errors'] or 0}")
            runs.append(run)
    return runs


def _run_level(client, requests, plan: LoadPlan, mode: str, level, metrics_url: Optional[str], callback) -> dict:
    """One load level: its summary, plus mean server batch and CPU per image when metrics_url is known."""
    before = server_metrics.scrape(metrics_url) if metrics_url else None
    client_cpu, machine = _client_cpu_s(), psutil.cpu_times()
    target = plan.h2load_target if mode == "concurrency" else None
    wire = target.call(requests[0], plan.timeout_s) if target is not None else None
    if wire is not None:
        measurement = h2load.run_closed_loop(target.address, wire, len(requests[0].images), level,
                                             plan.warmup_s, plan.duration_s, plan.timeout_s)
    else:
        loop = run_closed_loop if mode == "concurrency" else run_open_loop
        measurement = loop(client, requests, level, plan.warmup_s, plan.duration_s, plan.timeout_s, callback)
    client_cpu = _client_cpu_s() - client_cpu
    summary = summarise(measurement)
    summary["load_generator"] = "h2load" if wire is not None else "python"
    summary["machine_busy"] = busy_fraction(machine, psutil.cpu_times())
    images = sum(r.images for r in measurement.records if r.code == "OK")  # warm-up included, like the CPU
    cpu = {"client": _per_image_ms(client_cpu, images)}
    if metrics_url:
        after = server_metrics.scrape(metrics_url)
        if wire is not None and not wire.http1:
            h2load.count_server_errors(summary, h2load.server_errors(before, after, wire.method, level),
                                       len(requests[0].images))
        summary["mean_batch_size"] = server_metrics.histogram_mean(before, after, "genet_batch_size")
        summary["mean_batches_in_flight"] = server_metrics.histogram_mean(before, after, "genet_batches_in_flight")
        cpu["server"] = _per_image_ms(server_metrics.cpu_seconds(before, after), images)
    summary["cpu_ms_per_image"] = cpu
    return summary


def _client_cpu_s() -> float:
    """CPU seconds of this process and of its finished children (an h2load run is one)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def busy_fraction(before, after) -> Optional[float]:
    """The share of all cores' time between two psutil.cpu_times() that was not idle (waiting for I/O is idle;
    guest time is left out of the total, as psutil.cpu_percent does: Linux counts it in user time too)."""
    def delta(*fields):
        return sum(getattr(after, field, 0.0) - getattr(before, field, 0.0) for field in fields)

    total = sum(after) - sum(before) - delta("guest", "guest_nice")
    return round(1.0 - delta("idle", "iowait") / total, 3) if total > 0 else None


def _per_image_ms(seconds: Optional[float], images: int) -> Optional[float]:
    return round(1000.0 * seconds / images, 3) if seconds is not None and images else None


def offline_batch_size(run: dict) -> Optional[int]:
    """The largest batch the server can form at a closed-loop level: min(concurrency x images, max batch)."""
    if run["mode"] != "concurrency" or not run.get("max_batch_size"):
        return None
    return min(run["concurrency"] * run["images_per_request"], run["max_batch_size"])


def add_efficiency(runs: List[dict], offline: List[dict]) -> None:
    """Sets each closed-loop run's offline_batch_size and efficiency: server img/s / img/s of its own backend's
    offline baseline at that batch size (None without one)."""
    by_batch = offline_throughput(offline)
    for run in runs:
        batch = offline_batch_size(run)
        run["offline_batch_size"] = batch
        offline_ips = by_batch.get((run.get("backend"), batch))
        run["efficiency"] = round(run["throughput_ips"] / offline_ips, 3) if offline_ips else None


def offline_throughput(offline: List[dict]) -> Dict[Tuple[Optional[str], int], float]:
    """Offline img/s by (backend label, batch size)."""
    return {(entry.get("backend"), entry["batch_size"]): entry["throughput_ips"] for entry in offline}
