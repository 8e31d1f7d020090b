"""Reads a server's Prometheus /metrics: request counts, the batches it actually ran, its CPU time."""
import urllib.request
from typing import Dict, Optional, Tuple

from prometheus_client.parser import text_string_to_metric_families

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def scrape(metrics_url: str, timeout_s: float = 5.0) -> Samples:
    """Every sample of the endpoint, keyed by (sample name, sorted label pairs)."""
    with urllib.request.urlopen(metrics_url, timeout=timeout_s) as reply:
        text = reply.read().decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The value of one sample, 0 when the server has not exported it yet."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much one sample grew between two scrapes (a counter's increase)."""
    return value(after, name, **labels) - value(before, name, **labels)


def histogram_mean(before: Samples, after: Samples, histogram: str) -> Optional[float]:
    """The mean of what a histogram observed between two scrapes, None when it observed nothing: with
    genet_batch_size the mean images per inference batch, with genet_batches_in_flight the mean batches
    computing when one starts (1.0: the workers take turns)."""
    count = delta(before, after, f"{histogram}_count")
    total = delta(before, after, f"{histogram}_sum")
    return round(total / count, 3) if count > 0 else None


def cpu_seconds(before: Samples, after: Samples) -> Optional[float]:
    """CPU seconds (user + system) the server process spent between two scrapes; None if not exported."""
    key = ("process_cpu_seconds_total", ())
    if key not in before or key not in after:
        return None
    return after[key] - before[key]
