"""Checks a version directory before it is served: manifest, version number, the served file's sha256.

Used for the version served at start-up and for every version hot reload picks up, so a
tampered or half-copied model file is never loaded.
"""
from __future__ import annotations

import hashlib
import os

from serving.manifest import Manifest, ManifestError, read_manifest

CHUNK_BYTES = 1 << 20


def verified_manifest(directory: str, backend: str) -> Manifest:
    """The manifest of `directory` after checking its version number and `backend`'s file checksum."""
    manifest = read_manifest(directory)
    name = os.path.basename(os.path.normpath(directory))
    if not manifest.version.isdigit() or int(manifest.version) != int(name):
        raise ManifestError("{}: the directory is version {} but its manifest says version {!r}".format(
            directory, name, manifest.version))
    model_file = manifest.model_file(backend)
    if not model_file.sha256:
        raise ManifestError("{}: the manifest has no sha256 for {}".format(directory, model_file.path))
    actual = sha256_of(model_file.path)
    if actual != model_file.sha256.lower():
        raise ManifestError("{}: sha256 mismatch (manifest {}, file {})".format(
            model_file.path, model_file.sha256, actual))
    return manifest


def sha256_of(path: str) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
                digest.update(chunk)
    except OSError as error:
        raise ManifestError("cannot read {}: {}".format(path, error)) from None
    return digest.hexdigest()
