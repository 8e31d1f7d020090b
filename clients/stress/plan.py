"""How long and how hard the suite pushes: the full plan (`make stress`) and the quick one (CI)."""
from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    """Sizes and durations of every check."""

    corpus_rounds: int
    """Times the whole bad-input corpus is sent (RSS is compared after the 2 warm-up rounds and the last)."""
    capacity_s: float
    """Measured seconds of the closed loop that finds the server's capacity."""
    overload_s: float
    """Measured seconds of the overload."""
    overload_factor: float
    """Overload rate as a multiple of the capacity."""
    reload_s: float
    """Seconds of load around the hot reload."""
    sigterm_before_s: float
    """Seconds of load before SIGTERM."""
    sigterm_after_s: float
    """Seconds the load goes on after SIGTERM (against a draining, then closed server)."""
    sigterm_factor: float
    """Load rate during the SIGTERM check as a multiple of the capacity (above 1: the queue stays full)."""
    flood_compare: bool
    """Also flood a server without an effective --max-concurrent-rpcs, for the report (one more server start)."""
    worker_fault_s: float
    """Seconds of load around each worker fault (kill -9, hang)."""
    train_per_class: int
    """Fashion-MNIST training images per class of the tiny run killed with SIGKILL."""
    train_epochs: int
    """Epochs of the tiny run."""
    judge_latency: bool
    """Whether missed latency bounds fail a check. The quick form runs in CI beside the test suite on the
    same cores, where latency says more about the neighbours than the server: it reports them only."""


FULL = Plan(corpus_rounds=10, capacity_s=10.0, overload_s=30.0, overload_factor=4.0, reload_s=20.0,
            sigterm_before_s=5.0, sigterm_after_s=3.0, sigterm_factor=1.5, flood_compare=True,
            worker_fault_s=6.0, train_per_class=48, train_epochs=4, judge_latency=True)
QUICK = Plan(corpus_rounds=4, capacity_s=3.0, overload_s=8.0, overload_factor=4.0, reload_s=8.0,
             sigterm_before_s=2.0, sigterm_after_s=2.0, sigterm_factor=1.5, flood_compare=False,
             worker_fault_s=3.0, train_per_class=32, train_epochs=3, judge_latency=False)
