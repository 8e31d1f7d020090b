"""Cancelled and expired calls are dropped before compute, as the server's metrics show.

Runs against a server whose batches wait CANCEL_SERVER_OPTIONS' long delay for company even when the
inference slot is idle (`--wait-when-idle`; by default an idle server starts a batch at once), so every
call sits in the batch queue for seconds: calls with a short deadline expire there, and calls on
a second channel are cancelled by closing it. One live call rides along in the same queue. The
counters must then say exactly that: genet_dropped_images_total{reason=expired|cancelled} grew by
the images of those calls, and the inference counters (genet_batch_size) grew by the live image
only - the cancelled work was never computed.
"""
import threading
import time
from typing import Dict, List

from clients.benchmark import server_metrics
from clients.client import ClassifierClient, RetryPolicy
from clients.stress.results import CheckResult
from genet.v1 import classifier_pb2

BATCH_DELAY_MS = 4000
CANCEL_SERVER_OPTIONS = ("--max-batch-size", "64", "--max-queue-delay-ms", str(BATCH_DELAY_MS),
                         "--max-queue-size", "64", "--max-images-per-request", "16", "--wait-when-idle")
"""Options of the server this check runs against: one batch collects for 4 s."""
CALLS_PER_GROUP = 6
IMAGES_PER_CALL = 2
EXPIRE_AFTER_S = 1.0
CANCEL_AFTER_S = 1.0


class _Outcomes:
    """Status names of finished calls by group, and an event set when all expected calls finished."""

    def __init__(self, expected: int):
        self.by_group: Dict[str, List[str]] = {}
        self._expected = expected
        self._lock = threading.Lock()
        self.all_done = threading.Event()

    def callback(self, group: str):
        """A ResultCallback recording the outcome under group."""
        def done(_result, error):
            with self._lock:
                self.by_group.setdefault(group, []).append("OK" if error is None else error.code.name)
                if sum(map(len, self.by_group.values())) == self._expected:
                    self.all_done.set()
        return done


def _send_groups(target: str, image: bytes, outcomes: _Outcomes) -> None:
    """Sends the expiring, the cancelled and the live calls, then cancels the cancelled ones."""
    request = classifier_pb2.ClassifyRequest(images=[image] * IMAGES_PER_CALL)
    once = RetryPolicy(max_attempts=1)
    with ClassifierClient(target, retry=once) as client, ClassifierClient(target, retry=once) as doomed:
        for _ in range(CALLS_PER_GROUP):
            client.async_classify(request, outcomes.callback("expiring"), timeout_s=EXPIRE_AFTER_S)
            doomed.async_classify(request, outcomes.callback("cancelled"), timeout_s=60.0)
        client.async_classify(classifier_pb2.ClassifyRequest(images=[image]), outcomes.callback("live"), 60.0)
        time.sleep(CANCEL_AFTER_S)
        doomed.close()  # cancels every call in flight on that channel
        outcomes.all_done.wait(BATCH_DELAY_MS / 1000 + 30.0)


def run_cancellation(target: str, metrics_url: str, image: bytes) -> CheckResult:
    """Expired and cancelled calls are dropped, counted, and not computed; the live call is answered."""
    result = CheckResult("cancellation")
    outcomes = _Outcomes(2 * CALLS_PER_GROUP + 1)
    before = server_metrics.scrape(metrics_url)
    _send_groups(target, image, outcomes)
    after = server_metrics.scrape(metrics_url)
    dropped = {reason: server_metrics.delta(before, after, "genet_dropped_images_total", reason=reason)
               for reason in ("expired", "cancelled")}
    computed = server_metrics.delta(before, after, "genet_batch_size_sum")
    doomed_images = CALLS_PER_GROUP * IMAGES_PER_CALL
    groups = outcomes.by_group
    result.requests = 2 * CALLS_PER_GROUP + 1
    unanswered = result.requests - sum(map(len, groups.values()))
    result.lost = unanswered + (groups.get("live") != ["OK"])
    result.require(unanswered == 0, f"{unanswered} calls got no answer")
    result.require(groups.get("live") == ["OK"], f"the live call got {groups.get('live')}")
    result.require(groups.get("expiring") == ["DEADLINE_EXCEEDED"] * CALLS_PER_GROUP,
                   f"expiring calls got {groups.get('expiring')}")
    result.require(groups.get("cancelled") == ["CANCELLED"] * CALLS_PER_GROUP,
                   f"cancelled calls got {groups.get('cancelled')}")
    for reason, count in dropped.items():
        result.require(count == doomed_images,
                       f"dropped_images{{reason={reason}}} grew by {count:g}, expected {doomed_images}")
    result.require(computed == 1, f"{computed:g} images were computed, expected only the live one")
    result.faults = 2 * CALLS_PER_GROUP
    result.details = {"dropped_images": dropped, "images_computed": computed, "outcomes": groups,
                      "doomed_images_per_group": doomed_images, "batch_delay_ms": BATCH_DELAY_MS}
    result.summary = (f"{CALLS_PER_GROUP} calls expired after {EXPIRE_AFTER_S:g} s, "
                      f"{CALLS_PER_GROUP} cancelled after {CANCEL_AFTER_S:g} s while queued: "
                      f"dropped expired {dropped['expired']:g} / cancelled {dropped['cancelled']:g} images "
                      f"(of {doomed_images} each), computed {computed:g} (the live call only)")
    return result
