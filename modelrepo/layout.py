"""Where model versions live: `<root>/<name>/<N>/`, built in a staging directory and renamed into place.

A version is built in `<root>/<name>/.staging-*` and renamed to `<root>/<name>/<N>`. `os.rename` of
a directory fails when the target is a non-empty directory, so two writers that pick the same
number cannot overwrite each other: the loser takes the next free number. A version is complete
when its directory is named by a number in canonical decimal ("2", never "02" or "²") and holds a
manifest.json; readers ignore every other entry.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, List

from modelrepo.errors import RepositoryError
from modelrepo.manifest import MANIFEST_FILE

LOG = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"
MAX_PUBLISH_ATTEMPTS = 100
_VERSION_NAME = re.compile(r"(0|[1-9][0-9]{0,17})\Z")


def model_names(repository) -> List[str]:
    """Sorted names of the models that have at least one complete version."""
    if not os.path.isdir(repository):
        raise RepositoryError(f"model repository {repository} is not a directory")
    return sorted(name for name in os.listdir(repository)
                  if os.path.isdir(os.path.join(repository, name)) and versions(repository, name))


def versions(repository, name: str) -> List[int]:
    """Ascending complete versions of `name`: directories named by a number holding a manifest.json.

    Only canonical names count ("02" is ignored), so a version's number and its directory name
    convert both ways.
    """
    root = os.path.join(repository, name)
    found = []
    for entry in os.listdir(root):
        if _VERSION_NAME.match(entry) and os.path.isfile(os.path.join(root, entry, MANIFEST_FILE)):
            found.append(int(entry))
    return sorted(found)


def latest_version_dir(repository, name: str) -> Path:
    """The directory of the highest complete version of `name`."""
    found = versions(repository, name)
    if not found:
        raise RepositoryError(f"model {name!r} has no complete version in {repository}")
    return Path(repository, name, str(found[-1]))


def taken_numbers(model_dir) -> List[int]:
    """Every number a version directory in `model_dir` uses, complete or not, ascending."""
    return sorted(int(entry.name) for entry in Path(model_dir).iterdir() if entry.name.isdigit())


def create_staging(repository, name: str) -> Path:
    """Create the model folder if needed and a fresh staging directory inside it."""
    model_dir = Path(repository) / name
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=model_dir))
    except OSError as exc:
        raise RepositoryError(f"model repository {repository} is not writable: {exc}") from None


def publish(staging, prepare: Callable[[int], None]) -> Path:
    """Rename `staging` to the next free version; `prepare(version)` runs before each try.

    `prepare` writes whatever depends on the version number (the manifest). The published
    directory is world-readable and its files read-only. Returns the version directory.
    """
    model_dir = Path(staging).parent
    for _ in range(MAX_PUBLISH_ATTEMPTS):
        version = (taken_numbers(model_dir) or [0])[-1] + 1
        target = model_dir / str(version)
        prepare(version)
        _make_read_only(staging)
        if target.exists():  # an empty directory would not stop the rename below
            continue
        try:
            os.rename(staging, target)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                LOG.info("version %d was taken concurrently; trying the next", version)
                continue
            raise RepositoryError(f"cannot publish {target}: {exc}") from None
        LOG.info("published %s", target)
        return target
    raise RepositoryError(f"no free version number in {model_dir} after {MAX_PUBLISH_ATTEMPTS} tries")


def discard(staging) -> None:
    """Remove a staging directory and everything in it."""
    shutil.rmtree(staging, ignore_errors=True)


def _make_read_only(directory) -> None:
    """Directory 0755 (mkdtemp makes it 0700), files 0444 (MindSpore writes some as 0400)."""
    os.chmod(directory, 0o755)
    for entry in Path(directory).iterdir():
        os.chmod(entry, 0o444)
