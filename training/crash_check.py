"""Training survives kill -9: resume continues from the last complete checkpoint, no partial file is left.

    python -m training.crash_check --workdir DIR [--train-per-class 32] [--epochs 3]

prints one JSON line, {"passed", "summary", "failures", "details"}, and exits 0 when the check passed
(the stress suite, clients/stress, runs it so and reads that line).

A tiny run (width 1/8, 32x32, Fashion-MNIST subset from training.prepare_data.build_fmnist,
a checkpoint every epoch) is killed with SIGKILL, with its whole process group, halfway through
epoch KILL_EPOCH, watched through its log.jsonl step records. Then the run directory must hold
exactly the complete checkpoints of the epochs before (training writes each to a temporary file
and renames it into place) and no temporary file, and `--resume` must continue from the last one
at the right step, finish every epoch and write final.ckpt, again leaving no temporary file.
"""
import argparse
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from training.prepare_data import build_fmnist

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "training" / "configs" / "demo.yaml"
BATCH = 16
KILL_EPOCH = 2
CHECKPOINT = re.compile(r"^epoch_(\d+)\.ckpt$")
RESUMED = re.compile(r"resumed from (\S+): epoch (\d+), step (\d+)")
RUN_TIMEOUT_S = 600.0


@dataclass
class CrashCheck:
    """What the check found: why it failed (nothing when it passed), what it measured, one summary line."""

    failures: List[str] = field(default_factory=list)
    details: Dict = field(default_factory=dict)
    summary: str = ""

    @property
    def passed(self) -> bool:
        """True when nothing failed."""
        return not self.failures

    def require(self, condition: bool, failure: str) -> None:
        """Records failure unless condition holds."""
        if not condition:
            self.failures.append(failure)

    def to_json(self) -> dict:
        """The verdict as a JSON-ready dict."""
        return {"passed": self.passed, "summary": self.summary, "failures": self.failures, "details": self.details}


@dataclass(frozen=True)
class TinyRun:
    """A tiny training run: where its data and output go, its size."""

    workdir: Path
    train_per_class: int = 32
    epochs: int = 3

    @property
    def run_dir(self) -> Path:
        """The run directory training writes."""
        return self.workdir / "runs" / "crash"

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps per epoch (10 classes, last incomplete batch dropped)."""
        return 10 * self.train_per_class // BATCH

    def command(self, resume: bool) -> List[str]:
        """The training command line."""
        overrides = {"data.root": self.workdir / "fmnist", "data.num_workers": 1, "model.width_multiplier": 0.125,
                     "model.image_size": 32, "train.batch_size": BATCH, "train.epochs": self.epochs,
                     "train.warmup_epochs": 0, "train.log_every_steps": 1, "checkpoint.every_epochs": 1,
                     "checkpoint.keep": self.epochs, "run.output_dir": self.workdir / "runs", "run.name": "crash"}
        return [sys.executable, "-m", "training.train", "--config", str(CONFIG), *(["--resume"] if resume else []),
                *(f"{key}={value}" for key, value in overrides.items())]

    def start(self, resume: bool, log_name: str) -> subprocess.Popen:
        """Starts training in a process group of its own, output to a log file in workdir."""
        with open(self.workdir / log_name, "wb") as log:
            return subprocess.Popen(self.command(resume), cwd=str(REPO_ROOT), stdout=log, stderr=subprocess.STDOUT,
                                    env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), start_new_session=True)


def logged_steps(run_dir: Path) -> List[dict]:
    """The step records of log.jsonl so far (a line being written is skipped)."""
    path = run_dir / "log.jsonl"
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "step":
            records.append(record)
    return records


def checkpoint_epochs(run_dir: Path) -> List[int]:
    """Epochs of the periodic checkpoints in run_dir."""
    return sorted(int(m.group(1)) for m in map(CHECKPOINT.match, os.listdir(run_dir)) if m)


def temporary_files(run_dir: Path) -> List[str]:
    """Files in run_dir that are not a finished artefact (checkpoint temp files start with .tmp-)."""
    return sorted(name for name in os.listdir(run_dir) if name.startswith(".tmp"))


def kill_mid_epoch(run: TinyRun, process: subprocess.Popen) -> Optional[int]:
    """SIGKILLs the process group once half of KILL_EPOCH's steps are logged; the step logged last before."""
    target = (KILL_EPOCH - 1) * run.steps_per_epoch + run.steps_per_epoch // 2
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while process.poll() is None and time.monotonic() < deadline:
        steps = logged_steps(run.run_dir)
        if steps and steps[-1]["step"] >= target:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return logged_steps(run.run_dir)[-1]["step"]
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return None


def _resumed_steps(run: TinyRun) -> List[int]:
    """Steps logged by the resumed run: those after the point where the step count went back."""
    steps = [record["step"] for record in logged_steps(run.run_dir)]
    restarts = [i for i in range(1, len(steps)) if steps[i] <= steps[i - 1]]
    return steps[restarts[-1]:] if restarts else []


def check_after_kill(run: TinyRun, result: CrashCheck, killed_step: Optional[int]) -> None:
    """The killed run: killed inside KILL_EPOCH, complete checkpoints only, no temporary file."""
    spe = run.steps_per_epoch
    result.require(killed_step is not None, f"training ended or stalled before epoch {KILL_EPOCH}'s middle")
    if killed_step is not None:
        result.require((KILL_EPOCH - 1) * spe < killed_step < KILL_EPOCH * spe,
                       f"kill landed at step {killed_step}, not inside epoch {KILL_EPOCH} "
                       f"(steps {(KILL_EPOCH - 1) * spe + 1}..{KILL_EPOCH * spe - 1})")
    epochs = checkpoint_epochs(run.run_dir)
    result.require(epochs == list(range(1, KILL_EPOCH)), f"checkpoints after the kill: epochs {epochs}")
    leftovers = temporary_files(run.run_dir)
    result.require(not leftovers, f"temporary files after the kill: {leftovers}")
    result.details.update(killed_at_step=killed_step, checkpoints_after_kill=epochs, temp_after_kill=leftovers)


def check_resumed(run: TinyRun, result: CrashCheck, status: int, output: str) -> None:
    """The resumed run: from the last complete checkpoint, every later step once, final.ckpt, no temp file."""
    spe = run.steps_per_epoch
    match = RESUMED.search(output)
    resumed = (int(match.group(2)), int(match.group(3))) if match else None
    steps = _resumed_steps(run)
    leftovers = temporary_files(run.run_dir)
    result.require(status == 0, f"resumed run exited with {status}: {output[-500:]}")
    expected = (KILL_EPOCH - 1, (KILL_EPOCH - 1) * spe)
    result.require(resumed == expected, f"resumed from (epoch, step) {resumed}, expected {expected}")
    result.require(steps == list(range((KILL_EPOCH - 1) * spe + 1, run.epochs * spe + 1)),
                   f"resumed run logged steps {steps[:1]}..{steps[-1:]} ({len(steps)} of them)")
    result.require((run.run_dir / "final.ckpt").is_file(), "no final.ckpt after the resumed run")
    result.require(checkpoint_epochs(run.run_dir) == list(range(1, run.epochs + 1)),
                   f"checkpoints after resuming: epochs {checkpoint_epochs(run.run_dir)}")
    result.require(not leftovers, f"temporary files after resuming: {leftovers}")
    result.details.update(resumed_from=resumed, resumed_steps=[steps[0], steps[-1]] if steps else [],
                          temp_after_resume=leftovers, final_checkpoint=str(run.run_dir / "final.ckpt"))


def run_crash_resume(workdir: Path, train_per_class: int = 32, epochs: int = 3) -> CrashCheck:
    """kill -9 in the middle of epoch KILL_EPOCH of a tiny run, then --resume to the end."""
    result = CrashCheck()
    run = TinyRun(Path(workdir), train_per_class, epochs)
    run.workdir.mkdir(parents=True, exist_ok=True)
    build_fmnist(run.workdir / "fmnist", train_per_class, val_per_class=2)
    started = time.monotonic()
    killed_step = kill_mid_epoch(run, run.start(resume=False, log_name="train-killed.log"))
    check_after_kill(run, result, killed_step)
    if result.failures:
        result.details["log_tail"] = (run.workdir / "train-killed.log").read_text(errors="replace")[-2000:]
        return _summarise(result, run, started)
    process = run.start(resume=True, log_name="train-resumed.log")
    try:
        status = process.wait(RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        status = process.wait()
    check_resumed(run, result, status, (run.workdir / "train-resumed.log").read_text(errors="replace"))
    return _summarise(result, run, started)


def _summarise(result: CrashCheck, run: TinyRun, started: float) -> CrashCheck:
    details = result.details
    result.details.update(steps_per_epoch=run.steps_per_epoch, epochs=run.epochs, kill_epoch=KILL_EPOCH,
                          seconds=round(time.monotonic() - started, 1))
    temp_left = len(details.get("temp_after_kill", [])) + len(details.get("temp_after_resume", []))
    result.summary = (f"killed at step {details.get('killed_at_step')} (epoch {KILL_EPOCH} of {run.epochs}, "
                      f"{run.steps_per_epoch} steps each); resumed from {details.get('resumed_from')} through step "
                      f"{(details.get('resumed_steps') or [None])[-1]}; temp files left: {temp_left}")
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the check and prints its verdict as one JSON line; 0 when it passed."""
    parser = argparse.ArgumentParser(prog="python -m training.crash_check", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="folder for the data, the run and its logs")
    parser.add_argument("--train-per-class", type=int, default=32, help="Fashion-MNIST training images per class")
    parser.add_argument("--epochs", type=int, default=3, help=f"epochs of the run (the kill lands in epoch {KILL_EPOCH})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run_crash_resume(args.workdir, args.train_per_class, args.epochs)
    print(json.dumps(result.to_json()), flush=True)
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
