"""The versioned model repository: staging directories and race-free publication of versions.

A version is built in `<repository>/<name>/.staging-*` and renamed to `<repository>/<name>/<N>`.
`os.rename` of a directory fails when the target is a non-empty directory, so two exports that
pick the same number cannot overwrite each other: the loser takes the next free number.
Readers must ignore entries whose name is not all digits.
"""
import errno
import logging
import os
import shutil
import tempfile
from pathlib import Path

from export.errors import ExportError

log = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"
MAX_PUBLISH_ATTEMPTS = 100


def create_staging(repository, name):
    """Create the model folder if needed and a fresh staging directory inside it."""
    model_dir = Path(repository) / name
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=model_dir))
    except OSError as exc:
        raise ExportError(f"model repository {repository} is not writable: {exc}") from None


def existing_versions(model_dir):
    """The published version numbers in `model_dir`, ascending."""
    return sorted(int(entry.name) for entry in Path(model_dir).iterdir()
                  if entry.name.isdigit())


def publish(staging, prepare):
    """Rename `staging` to the next free version; `prepare(version)` runs before each try.

    `prepare` writes whatever depends on the version number (the manifest). The published
    directory is world-readable and its files read-only. Returns the version directory.
    """
    model_dir = Path(staging).parent
    for _ in range(MAX_PUBLISH_ATTEMPTS):
        version = (existing_versions(model_dir) or [0])[-1] + 1
        target = model_dir / str(version)
        prepare(version)
        _make_read_only(staging)
        if target.exists():  # an empty directory would not stop the rename below
            continue
        try:
            os.rename(staging, target)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                log.info("version %d was taken concurrently; trying the next", version)
                continue
            raise ExportError(f"cannot publish {target}: {exc}") from None
        log.info("published %s", target)
        return target
    raise ExportError(f"no free version number in {model_dir} after {MAX_PUBLISH_ATTEMPTS} tries")


def _make_read_only(directory):
    """Directory 0755 (mkdtemp makes it 0700), files 0444 (MindSpore writes some as 0400)."""
    os.chmod(directory, 0o755)
    for entry in Path(directory).iterdir():
        os.chmod(entry, 0o444)


def discard(staging):
    """Remove a staging directory and everything in it."""
    shutil.rmtree(staging, ignore_errors=True)
