"""Checks a version directory before it is served, and hands the runtime the exact bytes it checked.

`verified_manifest` (start-up and every version hot reload picks up) checks the manifest chain
(modelrepo.manifest: manifest.sha256, labels sha256, paths inside the directory), that the
manifest's version is the directory's name, and the served file's sha256, so a broken version is
refused before anything is built. `private_copy` is what the runtime loads: the served file
copied into a new private directory while being hashed, checked again, so a file changed in the
repository after the first check, or between check and use, is never loaded. Neither runtime
can load a model from memory (mindspore_lite 2.0's Model only has build_from_file; mindspore.load
takes a '.mindir' path), hence a copy rather than a buffer.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import IO, Iterator, Optional

from modelrepo.checksums import sha256_of
from modelrepo.errors import ManifestError
from modelrepo.manifest import Manifest, ModelFile, read_version
from serving.manifest import served_file


def verified_manifest(directory: str, backend: str) -> Manifest:
    """The manifest of `directory` after checking its version number and `backend`'s file checksum."""
    manifest = read_version(directory)
    model_file = served_file(manifest, backend)
    if not model_file.sha256:
        raise ManifestError(f"{directory}: the manifest has no sha256 for {model_file.path}")
    _check_sha256(model_file, _sha256_copy(model_file.path, None))
    return manifest


@contextmanager
def private_copy(model_file: ModelFile) -> Iterator[ModelFile]:
    """`model_file` copied into a new directory only this user can enter, checked against its sha256.

    Yields the ModelFile of the copy (same name, so runtimes that check the extension accept it);
    the copy is removed on exit. Directory: $TMPDIR, else /tmp.
    """
    directory = tempfile.mkdtemp(prefix="genet-model-")
    try:
        path = os.path.join(directory, os.path.basename(model_file.path))
        with open(path, "xb") as target:
            _check_sha256(model_file, _sha256_copy(model_file.path, target))
        yield dataclasses.replace(model_file, path=path)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _sha256_copy(path: str, target: Optional[IO[bytes]]) -> str:
    """Hex sha256 of a file, its bytes also written to `target` unless it is None."""
    try:
        return sha256_of(path, copy_to=target)
    except OSError as error:
        raise ManifestError(f"cannot read {path}: {error}") from None


def _check_sha256(model_file: ModelFile, actual: str) -> None:
    if actual != model_file.sha256.lower():
        raise ManifestError(f"{model_file.path}: sha256 mismatch (manifest {model_file.sha256}, file {actual})")
