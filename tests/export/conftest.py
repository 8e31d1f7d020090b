"""Fixtures of the export tests: a tiny config, and one real export of it shared by the tests."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# theta: the learned gather without the excite MLP (tests/conftest.py exports the demo theta-plus).
TINY_MODEL = {"variant": "theta", "num_classes": 10, "image_size": 32,
              "width_multiplier": 0.125}
SEED = 2


def run_export_cli(*args, timeout=600):
    """Run `python -m export ARGS` in a fresh process; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", "export", *map(str, args)], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout, check=False)


def write_config(path, **model):
    """Write a training config YAML whose model section is TINY_MODEL updated by `model`."""
    import yaml

    path.write_text(yaml.safe_dump({"model": {**TINY_MODEL, **model}}))
    return path


@pytest.fixture(scope="session")
def export_cli():
    """`export_cli(*args)` runs `python -m export` in a fresh process."""
    return run_export_cli


@pytest.fixture(scope="session")
def tiny_model():
    """The model section of the tiny config."""
    return dict(TINY_MODEL)


@pytest.fixture(scope="session")
def export_seed():
    """The seed of the shared random-init export."""
    return SEED


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory):
    """A training config of the tiny model (theta, width 0.125, 32 px, 10 classes)."""
    return write_config(tmp_path_factory.mktemp("config") / "tiny.yaml")


@pytest.fixture(scope="session")
def exported(tmp_path_factory, tiny_config):
    """One random-init export of the tiny model in every available format (run once)."""
    repository = tmp_path_factory.mktemp("models")
    result = run_export_cli("--random-init", "--seed", SEED, "--config", tiny_config,
                            "--repository", repository, "--name", "tiny")
    assert result.returncode == 0, result.stderr[-3000:]
    version_dir = Path(result.stdout.strip().splitlines()[-1])
    manifest = json.loads((version_dir / "manifest.json").read_text())
    return {"dir": version_dir, "manifest": manifest, "repository": repository,
            "stdout": result.stdout}


@pytest.fixture(scope="session")
def tiny_network(tiny_config):
    """The tiny network rebuilt in this process with the export's seed (same weights)."""
    from export.network import random_network
    from training.config import load_config

    return random_network(load_config(tiny_config).model, SEED)


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory, tiny_config, tiny_network):
    """A training run directory as training writes it: final.ckpt, config.yaml, labels.txt.

    The checkpoint holds the tiny network's weights plus training state (an optimiser slot,
    epoch and step counters), like a checkpoint of the train network.
    """
    import mindspore as ms
    import numpy as np
    from training.config import load_config, save_config

    run_dir = tmp_path_factory.mktemp("run")
    save_config(load_config(tiny_config), run_dir / "config.yaml")
    labels = [f"label {i}" for i in range(TINY_MODEL["num_classes"])]
    (run_dir / "labels.txt").write_text("\n".join(labels) + "\n")
    moments = ms.Tensor(np.zeros(tiny_network.fc.weight.shape, np.float32))
    ms.save_checkpoint(tiny_network, str(run_dir / "final.ckpt"),
                       append_dict={"moments.fc.weight": moments, "epoch_num": 2, "step_num": 40})
    return run_dir
