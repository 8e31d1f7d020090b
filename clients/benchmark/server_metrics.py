"""Reads a server's Prometheus /metrics: request counts, the batch sizes it actually ran, its CPU time."""
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


def mean_batch_size(before: Samples, after: Samples) -> Optional[float]:
    """Mean images per inference batch between two scrapes, None when no batch ran."""
    batches = delta(before, after, "genet_batch_size_count")
    images = delta(before, after, "genet_batch_size_sum")
    return round(images / batches, 3) if batches > 0 else None


def cpu_seconds(before: Samples, after: Samples) -> Optional[float]:
    """CPU seconds (user + system) the server process spent between two scrapes; None if not exported."""
    key = ("process_cpu_seconds_total", ())
    if key not in before or key not in after:
        return None
    return after[key] - before[key]
