"""Capacity, then overload at a multiple of it: fast rejections, bounded accepted latency and memory.

Capacity is the request rate of a short closed loop that keeps half the queue busy (it can never
be rejected: the images in flight stay under --max-queue-size), from the calls that end in its window
or, for a model too slow for that (the reference network at 224 px), over the whole run. The overload
is an open loop at `factor` times that rate. Every call must end OK or RESOURCE_EXHAUSTED (queue
full), or be refused by HTTP/2 before admission (REFUSED_STREAM: more than --max-concurrent-rpcs in
flight on a connection, seen when a loaded machine slows the rejections down). Latencies run from
handing the call to gRPC to its answer, so a client falling behind its schedule on this shared
machine does not count against the server.

Latency bounds (the issue's, with margins for a noisy 2-core machine shared with other work; the full
suite judges them, the quick one in CI reports them):
- rejections: p99 <= REJECTION_P99_BOUND_MS. A rejection is decided before any decoding: the median
  is a few ms here (4-7 ms measured), the p99 13-70 ms in steady runs at load average 5, because
  client, event loop, preprocessing and inference threads share 2 cores and the server's GIL; while
  other jobs take the CPU, RPCs wait inside gRPC before the admission check (one 60 s run: p99
  841 ms). A rejection that waited for the queue would take about queue / throughput (~0.5 s here).
- accepted: p99 <= ACCEPTED_FACTOR * queue / throughput + ACCEPTED_MARGIN_S, where queue is
  --max-queue-size in images and throughput the accepted images/s during the overload: an admitted
  image waits at most for the queue ahead of it to drain; the margin covers its own decode,
  batch delay and inference.
- memory: RSS peak during the overload <= RSS before + RSS_GROWTH_BOUND_MIB (the queue is bounded).
"""
from typing import List, Optional, Sequence

from clients.benchmark.load import Record, run_closed_loop, run_open_loop
from clients.benchmark.stats import summarise
from clients.client import ClassifierClient
from clients.stress.probe import MIB, RssSampler, health_status, rss_bytes
from clients.stress.results import (CheckResult, codes, disallowed, examples, in_window, is_refused_stream,
                                    reply_latency_ms)
from genet.v1 import classifier_pb2

REJECTION_P99_BOUND_MS = 250.0
ACCEPTED_FACTOR = 2.0
ACCEPTED_MARGIN_S = 1.0
RSS_GROWTH_BOUND_MIB = 128
TIMEOUT_S = 30.0
WARMUP_S = 1.0


class CapacityUnknown(RuntimeError):
    """No call of the capacity measurement succeeded: the load cannot be sized."""


def measure_capacity(client: ClassifierClient, requests: Sequence[classifier_pb2.ClassifyRequest],
                     concurrency: int, duration_s: float) -> dict:
    """Throughput of a closed loop at concurrency (requests/s, images/s) and its errors.

    Counted over the calls that end in the window; where fewer than `concurrency` do (a slow model: a
    request of 32 images takes seconds on the reference network at 224 px), over every successful call
    of the run, warm-up and those ending after the window included, from the first start to the last
    end: the loop keeps the server busy all that time. `capacity_from` says which ("window" or "run").
    """
    measurement = run_closed_loop(client, requests, concurrency, WARMUP_S, duration_s, TIMEOUT_S)
    summary = summarise(measurement)
    summary.update(concurrency=concurrency, unfinished=measurement.unfinished, capacity_from="window")
    if summary["throughput_rps"] * summary["duration_s"] >= concurrency:
        return summary
    succeeded = [record for record in measurement.records if record.code == "OK"]
    if not succeeded:
        raise CapacityUnknown(f"no call succeeded at concurrency {concurrency} (errors: {summary['errors']}, "
                              f"unfinished: {measurement.unfinished}): the load cannot be sized")
    span_s = max(record.end for record in succeeded) - min(record.start for record in succeeded)
    summary.update(throughput_rps=round(len(succeeded) / span_s, 3), capacity_from="run",
                   throughput_ips=round(sum(record.images for record in succeeded) / span_s, 3))
    return summary


def run_overload(client: ClassifierClient, target: str, pid: int,
                 requests: Sequence[classifier_pb2.ClassifyRequest], capacity: dict, queue_images: int,
                 factor: float, duration_s: float, name: str = "overload") -> CheckResult:
    """Open loop at factor x capacity for duration_s; checks statuses, latency bounds, RSS and health after.

    `client` may speak any protocol (clients.kserve): a full queue is RESOURCE_EXHAUSTED (HTTP 429) for all.
    """
    rate = factor * capacity["throughput_rps"]
    rss_before = rss_bytes(pid)
    with RssSampler(pid) as rss:
        measurement = run_open_loop(client, requests, rate, WARMUP_S, duration_s, TIMEOUT_S)
    health_after = health_status(target, timeout_s=1.0)
    window = in_window(measurement)
    accepted_ips = summarise(measurement)["throughput_ips"]
    result = CheckResult(name, faults=1)
    result.requests = len(measurement.records) + measurement.unfinished
    bad = [r for r in disallowed(measurement, ("OK", "RESOURCE_EXHAUSTED")) if not is_refused_stream(r)]
    result.lost = len(bad) + measurement.unfinished + capacity["unfinished"] + sum(capacity["errors"].values())
    result.load = {"rate": round(rate, 1), "duration_s": duration_s,
                   "achieved_rps": round(len(window) / duration_s, 1)}
    result.require(result.lost == 0, f"{result.lost} calls lost or failed other than RESOURCE_EXHAUSTED or a "
                                     f"refused stream: {examples(bad) or capacity['errors']}")
    bound_s = ACCEPTED_FACTOR * queue_images / accepted_ips + ACCEPTED_MARGIN_S if accepted_ips else None
    latency = _judge_latency(result, window, bound_s)
    growth_mib = (rss.peak - rss_before) / MIB
    result.require(growth_mib <= RSS_GROWTH_BOUND_MIB,
                   f"RSS grew {growth_mib:.1f} MiB (bound {RSS_GROWTH_BOUND_MIB} MiB)")
    result.require(health_after == "SERVING", f"health {health_after} right after the overload")
    result.details = {"capacity": capacity, "factor": factor, "queue_images": queue_images,
                      "codes": codes(measurement.records),
                      "refused_streams": sum(map(is_refused_stream, measurement.records)),
                      "unfinished": measurement.unfinished,
                      "accepted_images_per_s": accepted_ips, "latency_ms": latency,
                      "accepted_p99_bound_ms": round(bound_s * 1000, 1) if bound_s else None,
                      "rejection_p99_bound_ms": REJECTION_P99_BOUND_MS,
                      "rss_before_mib": round(rss_before / MIB, 1), "rss_peak_mib": round(rss.peak / MIB, 1),
                      "rss_growth_bound_mib": RSS_GROWTH_BOUND_MIB, "health_after": health_after}
    rejected_share = latency["rejected"]["count"] / max(len(window), 1)
    result.summary = (f"{rate:.1f} req/s = {factor:g} x capacity {capacity['throughput_rps']:.1f} req/s for "
                      f"{duration_s:g} s: {rejected_share:.0%} rejected, rejection p99 {latency['rejected']['p99']} ms "
                      f"(bound {REJECTION_P99_BOUND_MS:g}); accepted p99 {latency['accepted']['p99']} ms "
                      f"(bound {result.details['accepted_p99_bound_ms']}); RSS {growth_mib:+.1f} MiB; "
                      f"then {health_after}")
    return result


def _judge_latency(result: CheckResult, window: List[Record], bound_s: Optional[float]) -> dict:
    """Reply latencies of accepted and rejected calls in the window, checked against their bounds."""
    accepted = [r for r in window if r.code == "OK"]
    rejected = [r for r in window if r.code == "RESOURCE_EXHAUSTED"]
    result.require(bool(rejected), "no call was rejected: the load never exceeded the queue")
    result.require(bool(accepted), "no call was accepted during the overload")
    latency = {"accepted": dict(reply_latency_ms(accepted), count=len(accepted)),
               "rejected": dict(reply_latency_ms(rejected), count=len(rejected))}
    p99_rejected, p99_accepted = latency["rejected"]["p99"], latency["accepted"]["p99"]
    if p99_rejected is not None:
        result.bound(p99_rejected <= REJECTION_P99_BOUND_MS, f"rejection p99 {p99_rejected:.1f} ms > "
                                                               f"{REJECTION_P99_BOUND_MS:g} ms")
    if p99_accepted is not None and bound_s is not None:
        result.bound(p99_accepted <= bound_s * 1000, f"accepted p99 {p99_accepted:.0f} ms > bound "
                                                       f"{bound_s * 1000:.0f} ms")
    return latency
