"""Training survives kill -9: resume continues from the last complete checkpoint, no partial file is left.

A tiny run (width 1/8, 32x32, Fashion-MNIST subset from training.prepare_data.build_fmnist,
a checkpoint every epoch) is killed with SIGKILL, with its whole process group, halfway through
epoch KILL_EPOCH, watched through its log.jsonl step records. Then the run directory must hold
exactly the complete checkpoints of the epochs before (training writes each to a temporary file
and renames it into place) and no temporary file, and `--resume` must continue from the last one
at the right step, finish every epoch and write final.ckpt, again leaving no temporary file.
"""
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from clients.stress.results import CheckResult
from training.prepare_data import build_fmnist

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / "training" / "configs" / "demo.yaml"
BATCH = 16
KILL_EPOCH = 2
CHECKPOINT = re.compile(r"^epoch_(\d+)\.ckpt$")
RESUMED = re.compile(r"resumed from (\S+): epoch (\d+), step (\d+)")
RUN_TIMEOUT_S = 600.0


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
                *("{}={}".format(key, value) for key, value in overrides.items())]

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


def check_after_kill(run: TinyRun, result: CheckResult, killed_step: Optional[int]) -> None:
    """The killed run: killed inside KILL_EPOCH, complete checkpoints only, no temporary file."""
    spe = run.steps_per_epoch
    result.require(killed_step is not None, "training ended or stalled before epoch {}'s middle".format(KILL_EPOCH))
    if killed_step is not None:
        result.require((KILL_EPOCH - 1) * spe < killed_step < KILL_EPOCH * spe,
                       "kill landed at step {}, not inside epoch {} (steps {}..{})".format(
                           killed_step, KILL_EPOCH, (KILL_EPOCH - 1) * spe + 1, KILL_EPOCH * spe - 1))
    epochs = checkpoint_epochs(run.run_dir)
    result.require(epochs == list(range(1, KILL_EPOCH)), "checkpoints after the kill: epochs {}".format(epochs))
    leftovers = temporary_files(run.run_dir)
    result.require(not leftovers, "temporary files after the kill: {}".format(leftovers))
    result.details.update(killed_at_step=killed_step, checkpoints_after_kill=epochs, temp_after_kill=leftovers)


def check_resumed(run: TinyRun, result: CheckResult, status: int, output: str) -> None:
    """The resumed run: from the last complete checkpoint, every later step once, final.ckpt, no temp file."""
    spe = run.steps_per_epoch
    match = RESUMED.search(output)
    resumed = (int(match.group(2)), int(match.group(3))) if match else None
    steps = _resumed_steps(run)
    leftovers = temporary_files(run.run_dir)
    result.require(status == 0, "resumed run exited with {}: {}".format(status, output[-500:]))
    expected = (KILL_EPOCH - 1, (KILL_EPOCH - 1) * spe)
    result.require(resumed == expected, "resumed from (epoch, step) {}, expected {}".format(resumed, expected))
    result.require(steps == list(range((KILL_EPOCH - 1) * spe + 1, run.epochs * spe + 1)),
                   "resumed run logged steps {}..{} ({} of them)".format(steps[:1], steps[-1:], len(steps)))
    result.require((run.run_dir / "final.ckpt").is_file(), "no final.ckpt after the resumed run")
    result.require(checkpoint_epochs(run.run_dir) == list(range(1, run.epochs + 1)),
                   "checkpoints after resuming: epochs {}".format(checkpoint_epochs(run.run_dir)))
    result.require(not leftovers, "temporary files after resuming: {}".format(leftovers))
    result.details.update(resumed_from=resumed, resumed_steps=[steps[0], steps[-1]] if steps else [],
                          temp_after_resume=leftovers, final_checkpoint=str(run.run_dir / "final.ckpt"))


def run_crash_resume(workdir: Path, train_per_class: int = 32, epochs: int = 3) -> CheckResult:
    """kill -9 in the middle of epoch KILL_EPOCH of a tiny run, then --resume to the end."""
    result = CheckResult("training")
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


def _summarise(result: CheckResult, run: TinyRun, started: float) -> CheckResult:
    result.faults = 1
    details = result.details
    result.details.update(steps_per_epoch=run.steps_per_epoch, epochs=run.epochs, kill_epoch=KILL_EPOCH,
                          seconds=round(time.monotonic() - started, 1))
    result.summary = "killed at step {} (epoch {} of {}, {} steps each); resumed from {} through step {}; " \
                     "temp files left: {}".format(
                         details.get("killed_at_step"), KILL_EPOCH, run.epochs, run.steps_per_epoch,
                         details.get("resumed_from"), (details.get("resumed_steps") or [None])[-1],
                         len(details.get("temp_after_kill", [])) + len(details.get("temp_after_resume", [])))
    return result
