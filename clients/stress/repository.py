"""The model repository the suite serves: a tiny exported model, copied versions, atomic publishing."""
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

from modelrepo.layout import create_staging, discard, latest_version_dir, model_names, publish
from modelrepo.manifest import MANIFEST_FILE, write_manifest

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPORT_OVERRIDES = ("model.width_multiplier=0.125", "model.image_size=32")


def export_tiny_model(repository: Path, timeout_s: float = 900.0) -> None:
    """Exports a random-init width-1/8, 32x32 GENet of the demo config into repository (export CLI)."""
    command = [sys.executable, "-m", "export", "--random-init", "--config", "training/configs/demo.yaml",
               "--repository", str(repository), *EXPORT_OVERRIDES, "--tolerance", "1e-2"]
    logger.info("exporting a tiny random-init model into %s", repository)
    completed = subprocess.run(command, cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=timeout_s,
                               env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    if completed.returncode != 0:
        raise RuntimeError(f"export failed ({completed.returncode}):\n{completed.stderr[-3000:]}")


def only_model_name(repository: Path) -> str:
    """The name of the repository's only model."""
    names = model_names(repository)
    if len(names) != 1:
        raise ValueError(f"{repository} holds models {names}: expected exactly one")
    return names[0]


def prepare_served_repository(workdir: Path, source: Optional[Path]) -> Path:
    """A repository of its own in workdir: source's latest version copied, or a fresh tiny export."""
    served = Path(workdir) / "models"
    if source is None:
        export_tiny_model(served)
        return served
    name = only_model_name(source)
    version = latest_version_dir(source, name)
    shutil.copytree(version, served / name / version.name)
    return served


def publish_next_version(repository: Path, name: str) -> str:
    """Publishes a copy of the latest version of name as the next one, the way export publishes.

    Built in a staging directory and renamed into place (modelrepo.layout). Directory name and
    manifest "version" agree (manifest.sha256 rewritten); the model files and their sha256 are
    unchanged. Returns the new version.
    """
    source = latest_version_dir(repository, name)
    manifest = json.loads((source / MANIFEST_FILE).read_text())
    staging = create_staging(repository, name)
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        return publish(staging, lambda version: write_manifest(staging, dict(manifest, version=version))).name
    finally:
        discard(staging)
