"""SIGTERM under load: every call the server admitted is answered OK, and it exits 0 within its grace period
and soon after the last of those answers (nothing else may hold the exit once the drain is done).

An open loop keeps the queue busy; SIGTERM arrives in the middle. A call may be refused at
admission - RESOURCE_EXHAUSTED (queue full), or UNAVAILABLE because the server is draining or no
longer listening (the REFUSALS below: messages of serving's admission, and of gRPC failing a call
before it had a connection to send it on - the port was closed, or the connection the channel held
was reset when the server exited). Any other outcome of a call is a lost call: notably UNAVAILABLE
from a connection that broke while the call was inside the server, DEADLINE_EXCEEDED or no answer.

One exception, reported apart: a call sent after SIGTERM that gRPC answers CANCELLED within the
grace period. grpc.aio cancels calls that reach the server in the moment it stops accepting; the
server stops its listeners only after the drain (calls arriving while it drains are refused with
UNAVAILABLE), so such a call was sent at least the drain's length after SIGTERM and never reached
the handler - an admitted call is finished or, after the grace period only, cancelled.
serving/README.md documents UNAVAILABLE for a shutting-down server, so these are counted as
`cancelled_at_stop` and shown in the summary.
"""
import threading
import time
from typing import Callable, Sequence, Tuple

from clients.benchmark.load import Measurement, Record, run_open_loop
from clients.client import ClassifierClient
from clients.stress.results import CheckResult, codes, examples
from genet.v1 import classifier_pb2

REFUSALS = ("shutting down", "not ready", "failed to connect", "connection refused",
            "connections to all backends failing")
"""Substrings (lower case) of UNAVAILABLE details that mean the call was refused before admission (the
last: gRPC's load balancing found no ready connection for the call, so it was never sent)."""
TIMEOUT_S = 60.0
EXIT_MARGIN_S = 5.0
"""Allowed beyond the grace period for interpreter and runtime teardown after the drain."""
EXIT_AFTER_LAST_ANSWER_S = 5.0
"""Allowed between the last admitted call's answer and the exit: closing the workers and the ports. (An idle
client connection that held the exit would take the rest of the grace period.)"""


def is_refused(record: Record) -> bool:
    """True for a call rejected at admission, before the server took it on."""
    if record.code == "RESOURCE_EXHAUSTED":
        return True
    details = record.details.lower()
    return record.code == "UNAVAILABLE" and any(text in details for text in REFUSALS)


def is_cancelled_at_stop(record: Record, signalled: float, grace_period_s: float) -> bool:
    """True for a call sent after SIGTERM that gRPC cancelled within the grace period (never admitted)."""
    return record.code == "CANCELLED" and signalled < record.sent and record.end < signalled + grace_period_s


def _relative(record: Record, signalled: float) -> dict:
    """A lost call with its send and answer times in ms relative to SIGTERM."""
    return {"code": record.code, "details": record.details[:200], "sent_ms": round((record.sent - signalled) * 1000, 1),
            "answered_ms": round((record.end - signalled) * 1000, 1)}


def _load_and_signal(client, requests, rate: float, stop_server: Callable[[], int], before_s: float,
                     after_s: float) -> Tuple[Measurement, float, int, float]:
    """Runs the open loop, calls stop_server() after before_s; (measurement, SIGTERM time, exit status, exit s)."""
    outcome = {}
    loader = threading.Thread(target=lambda: outcome.setdefault("m", run_open_loop(
        client, requests, rate, 0.0, before_s + after_s, TIMEOUT_S)), name="sigterm-load")
    loader.start()
    time.sleep(before_s)
    signalled = time.monotonic()
    exit_status = stop_server()
    exit_s = time.monotonic() - signalled
    loader.join()
    return outcome["m"], signalled, exit_status, exit_s


def run_sigterm(client: ClassifierClient, requests: Sequence[classifier_pb2.ClassifyRequest], rate: float,
                stop_server: Callable[[], int], grace_period_s: float, before_s: float, after_s: float,
                name: str = "sigterm") -> CheckResult:
    """Open loop at rate; SIGTERM (stop_server) after before_s; the load goes on for after_s more.

    `client` may send over a stream (clients.streaming): a stream answers what it has read and then ends
    with UNAVAILABLE "shutting down", which its unanswered requests get, so they count as refused."""
    measurement, signalled, exit_status, exit_s = _load_and_signal(client, requests, rate, stop_server, before_s,
                                                                   after_s)
    records = measurement.records
    at_stop = [r for r in records if is_cancelled_at_stop(r, signalled, grace_period_s)]
    lost = [r for r in records if r.code not in ("OK", "CANCELLED") and not is_refused(r)]
    lost += [r for r in records if r.code == "CANCELLED" and not is_cancelled_at_stop(r, signalled, grace_period_s)]
    in_flight = [r for r in records if r.code == "OK" and r.sent < signalled < r.end]
    last_answer = max((r.end for r in records if r.code == "OK" and r.end > signalled), default=signalled)
    exit_after_answers_s = signalled + exit_s - last_answer
    result = CheckResult(name, faults=1, requests=len(records) + measurement.unfinished,
                         lost=len(lost) + measurement.unfinished)
    result.load = {"rate": round(rate, 1), "duration_s": before_s + after_s,
                   "achieved_rps": round(result.requests / (before_s + after_s), 1)}
    result.require(result.lost == 0, f"{result.lost} admitted calls lost: {examples(lost)}")
    result.require(exit_status == 0, f"exit status {exit_status} after SIGTERM")
    result.require(exit_s <= grace_period_s + EXIT_MARGIN_S, f"exit took {exit_s:.1f} s, grace period "
                                                             f"{grace_period_s:g} s")
    result.require(exit_after_answers_s <= EXIT_AFTER_LAST_ANSWER_S,
                   f"exit came {exit_after_answers_s:.1f} s after the last admitted call's answer "
                   f"(at most {EXIT_AFTER_LAST_ANSWER_S:g} s)")
    result.require(bool(in_flight), "no call was in flight at SIGTERM: nothing was tested")
    refused = [r for r in records if is_refused(r)]
    result.details = {"codes": codes(records), "in_flight_at_sigterm": len(in_flight), "refused": len(refused),
                      "unfinished": measurement.unfinished, "exit_status": exit_status, "exit_s": round(exit_s, 2),
                      "exit_after_last_answer_s": round(exit_after_answers_s, 2),
                      "grace_period_s": grace_period_s,
                      "refusal_details": sorted({r.details for r in refused})[:10],
                      "cancelled_at_stop": [_relative(r, signalled) for r in at_stop[:10]],
                      "lost_calls": [_relative(r, signalled) for r in lost[:10]]}
    result.summary = (f"{rate:.1f} req/s, SIGTERM after {before_s:g} s: {len(in_flight)} calls in flight all OK, "
                      f"{len(refused)} refused at admission, {result.lost} lost; exit {exit_status} "
                      f"after {exit_s:.1f} s (grace {grace_period_s:g} s); "
                      f"CANCELLED instead of UNAVAILABLE at stop: {len(at_stop)}")
    return result
