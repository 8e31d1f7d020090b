"""Summaries of measured calls: throughput, latency percentiles and errors by status code."""
from collections import Counter

from clients.benchmark.load import Measurement
from latency import latency_summary


def summarise(measurement: Measurement) -> dict:
    """Throughput and latency of the calls in the measurement window, errors by status code.

    Throughput counts the images of successful calls that ended inside the window, divided by
    its length. Latency and errors cover the calls started (or due) inside the window, so the
    slow tail of the last calls is kept; latency is taken over successful calls only.
    """
    duration = measurement.window_end - measurement.window_start
    started = [r for r in measurement.records if measurement.window_start <= r.start < measurement.window_end]
    ended_ok = [
        r for r in measurement.records
        if r.code == "OK" and measurement.window_start <= r.end <= measurement.window_end
    ]
    latencies = [(r.end - r.start) * 1000.0 for r in started if r.code == "OK"]
    errors = Counter(r.code for r in started if r.code != "OK")
    return {
        "throughput_ips": round(sum(r.images for r in ended_ok) / duration, 3),
        "throughput_rps": round(len(ended_ok) / duration, 3),
        "latency_ms": latency_summary(latencies),
        "requests": len(started),
        "successful": len(latencies),
        "errors": dict(sorted(errors.items())),
        "duration_s": round(duration, 3),
    }
