"""Training survives kill -9 in the middle of an epoch: --resume continues from the last complete checkpoint."""
import json

import mindspore as ms
import pytest

from clients.stress.crash_resume import run_crash_resume
from training.crash_check import KILL_EPOCH, TinyRun, temporary_files

TRAIN_PER_CLASS, EPOCHS = 32, 3


@pytest.fixture(scope="module")
def crashed_and_resumed(tmp_path_factory):
    """A tiny run killed with SIGKILL halfway through epoch 2, then resumed to the end: (result, run).

    Run as the stress suite runs it: `python -m training.crash_check` in a subprocess, its JSON read back.
    """
    workdir = tmp_path_factory.mktemp("crash")
    result = run_crash_resume(workdir, TRAIN_PER_CLASS, EPOCHS)
    return result, TinyRun(workdir, TRAIN_PER_CLASS, EPOCHS)


def test_the_suite_check_passes(crashed_and_resumed):
    result, _ = crashed_and_resumed
    assert result.passed, result.failures


def test_the_kill_landed_inside_the_epoch_and_left_only_complete_checkpoints(crashed_and_resumed):
    result, run = crashed_and_resumed
    spe = run.steps_per_epoch
    assert (KILL_EPOCH - 1) * spe < result.details["killed_at_step"] < KILL_EPOCH * spe
    assert result.details["checkpoints_after_kill"] == list(range(1, KILL_EPOCH))
    assert result.details["temp_after_kill"] == [] and result.details["temp_after_resume"] == []


def test_every_checkpoint_is_complete_and_the_final_one_holds_the_last_step(crashed_and_resumed):
    _, run = crashed_and_resumed
    for epoch in range(1, EPOCHS + 1):
        params = ms.load_checkpoint(str(run.run_dir / f"epoch_{epoch:04d}.ckpt"))
        assert int(params["epoch_num"].asnumpy()) == epoch
        assert int(params["step_num"].asnumpy()) == epoch * run.steps_per_epoch
    final = ms.load_checkpoint(str(run.run_dir / "final.ckpt"))
    assert int(final["step_num"].asnumpy()) == EPOCHS * run.steps_per_epoch
    assert temporary_files(run.run_dir) == []


def test_the_resumed_run_repeats_the_interrupted_epoch_from_its_first_step(crashed_and_resumed):
    _, run = crashed_and_resumed
    records = [json.loads(line) for line in (run.run_dir / "log.jsonl").read_text().splitlines()]
    steps = [record["step"] for record in records if record["event"] == "step"]
    spe = run.steps_per_epoch
    restart = next(i for i in range(1, len(steps)) if steps[i] <= steps[i - 1])
    assert steps[:restart] == list(range(1, steps[restart - 1] + 1))  # the killed run, step by step
    assert steps[restart:] == list(range((KILL_EPOCH - 1) * spe + 1, EPOCHS * spe + 1))
    checkpoints = [record["epoch"] for record in records if record["event"] == "checkpoint"]
    assert checkpoints == list(range(1, EPOCHS + 1))  # epoch 2's checkpoint only from the resumed run
