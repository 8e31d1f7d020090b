"""Reads one model version directory: manifest.json (schema_version 1), its checksum and its labels.

Everything the server knows about a model comes from here; serving never imports training/.
Integrity: manifest.sha256 must hold the sha256 of manifest.json's bytes, and the manifest the
sha256 of the labels file and of every model file; every path it names must stay inside the
version directory. These catch corrupted, half-copied or hand-edited versions; they do not
authenticate a version against someone who may write to the repository (docs/architecture.md).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from serving.errors import StartupError

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
CHECKSUM_FILE = "manifest.sha256"
REEXPORT = "re-export the version with `python -m export` (checksums of the manifest and labels came later)"
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
# Which manifest "files" entry each backend serves.
BACKEND_FILE_KEYS = {"mslite": "mslite", "mindspore": "mindir"}


class ManifestError(StartupError, ValueError):
    """A version directory whose manifest or labels cannot be served."""


@dataclass(frozen=True)
class Preprocessing:
    """The eval transform of training, as recorded by export."""

    resize_size: int
    crop_size: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    interpolation: str = "bilinear"
    color_space: str = "RGB"


@dataclass(frozen=True)
class ModelFile:
    """One served artefact of a version: absolute path and what the manifest says of it."""

    key: str
    path: str
    format: str
    sha256: str
    input_layout: str
    batch: str


@dataclass(frozen=True)
class Manifest:
    """A parsed, checked manifest.json with its labels."""

    name: str
    version: str
    directory: str
    model: Dict[str, Any]
    labels: List[str]
    input: Dict[str, Any]
    output: Dict[str, Any]
    preprocessing: Preprocessing
    files: Dict[str, Dict[str, Any]]

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return len(self.labels)

    def model_file(self, backend: str) -> ModelFile:
        """The artefact `backend` serves, or ManifestError if export skipped it."""
        key = BACKEND_FILE_KEYS[backend]
        entry = self.files.get(key)
        if entry is None:
            raise ManifestError("{}: no '{}' file for backend {} (files: {})".format(
                self.directory, key, backend, ", ".join(sorted(self.files)) or "none"))
        path = contained_path(self.directory, entry["path"])
        if not os.path.isfile(path):
            raise ManifestError("{}: manifest lists {} but the file is missing".format(self.directory, path))
        return ModelFile(key=key, path=path, format=entry.get("format", ""), sha256=entry.get("sha256", ""),
                         input_layout=entry.get("input_layout", self.input.get("layout", "NCHW")),
                         batch=entry.get("batch", "dynamic"))


def read_manifest(directory: str) -> Manifest:
    """Parse and check `directory`/manifest.json (against manifest.sha256) and the labels file it names."""
    path = os.path.join(directory, MANIFEST_FILE)
    data = _read_bytes(path)
    _check_digest(path, data, _recorded_manifest_digest(directory))
    try:
        raw = json.loads(data.decode("utf-8"))
    except ValueError as error:
        raise ManifestError("cannot parse {}: {}".format(path, error)) from None
    if not isinstance(raw, dict) or raw.get("schema_version") != SCHEMA_VERSION:
        raise ManifestError("{}: not a manifest of schema_version {}".format(path, SCHEMA_VERSION))
    labels = _read_labels(directory, raw.get("labels_file", "labels.txt"), raw.get("labels_sha256"))
    try:
        manifest = Manifest(name=str(raw["name"]), version=str(raw["version"]), directory=directory,
                            model=dict(raw["model"]), labels=labels, input=dict(raw["input"]),
                            output=dict(raw["output"]), preprocessing=_preprocessing(raw["preprocessing"]),
                            files=dict(raw["files"]))
    except (KeyError, TypeError, ValueError) as error:
        raise ManifestError("{}: malformed manifest ({}: {})".format(path, type(error).__name__, error)) from None
    _check_consistent(manifest, path)
    return manifest


def contained_path(directory: str, relative: str) -> str:
    """The real path of `relative` inside `directory`; ManifestError if it leads out of it.

    Absolute paths, '..' and symbolic links pointing outside are all refused: a manifest may only
    name files of its own version directory.
    """
    if not isinstance(relative, str) or not relative:
        raise ManifestError("{}: a file path in the manifest is {!r}, not a relative path".format(
            directory, relative))
    root = os.path.realpath(directory)
    path = os.path.realpath(os.path.join(root, relative))
    if path == root or os.path.commonpath([root, path]) != root:
        raise ManifestError("{}: the manifest names {!r}, which is outside the version directory".format(
            directory, relative))
    return path


def _recorded_manifest_digest(directory: str) -> str:
    """The sha256 manifest.sha256 records (its first word, `sha256sum` format)."""
    path = os.path.join(directory, CHECKSUM_FILE)
    if not os.path.exists(path):
        raise ManifestError("{}: no {}: {}".format(directory, CHECKSUM_FILE, REEXPORT))
    words = _read_bytes(path).decode("ascii", "replace").split()
    if not words or not _SHA256.match(words[0].lower()):
        raise ManifestError("{} does not start with a sha256".format(path))
    return words[0].lower()


def _read_labels(directory: str, labels_file: str, recorded: str) -> List[str]:
    """The labels, one per non-blank line, from bytes checked against the manifest's labels_sha256."""
    if not recorded:
        raise ManifestError("{}: the manifest has no labels_sha256: {}".format(directory, REEXPORT))
    path = contained_path(directory, labels_file)
    data = _read_bytes(path)
    _check_digest(path, data, str(recorded).lower())
    try:
        labels = [line for line in data.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as error:
        raise ManifestError("labels file {} is not UTF-8: {}".format(path, error)) from None
    if not labels:
        raise ManifestError("labels file {} is empty".format(path))
    return labels


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise ManifestError("cannot read {}: {}".format(path, error)) from None


def _check_digest(path: str, data: bytes, expected: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ManifestError("{}: sha256 mismatch (recorded {}, file {})".format(path, expected, actual))


def _preprocessing(raw: Dict[str, Any]) -> Preprocessing:
    spec = Preprocessing(resize_size=int(raw["resize_size"]), crop_size=int(raw["crop_size"]),
                         mean=tuple(float(m) for m in raw["mean"]), std=tuple(float(s) for s in raw["std"]),
                         interpolation=str(raw.get("interpolation", "bilinear")),
                         color_space=str(raw.get("color_space", "RGB")))
    if spec.interpolation != "bilinear" or spec.color_space != "RGB":
        raise ValueError("only bilinear RGB preprocessing is supported, got {} {}".format(
            spec.interpolation, spec.color_space))
    if len(spec.mean) != 3 or len(spec.std) != 3 or min(spec.std) <= 0:
        raise ValueError("mean and std need 3 values each, std positive")
    if not 0 < spec.crop_size <= spec.resize_size:
        raise ValueError("crop_size must be in 1..resize_size")
    return spec


def _check_consistent(manifest: Manifest, path: str) -> None:
    classes = manifest.model.get("num_classes")
    if classes is not None and classes != manifest.num_classes:
        raise ManifestError("{}: num_classes {} but {} labels".format(path, classes, manifest.num_classes))
    shape = manifest.input.get("shape", [])
    crop = manifest.preprocessing.crop_size
    if len(shape) != 4 or list(shape[1:]) != [3, crop, crop]:
        raise ManifestError("{}: input shape {} does not match crop_size {}".format(path, shape, crop))
