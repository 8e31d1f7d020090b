"""Latency percentiles as reported everywhere: p50/p90/p95/p99/max and mean, in ms.

Shared by the clients and the offline baseline (serving.offline), whose JSON the benchmark reports
beside its own; numpy only, Python 3.7 compatible (the baseline runs in .venv-lite too).
"""
from typing import Dict, Optional, Sequence

import numpy as np

PERCENTILES = (50, 90, 95, 99)


def latency_summary(latencies_ms: Sequence[float]) -> Dict[str, Optional[float]]:
    """p50/p90/p95/p99/max and mean of latencies in ms (None each when there are none)."""
    keys = [f"p{p}" for p in PERCENTILES] + ["max", "mean"]
    if len(latencies_ms) == 0:
        return dict.fromkeys(keys)
    values = np.asarray(latencies_ms, dtype=np.float64)
    numbers = list(np.percentile(values, PERCENTILES)) + [values.max(), values.mean()]
    return {key: round(float(number), 3) for key, number in zip(keys, numbers)}
