"""Fixtures shared by every test package: a tiny and a reference-size exported model, test certificates,
an mTLS server."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serving.tls_testing import make_pki, start_mtls_server

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "genet_res50"
# The demo network, made tiny: width 0.125 at 32 px, 10 classes, random weights; zero_init_residual
# off, so that every gather-excite block stays active and the logits vary with the input.
TINY_MODEL_OVERRIDES = ("model.width_multiplier=0.125", "model.image_size=32",
                        "model.zero_init_residual=false")


# The reference network: GENet theta-plus at 224 px, 1000 classes.
REFERENCE_CONFIG = "training/configs/theta_plus.yaml"


def export_random(repository, config, *args):
    """Export a random-initialised network of `config` into `repository` as MODEL_NAME (version 1)."""
    command = [sys.executable, "-m", "export", "--random-init", "--config", config,
               "--repository", str(repository), "--name", MODEL_NAME, *args]
    completed = subprocess.run(command, cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=900,
                               env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert completed.returncode == 0, completed.stderr[-3000:]
    return repository


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory) -> Path:
    """A repository holding one randomly initialised, tiny GENet exported in every format available
    here (models/genet_res50/1/). Shared by all tests: copy it before writing into it."""
    return export_random(tmp_path_factory.mktemp("models"), "training/configs/demo.yaml",
                         *TINY_MODEL_OVERRIDES)


@pytest.fixture(scope="session")
def reference_repository(tmp_path_factory) -> Path:
    """A repository holding the reference network (theta-plus, 224 px, 1000 classes), random weights
    with BatchNorm statistics calibrated on the bundled photographs, exported and verified as MINDIR,
    ONNX and Lite (models/genet_res50/1/; 1-2 minutes). Shared by all tests: copy it before writing."""
    return export_random(tmp_path_factory.mktemp("reference"), REFERENCE_CONFIG, "--calibrate-bn",
                         "--formats", "mindir,onnx,mslite")


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """CA, server and client certificates, made by openssl (tests/serving/tls_testing.py)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls_server(pki, model_repository, tmp_path_factory):
    """A Lite server requiring client certificates signed by the test CA (one per test module)."""
    server = start_mtls_server(pki, model_repository, tmp_path_factory.mktemp("logs"))
    yield server
    assert server.stop() == 0, server.log()
