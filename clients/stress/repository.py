"""The model repository the suite serves: a tiny exported model, copied versions, atomic publishing."""
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

from export.manifest import MANIFEST_FILE, write_manifest

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
        raise RuntimeError("export failed ({}):\n{}".format(completed.returncode, completed.stderr[-3000:]))


def only_model_name(repository: Path) -> str:
    """The name of the repository's only model."""
    names = sorted(entry.name for entry in Path(repository).iterdir() if entry.is_dir())
    if len(names) != 1:
        raise ValueError("{} holds models {}: expected exactly one".format(repository, names))
    return names[0]


def latest_version_dir(repository: Path, name: str) -> Path:
    """The highest all-digit version directory of name that holds a manifest.json."""
    versions = [entry for entry in (Path(repository) / name).iterdir()
                if entry.name.isdigit() and (entry / "manifest.json").is_file()]
    if not versions:
        raise ValueError("model {} has no complete version in {}".format(name, repository))
    return max(versions, key=lambda entry: int(entry.name))


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
    """Copies the latest version of name to the next number as export publishes (staging + rename).

    Directory name and manifest "version" agree (manifest.sha256 rewritten); the model files and
    their sha256 are unchanged.
    Returns the new version.
    """
    source = latest_version_dir(repository, name)
    version = str(int(source.name) + 1)
    staging = Path(repository) / name / ".staging-stress-{}".format(version)
    shutil.copytree(source, staging)
    manifest = json.loads((staging / MANIFEST_FILE).read_text())
    manifest["version"] = int(version)
    write_manifest(staging, manifest)  # and its manifest.sha256
    os.rename(staging, Path(repository) / name / version)
    return version
