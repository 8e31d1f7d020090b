"""The suite's training check: `python -m training.crash_check` run as a subprocess, its verdict read back.

The check (training/crash_check.py) kills a tiny training run with SIGKILL in the middle of an epoch
and resumes it; it prints one JSON line, {"passed", "summary", "failures", "details"}. The suite
knows training only through that command line and that line; the check's log stays in workdir.
"""
import json
import subprocess
import sys
from pathlib import Path

from clients.stress.results import CheckResult
from runtime_env import REPO_ROOT

TIMEOUT_S = 1500.0
"""Two training runs of at most 600 s each (the check's own bound), the data and the start-ups."""


def run_crash_resume(workdir: Path, train_per_class: int = 32, epochs: int = 3) -> CheckResult:
    """kill -9 in the middle of a tiny training run, then --resume to the end: one fault injected."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "crash_check.log"
    command = [sys.executable, "-m", "training.crash_check", "--workdir", str(workdir),
               "--train-per-class", str(train_per_class), "--epochs", str(epochs)]
    with open(log_path, "wb") as log:
        completed = subprocess.run(command, cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=log, timeout=TIMEOUT_S)
    lines = completed.stdout.decode("utf-8", errors="replace").strip().splitlines()
    try:
        verdict = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = log_path.read_text(errors="replace")[-2000:]
        return CheckResult("training", failures=[f"training.crash_check exited with {completed.returncode} "
                                                 f"without a verdict; log {log_path}:\n{tail}"])
    return CheckResult("training", summary=verdict["summary"], failures=verdict["failures"], faults=1,
                       details=verdict["details"])
