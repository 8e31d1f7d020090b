"""One server's load levels: prepared requests, the concurrency sweep and the fixed rates, summarised."""
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from clients.benchmark import server_metrics
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
    images_per_request: int
    warmup_s: float
    duration_s: float
    timeout_s: float


def build_requests(images: Sequence[Path], images_per_request: int) -> List[classifier_pb2.ClassifyRequest]:
    """Up to 16 distinct requests of images_per_request images each, cycling through images."""
    count = max(1, min(MAX_DISTINCT_REQUESTS, len(images) // images_per_request))
    pool = itertools.cycle(images)
    return [make_request([next(pool) for _ in range(images_per_request)]) for _ in range(count)]


def run_levels(client: ClassifierClient, requests, plan: LoadPlan, label: str, max_batch_size: Optional[int],
               metrics_url: Optional[str], progress: ProgressLine) -> List[dict]:
    """Every closed-loop concurrency, then every open-loop rate, against one server."""
    levels = [("concurrency", c) for c in plan.concurrency] + [("rate", r) for r in plan.rates]
    runs = []
    for mode, level in levels:
        before = server_metrics.scrape(metrics_url) if metrics_url else None
        callback = progress.load("{} {}={}".format(label, mode, level))
        if mode == "concurrency":
            measurement = run_closed_loop(client, requests, level, plan.warmup_s, plan.duration_s,
                                          plan.timeout_s, callback)
        else:
            measurement = run_open_loop(client, requests, level, plan.warmup_s, plan.duration_s,
                                        plan.timeout_s, callback)
        run = {"server": label, "max_batch_size": max_batch_size, "mode": mode, mode: level,
               "images_per_request": plan.images_per_request, **summarise(measurement)}
        progress.done("{} {}={}: {:.1f} img/s, p99 {} ms, errors {}".format(
            label, mode, level, run["throughput_ips"], run["latency_ms"]["p99"], run["errors"] or 0))
        if metrics_url:
            run["mean_batch_size"] = server_metrics.mean_batch_size(before, server_metrics.scrape(metrics_url))
        runs.append(run)
    return runs


def offline_batch_size(run: dict) -> Optional[int]:
    """The largest batch the server can form at a closed-loop level: min(concurrency x images, max batch)."""
    if run["mode"] != "concurrency" or not run.get("max_batch_size"):
        return None
    return min(run["concurrency"] * run["images_per_request"], run["max_batch_size"])


def add_efficiency(runs: List[dict], offline: List[dict]) -> None:
    """Sets each closed-loop run's offline_batch_size and efficiency (server img/s / offline img/s)."""
    by_batch = {entry["batch_size"]: entry["throughput_ips"] for entry in offline}
    for run in runs:
        batch = offline_batch_size(run)
        run["offline_batch_size"] = batch
        offline_ips = by_batch.get(batch)
        run["efficiency"] = round(run["throughput_ips"] / offline_ips, 3) if offline_ips else None
