"""The bad-input check: every corpus case gets its documented status, health stays SERVING, RSS stays flat.

The corpus is sent `rounds` times, one request at a time, with a health check after each. RSS is
read after every round and compared between the end of the warm-up rounds and the end of the
last one: a leak of anything image-sized per request shows as growth over the later rounds.
Warm-up matters: glibc keeps freed large blocks once its dynamic mmap threshold has risen to
their size (up to 32 MiB; the 1 x 8000 strip resizes to a 31 MB array), so RSS steps up by a
few such blocks in the first rounds, then stays flat (measured: +54 MiB after 3 strips, +0.3 MiB
over the next 27).
"""
import logging
from typing import Dict, List, Sequence, Tuple

from clients.client import ClassifierClient, ClientError
from clients.stress.corpus import Case, expected_predictions
from clients.stress.probe import MIB, health_status, rss_bytes
from clients.stress.results import CheckResult

logger = logging.getLogger(__name__)

WARMUP_ROUNDS = 2
RSS_GROWTH_BOUND_MIB = 32
"""Allowed RSS growth from the end of the warm-up rounds to the end of the last round."""


def send_case(client: ClassifierClient, case: Case, num_classes: int) -> Tuple[str, str]:
    """Sends one case; returns (status code name, details or a description of a wrong answer)."""
    request = case.request
    try:
        result = client.classify(list(request.images), top_k=request.top_k, model_version=request.model_version)
    except ClientError as error:
        return error.code.name, error.details
    want = expected_predictions(request, num_classes)
    counts = [len(predictions) for predictions in result.predictions]
    if counts != [want] * len(request.images):
        return "OK", (f"wrong answer: {len(counts)} results with {counts} predictions, "
                      f"expected {len(request.images)} x {want}")
    return "OK", ""


def check_outcome(case: Case, code: str, details: str) -> List[str]:
    """What is wrong with a case's outcome (empty when it is as documented)."""
    problems = []
    if code not in case.expected:
        problems.append(f"{case.name}: got {code} ({details[:120]}), documented {'/'.join(case.expected)}")
    elif code == "OK" and details:
        problems.append(f"{case.name}: {details}")
    elif code != "OK" and case.detail and case.detail not in details:
        problems.append(f"{case.name}: {code} details {details[:120]!r} lack {case.detail!r}")
    return problems


def run_bad_inputs(client: ClassifierClient, target: str, pid: int, cases: Sequence[Case], rounds: int,
                   num_classes: int, name: str = "bad-inputs") -> CheckResult:
    """Sends the corpus rounds times and checks statuses, health after each case, and RSS growth.

    `client` may speak any protocol (clients.kserve): its errors carry the gRPC code the server maps them to.
    """
    result = CheckResult(name, bad_inputs=len(cases))
    seen: Dict[str, Dict[str, int]] = {case.name: {} for case in cases}
    rss_after_round: List[int] = []
    for round_index in range(rounds):
        for case in cases:
            code, details = send_case(client, case, num_classes)
            seen[case.name][code] = seen[case.name].get(code, 0) + 1
            result.requests += 1
            problems = check_outcome(case, code, details)
            result.lost += bool(problems)
            if problems and not any(failure.startswith(f"{case.name}:") for failure in result.failures):
                result.failures.extend(problems)  # once per case, not once per round
            health = health_status(target)
            result.require(health == "SERVING", f"health {health} after {case.name!r}")
            if health != "SERVING":
                return _finish(result, seen, rss_after_round, rounds)
        rss_after_round.append(rss_bytes(pid))
        logger.info("bad inputs: round %d/%d done, RSS %.1f MiB", round_index + 1, rounds,
                    rss_after_round[-1] / MIB)
    return _finish(result, seen, rss_after_round, rounds)


def _finish(result: CheckResult, seen, rss_after_round: List[int], rounds: int) -> CheckResult:
    measured = len(rss_after_round) > WARMUP_ROUNDS
    growth_mib = (rss_after_round[-1] - rss_after_round[WARMUP_ROUNDS - 1]) / MIB if measured else 0.0
    result.require(measured or bool(result.failures),
                   f"RSS not compared: {rounds} rounds, {WARMUP_ROUNDS} of them warm-up")
    result.require(growth_mib <= RSS_GROWTH_BOUND_MIB,
                   f"RSS grew {growth_mib:.1f} MiB over rounds {WARMUP_ROUNDS + 1}..{rounds} "
                   f"(bound {RSS_GROWTH_BOUND_MIB} MiB)")
    result.faults = result.requests
    result.details = {"rounds": rounds, "cases": seen,
                      "rss_mib_after_round": [round(value / MIB, 1) for value in rss_after_round],
                      "rss_growth_mib": round(growth_mib, 1), "rss_growth_bound_mib": RSS_GROWTH_BOUND_MIB,
                      "warmup_rounds": WARMUP_ROUNDS}
    result.summary = (f"{result.bad_inputs} inputs x {len(rss_after_round)} rounds, statuses as documented: "
                      f"{'no' if result.lost else 'yes'}, health SERVING after each, "
                      f"RSS {growth_mib:+.1f} MiB after the {WARMUP_ROUNDS} warm-up rounds "
                      f"(bound {RSS_GROWTH_BOUND_MIB} MiB)")
    return result
