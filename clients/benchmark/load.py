"""Load generation: a closed loop at fixed concurrency and an open loop at a fixed request rate.

Both send prepared requests with ClassifierClient.async_classify (one attempt, no retries) and
record every call's start, end and status. In the open loop a call's start is the time it was
due to be sent, so latency includes any delay in sending it: queueing is not hidden.
"""
import itertools
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

from clients.client import ClassifierClient
from genet.v1 import classifier_pb2


@dataclass(frozen=True)
class Record:
    """One finished call: monotonic start (or due time) and end, images sent, status code name.

    sent is when the call was handed to gRPC (later than start when an open loop falls behind
    its schedule); details is the error message ("" for OK).
    """

    start: float
    end: float
    images: int
    code: str
    sent: float
    details: str


@dataclass
class Measurement:
    """The records of one load level and its measurement window (after warm-up)."""

    records: List[Record]
    window_start: float
    window_end: float
    unfinished: int
    """Calls sent whose outcome had not arrived when the wait for them timed out."""


class _Collector:
    """Thread-safe record list that knows when every call sent has finished."""

    def __init__(self):
        self.records: List[Record] = []
        self._lock = threading.Lock()
        self._outstanding = 0
        self._sending_done = False
        self._finished = threading.Event()

    def sent(self) -> None:
        """Counts a call sent."""
        with self._lock:
            self._outstanding += 1

    def finish(self, record: Record) -> None:
        """Stores the record of a finished call."""
        with self._lock:
            self.records.append(record)
            self._outstanding -= 1
            if self._sending_done and self._outstanding == 0:
                self._finished.set()

    def stop_sending(self) -> None:
        """Marks the end of sending: wait() returns once the calls in flight finish."""
        with self._lock:
            self._sending_done = True
            if self._outstanding == 0:
                self._finished.set()

    def outcome(self) -> Tuple[List[Record], int]:
        """The records so far and the number of calls sent but not finished, taken together."""
        with self._lock:
            return list(self.records), self._outstanding

    def wait(self, timeout_s: float) -> bool:
        """Waits for every call sent to finish; False on timeout."""
        return self._finished.wait(timeout_s)

    def snapshot(self, since: float) -> List[Record]:
        """The records that ended after since (for the progress line)."""
        with self._lock:
            return [r for r in self.records if r.end >= since]


ProgressCallback = Callable[[List[Record], float], None]


def _send(client, request, collector: _Collector, start: float, timeout_s: float, on_done=None) -> None:
    """Sends request; the callback records the outcome, then calls on_done()."""
    images = len(request.images)
    sent = time.monotonic()

    def done(_result, error):
        end = time.monotonic()
        code, details = ("OK", "") if error is None else (error.code.name, error.details)
        collector.finish(Record(start, end, images, code, sent, details))
        if on_done is not None:
            on_done()

    collector.sent()
    client.async_classify(request, done, timeout_s)


def run_closed_loop(
    client: ClassifierClient,
    requests: Sequence[classifier_pb2.ClassifyRequest],
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    timeout_s: float,
    progress: Optional[ProgressCallback] = None,
) -> Measurement:
    """Keeps concurrency calls in flight for warmup_s + duration_s: a finished call frees a slot for the next."""
    slots = threading.BoundedSemaphore(concurrency)

    def send_all(collector, window_end):
        for request in itertools.cycle(requests):
            while not slots.acquire(timeout=0.1):
                if time.monotonic() >= window_end:
                    return
            if time.monotonic() >= window_end:
                slots.release()
                return
            _send(client, request, collector, time.monotonic(), timeout_s, slots.release)

    return _measure(send_all, warmup_s, duration_s, timeout_s, progress)


def run_open_loop(
    client: ClassifierClient,
    requests: Sequence[classifier_pb2.ClassifyRequest],
    rate: float,
    warmup_s: float,
    duration_s: float,
    timeout_s: float,
    progress: Optional[ProgressCallback] = None,
) -> Measurement:
    """Sends rate calls per second on a fixed schedule for warmup_s + duration_s, whatever the replies."""
    if rate <= 0:
        raise ValueError(f"an open loop needs a positive rate, not {rate}")

    def send_all(collector, window_end):
        first_due = time.monotonic()
        for index, request in enumerate(itertools.cycle(requests)):
            due = first_due + index / rate
            if due >= window_end:
                return
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            _send(client, request, collector, due, timeout_s)

    return _measure(send_all, warmup_s, duration_s, timeout_s, progress)


def _measure(send_all, warmup_s, duration_s, timeout_s, progress) -> Measurement:
    """Runs send_all(collector, window_end) with a progress ticker, then waits for the calls in flight."""
    collector = _Collector()
    window_start = time.monotonic() + warmup_s
    window_end = window_start + duration_s
    ticker = threading.Thread(
        target=_wait_for_window, args=(collector, window_start, window_end, progress), daemon=True
    )
    ticker.start()
    send_all(collector, window_end)
    ticker.join()
    collector.stop_sending()
    collector.wait(timeout_s + 5.0)
    records, unfinished = collector.outcome()
    return Measurement(records, window_start, window_end, unfinished)


def _wait_for_window(collector: _Collector, window_start: float, window_end: float, progress) -> None:
    """Sleeps until window_end, reporting the records of the window every half second."""
    while True:
        now = time.monotonic()
        if now >= window_end:
            break
        time.sleep(min(0.5, window_end - now))
        if progress is not None and time.monotonic() > window_start:
            progress(collector.snapshot(window_start), time.monotonic() - window_start)
