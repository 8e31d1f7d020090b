"""Command line of the fault-and-load suite: run every check, print the table, write the JSON report.

    python -m clients.stress [--quick] [--model-repository DIR] [--skip CHECK ...] [--report reports/stress.json]

Checks: bad-inputs, overload, reload, sigterm (on one Lite server, in that order), sigterm-stream,
cancellation, flood and workers (worker-crash and worker-hang: each on a server of its own), training
(kill -9 and resume). Each check's module documents what it asserts and the margins of its timed
bounds. Exit status 0 when every check that ran passed and no request was
lost, 1 otherwise.
"""
import argparse
import dataclasses
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence

from clients.stress.crash_resume import run_crash_resume
from clients.stress.plan import FULL, QUICK
from clients.stress.report import format_table, totals, write_report
from clients.stress.repository import only_model_name, prepare_served_repository
from clients.stress.results import CheckResult
from clients.stress.serving_checks import MAIN_SERVER_CHECKS, Setup, guarded, serving_checks

logger = logging.getLogger("clients.stress")
CHECKS = (*MAIN_SERVER_CHECKS, "sigterm-stream", "cancellation", "flood", "workers", "training")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """The command line options."""
    parser = argparse.ArgumentParser(prog="python -m clients.stress", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shortened form for CI: serving checks in about 40 s; the training "
                        "check takes 1.5-2.5 min here, mostly two MindSpore graph compiles")
    parser.add_argument("--model-repository", type=Path, help="repository whose latest version is served (copied "
                        "into the work folder); default: export a tiny random-init model")
    parser.add_argument("--backend", choices=("mslite", "mindspore"), default="mslite")
    parser.add_argument("--server-python", help="interpreter of the servers' front (default: this one; each "
                        "backend runs in its worker's environment)")
    parser.add_argument("--skip", action="append", default=[], choices=CHECKS, help="leave out a check (repeatable)")
    parser.add_argument("--workdir", type=Path, help="folder for models, logs and the training run, kept "
                        "(default: a temporary folder, removed unless a check failed)")
    parser.add_argument("--report", type=Path, default=Path("reports/stress.json"), help="JSON report path")
    return parser.parse_args(argv)


def run_checks(args: argparse.Namespace, workdir: Path) -> List[CheckResult]:
    """Every check, in order: the serving ones, then training's kill -9 and resume."""
    plan = QUICK if args.quick else FULL
    skip = frozenset(args.skip)
    results: List[CheckResult] = []
    if not set(CHECKS[:-1]) <= skip:
        repository = prepare_served_repository(workdir, args.model_repository)
        setup = Setup(repository, only_model_name(repository), workdir / "logs", args.backend,
                      args.server_python or sys.executable, plan, skip)
        results += serving_checks(setup)
    results.append(guarded("training", skip, lambda: run_crash_resume(
        workdir / "training", plan.train_per_class, plan.train_epochs)))
    for result in results:
        result.judge_latency = plan.judge_latency
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the suite; prints the table; 0 when everything passed."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="genet-stress-"))
    workdir.mkdir(parents=True, exist_ok=True)
    mode = "quick" if args.quick else "full"
    logger.info("stress suite (%s), work folder %s", mode, workdir)
    started = time.monotonic()
    results = run_checks(args, workdir)
    settings = {"plan": dataclasses.asdict(QUICK if args.quick else FULL), "backend": args.backend,
                "workdir": str(workdir), "skipped": sorted(args.skip),
                "seconds": round(time.monotonic() - started, 1)}
    write_report(args.report, results, mode, settings)
    passed = totals(results)["passed"]
    print(format_table(results, mode), flush=True)
    print(f"report: {args.report}", flush=True)
    if args.workdir is None and passed:
        shutil.rmtree(workdir, ignore_errors=True)
    elif not passed:
        print(f"server and training logs: {workdir}", flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
