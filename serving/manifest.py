"""Reads one model version directory: manifest.json (schema_version 1) and its labels file.

Everything the server knows about a model comes from here; serving never imports training/.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

SCHEMA_VERSION = 1
# Which manifest "files" entry each backend serves.
BACKEND_FILE_KEYS = {"mslite": "mslite", "mindspore": "mindir"}


class ManifestError(ValueError):
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
        path = os.path.join(self.directory, entry["path"])
        if not os.path.isfile(path):
            raise ManifestError("{}: manifest lists {} but the file is missing".format(self.directory, path))
        return ModelFile(key=key, path=path, format=entry.get("format", ""), sha256=entry.get("sha256", ""),
                         input_layout=entry.get("input_layout", self.input.get("layout", "NCHW")),
                         batch=entry.get("batch", "dynamic"))


def read_manifest(directory: str) -> Manifest:
    """Parse and check `directory`/manifest.json and the labels file it names."""
    path = os.path.join(directory, "manifest.json")
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
    except (OSError, ValueError) as error:
        raise ManifestError("cannot read {}: {}".format(path, error)) from None
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise ManifestError("{}: schema_version {!r} is not {}".format(path, raw.get("schema_version"),
                                                                     SCHEMA_VERSION))
    try:
        labels = _read_labels(os.path.join(directory, raw.get("labels_file", "labels.txt")))
        manifest = Manifest(name=str(raw["name"]), version=str(raw["version"]), directory=directory,
                            model=dict(raw["model"]), labels=labels, input=dict(raw["input"]),
                            output=dict(raw["output"]), preprocessing=_preprocessing(raw["preprocessing"]),
                            files=dict(raw["files"]))
    except (KeyError, TypeError, ValueError) as error:
        raise ManifestError("{}: malformed manifest ({}: {})".format(path, type(error).__name__, error)) from None
    _check_consistent(manifest, path)
    return manifest


def _read_labels(path: str) -> List[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            labels = [line.rstrip("\n") for line in handle if line.strip()]
    except OSError as error:
        raise ManifestError("cannot read labels {}: {}".format(path, error)) from None
    if not labels:
        raise ManifestError("labels file {} is empty".format(path))
    return labels


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
