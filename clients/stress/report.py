"""The suite's end: a table of checks with the totals the issue asks for, and reports/stress.json."""
import json
import platform
import time
from pathlib import Path
from typing import List, Sequence

from clients.stress.results import CheckResult

COLUMNS = ("check", "verdict", "requests", "lost", "faults")


def totals(results: Sequence[CheckResult]) -> dict:
    """Faults survived, bad inputs tried, requests sent and lost over every check; overall verdict."""
    ran = [result for result in results if result.skipped is None]
    return {"checks_passed": sum(result.passed for result in ran), "checks_failed": sum(not r.passed for r in ran),
            "checks_skipped": len(results) - len(ran),
            "faults_survived": sum(result.faults for result in ran if result.passed),
            "bad_inputs_tried": sum(result.bad_inputs for result in ran),
            "requests": sum(result.requests for result in ran),
            "requests_lost": sum(result.lost for result in ran),
            "passed": bool(ran) and all(result.passed for result in ran) and sum(r.lost for r in ran) == 0}


def load_lines(results: Sequence[CheckResult]) -> List[str]:
    """One "load held" line per check that held a load."""
    lines = []
    for result in results:
        load = result.load
        if load is None or result.skipped is not None:
            continue
        level = f"{load['rate']} req/s" if "rate" in load else f"concurrency {load['concurrency']}"
        lines.append(f"  {result.name}: {level} for {load['duration_s']:g} s, achieved {load['achieved_rps']} req/s")
    return lines


def format_table(results: Sequence[CheckResult], mode: str) -> str:
    """The printed report: a row per check with its summary and failures beneath, then the totals."""
    rows = [COLUMNS] + [(r.name, r.verdict, str(r.requests), str(r.lost), str(r.faults if r.passed else 0))
                        for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [f"stress suite ({mode})", "  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for result, row in zip(results, rows[1:]):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        lines.append(f"    {result.skipped or result.summary}")
        lines.extend(f"    FAIL: {failure}" for failure in result.failures)
        verdict = "FAIL" if result.judge_latency else "missed (reported, not judged in this form)"
        lines.extend(f"    {verdict}: {miss}" for miss in result.missed_bounds)
    total = totals(results)
    lines += ["", "load held:"] + (load_lines(results) or ["  none"])
    lines.append(f"faults survived: {total['faults_survived']}   bad inputs tried: {total['bad_inputs_tried']}   "
                 f"requests sent: {total['requests']}   requests lost: {total['requests_lost']} (must be 0)")
    lines.append(f"checks: {total['checks_passed']} passed, {total['checks_failed']} failed, {total['checks_skipped']} "
                 f"skipped -> {'PASS' if total['passed'] else 'FAIL'}")
    return "\n".join(lines)


def write_report(path: Path, results: Sequence[CheckResult], mode: str, settings: dict) -> None:
    """Writes the JSON report: mode, settings, totals and every check's result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"mode": mode, "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "host": platform.node(), "settings": settings, "totals": totals(results),
              "checks": [result.to_json() for result in results]}
    path.write_text(f"{json.dumps(report, indent=2, default=str)}\n")
