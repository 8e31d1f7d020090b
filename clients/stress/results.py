"""What a check found: pass/fail with reasons, counts for the summary table, and call outcome helpers."""
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

from clients.benchmark.load import Measurement, Record
from latency import latency_summary

REFUSED_STREAM = "RST_STREAM with error code 7"


@dataclass
class CheckResult:
    """The outcome of one check of the suite."""

    name: str
    summary: str = ""
    """One line for the table."""
    failures: List[str] = field(default_factory=list)
    """Why the check failed; empty when it passed."""
    skipped: Optional[str] = None
    """Why the check did not run (then it neither passes nor fails)."""
    requests: int = 0
    """Calls sent by the check."""
    lost: int = 0
    """Calls without an answer, or with a status the check does not allow."""
    faults: int = 0
    """Faults injected that the system survived (counted only when the check passed)."""
    bad_inputs: int = 0
    """Distinct malformed inputs tried."""
    load: Optional[dict] = None
    """The load held: rate (or concurrency), duration_s, achieved_rps."""
    details: Dict = field(default_factory=dict)
    """Everything measured, for the JSON report."""
    missed_bounds: List[str] = field(default_factory=list)
    """Latency bounds the check missed: failures when judge_latency is set, notes otherwise."""
    judge_latency: bool = True
    """Whether a missed latency bound fails the check (the full suite) or is only reported (the quick one)."""

    @property
    def passed(self) -> bool:
        """True when the check ran and nothing failed."""
        return self.skipped is None and not self.failures and not (self.judge_latency and self.missed_bounds)

    @property
    def verdict(self) -> str:
        """PASS, FAIL or SKIP."""
        if self.skipped is not None:
            return "SKIP"
        return "PASS" if self.passed else "FAIL"

    def require(self, condition: bool, failure: str) -> None:
        """Records failure unless condition holds."""
        if not condition:
            self.failures.append(failure)

    def bound(self, condition: bool, miss: str) -> None:
        """Records a missed latency bound unless condition holds (see judge_latency)."""
        if not condition:
            self.missed_bounds.append(miss)

    def to_json(self) -> dict:
        """The result as a JSON-ready dict."""
        return {"name": self.name, "verdict": self.verdict, "summary": self.summary,
                "failures": self.failures, "missed_bounds": self.missed_bounds,
                "latency_judged": self.judge_latency, "skipped": self.skipped, "requests": self.requests,
                "lost": self.lost, "faults_survived": self.faults if self.passed else 0,
                "bad_inputs": self.bad_inputs, "load": self.load, "details": self.details}


def codes(records: Iterable[Record]) -> Dict[str, int]:
    """Calls by status code name."""
    return dict(sorted(Counter(record.code for record in records).items()))


def disallowed(measurement: Measurement, allowed: Iterable[str]) -> List[Record]:
    """The records whose status is not in allowed."""
    allowed = set(allowed)
    return [record for record in measurement.records if record.code not in allowed]


def reply_latency_ms(records: Iterable[Record]) -> dict:
    """Latency percentiles (ms) from handing each call to gRPC to its answer."""
    return latency_summary([(record.end - record.sent) * 1000.0 for record in records])


def in_window(measurement: Measurement) -> List[Record]:
    """The records of calls started (or due) inside the measurement window."""
    return [r for r in measurement.records if measurement.window_start <= r.start < measurement.window_end]


def is_refused_stream(record: Record) -> bool:
    """A call the server's HTTP/2 layer refused (REFUSED_STREAM: more streams than it allows at once):
    never admitted, so never lost, and safe to retry."""
    return record.code == "UNAVAILABLE" and REFUSED_STREAM in record.details


def examples(records: Iterable[Record], limit: int = 5) -> List[str]:
    """A few "CODE: details" strings of failed calls, for failure messages."""
    return [f"{record.code}: {record.details[:160]}" for record in list(records)[:limit]]
