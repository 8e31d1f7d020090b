"""End-to-end training runs on a tiny image folder: loss, checkpoints, resume, evaluation, msrun."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from PIL import Image

from training.config import load_config
from training.schedules import build_lr_schedule

REPO = Path(__file__).resolve().parents[2]
COLOURS = {"blue": (30, 60, 200), "green": (40, 180, 60), "red": (200, 40, 40)}
TRAIN_PER_CLASS, VAL_PER_CLASS, EPOCHS, BATCH = 16, 5, 6, 16
STEPS_PER_EPOCH = len(COLOURS) * TRAIN_PER_CLASS // BATCH
METRICS_LINE = re.compile(r"^top1=[01]\.\d{6} top5=[01]\.\d{6} images=(\d+)$")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Noisy single-colour JPEGs in ImageNet layout: a task a tiny net learns in a few steps."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for split, count in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = np.clip(np.array(colour) + rng.normal(0, 40, (40, 40, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{index}.JPEG")
    return root


def tiny_overrides(data_root, output_dir, **extra):
    """A width-1/8 theta-plus at 32x32 on the colour folders."""
    values = {"data.root": data_root, "model.num_classes": len(COLOURS), "model.image_size": 32,
              "model.width_multiplier": 0.125, "train.batch_size": BATCH, "train.epochs": EPOCHS,
              "train.lr_init": 0.05, "train.warmup_epochs": 0, "train.log_every_steps": 1,
              "checkpoint.every_epochs": 1, "checkpoint.keep": 2, "run.output_dir": output_dir,
              "run.name": "tiny", **extra}
    return [f"{key}={value}" for key, value in values.items()]


def run_module(module, *args, timeout=300):
    """Run `python -m module args` in the repository; return the completed process."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def read_log(run_dir, event):
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["event"] == event]


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    """One short training run through the CLI: (run dir, stdout lines)."""
    output_dir = tmp_path_factory.mktemp("runs")
    result = run_module("training.train", "--config", REPO / "training/configs/demo.yaml",
                        *tiny_overrides(data_root, output_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir / "tiny", result.stdout.strip().splitlines()


def test_last_lines_are_metrics_then_final_checkpoint(trained):
    run_dir, lines = trained
    assert lines[-1] == str((run_dir / "final.ckpt").resolve())
    match = METRICS_LINE.match(lines[-2])
    assert match and int(match.group(1)) == len(COLOURS) * VAL_PER_CLASS


def test_run_directory_contents(trained):
    run_dir, _ = trained
    assert (run_dir / "labels.txt").read_text().splitlines() == sorted(COLOURS)
    assert (run_dir.parent / "latest").resolve() == run_dir.resolve()
    cfg = load_config(run_dir / "config.yaml")
    assert (cfg.model.variant, cfg.model.image_size, cfg.run.name) == ("theta_plus", 32, "tiny")
    kept = sorted(path.name for path in run_dir.iterdir() if path.suffix == ".ckpt")
    assert kept == ["epoch_0005.ckpt", "epoch_0006.ckpt", "final.ckpt"]  # keep=2, no temp files


def test_checkpoint_holds_training_state(trained):
    run_dir, _ = trained
    params = ms.load_checkpoint(str(run_dir / "epoch_0006.ckpt"))
    assert int(params["epoch_num"].asnumpy()) == EPOCHS
    assert int(params["step_num"].asnumpy()) == EPOCHS * STEPS_PER_EPOCH
    assert int(params["global_step"].asnumpy()[0]) == EPOCHS * STEPS_PER_EPOCH
    assert any(name.startswith("moments.") for name in params)


def test_loss_goes_down(trained):
    run_dir, _ = trained
    losses = [record["loss"] for record in read_log(run_dir, "step")]
    assert len(losses) == EPOCHS * STEPS_PER_EPOCH
    first, last = losses[:STEPS_PER_EPOCH], losses[-STEPS_PER_EPOCH:]
    assert np.mean(last) < 0.8 * np.mean(first)


def test_resume_continues_from_saved_step(trained, data_root, tmp_path):
    run_dir = shutil.copytree(trained[0], tmp_path / "tiny")
    (run_dir / "epoch_0006.ckpt").unlink()  # as if interrupted during epoch 6
    (run_dir / ".tmp-4242-epoch_0006.ckpt").write_bytes(b"half a checkpoint")  # ... while saving it
    result = run_module("training.train", "--config", run_dir / "config.yaml", "--resume",
                        *tiny_overrides(data_root, tmp_path, **{"train.epochs": EPOCHS + 1}))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stderr and "epoch 5, step 15" in result.stderr
    assert "removed .tmp-4242-epoch_0006.ckpt" in result.stderr
    assert not list(run_dir.glob(".tmp-*"))
    steps = [record for record in read_log(run_dir, "step")][EPOCHS * STEPS_PER_EPOCH:]
    assert [record["step"] for record in steps] == list(range(5 * STEPS_PER_EPOCH + 1,
                                                              (EPOCHS + 1) * STEPS_PER_EPOCH + 1))
    assert {record["epoch"] for record in steps} == {6, 7}
    lr = build_lr_schedule("linear", lr_init=0.05, lr_end=0.0,
                           total_steps=(EPOCHS + 1) * STEPS_PER_EPOCH)
    np.testing.assert_allclose([record["lr"] for record in steps],
                               lr[[record["step"] - 1 for record in steps]], rtol=1e-6)
    final = ms.load_checkpoint(str(run_dir / "epoch_0007.ckpt"))
    assert int(final["global_step"].asnumpy()[0]) == (EPOCHS + 1) * STEPS_PER_EPOCH


def test_evaluate_reproduces_final_metrics(trained, data_root):
    run_dir, lines = trained
    ckpt = run_dir / "final.ckpt"
    result = run_module("training.evaluate", "--ckpt", ckpt, "--data", data_root / "val")
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout.strip().splitlines()
    assert printed == [lines[-2]]
    saved = json.loads((run_dir / "final.ckpt.eval.json").read_text())
    assert saved["images"] == len(COLOURS) * VAL_PER_CLASS
    assert printed[0] == (f"top1={saved['top1']:.6f} top5={saved['top5']:.6f} "
                          f"images={saved['images']}")


def test_missing_data_root_fails_clearly(tmp_path):
    result = run_module("training.train", "--config", REPO / "training/configs/demo.yaml",
                        f"data.root={tmp_path / 'nowhere'}", f"run.output_dir={tmp_path}")
    assert result.returncode != 0
    assert f"error: dataset root {tmp_path / 'nowhere' / 'train'} does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_msrun_two_cpu_workers(data_root, tmp_path):
    """msrun starts two data-parallel CPU workers on half the data each; only rank 0 writes."""
    bin_dir = Path(sys.executable).parent  # msrun starts workers with the first python on PATH
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    overrides = tiny_overrides(data_root, tmp_path / "runs", **{
        "train.epochs": 1, "train.batch_size": 8, "train.distributed": True})
    result = subprocess.run(
        [str(bin_dir / "msrun"), "--worker_num=2", "--local_worker_num=2",
         f"--master_port={_free_port()}", f"--log_dir={tmp_path / 'logs'}", "--join=True",
         "training/train.py", "--config", "training/configs/demo.yaml", *overrides],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    logs = [(tmp_path / "logs" / f"worker_{rank}.log").read_text() for rank in (0, 1)]
    assert result.returncode == 0, logs[0][-3000:] + logs[1][-3000:]
    half_steps = len(COLOURS) * TRAIN_PER_CLASS // 2 // 8
    for rank, text in enumerate(logs):
        assert f"data-parallel worker {rank} of 2" in text
        assert f"epoch 1 done: {half_steps} steps" in text
    final = (tmp_path / "runs" / "tiny" / "final.ckpt").resolve()
    assert final.exists() and str(final) in logs[0]
    assert "saved" not in logs[1] and str(final) not in logs[1]


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
