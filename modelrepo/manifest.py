"""manifest.json of a model version (schema_version 1, docs/architecture.md): written, read and checked.

Integrity: manifest.sha256 holds the sha256 of manifest.json's bytes (`sha256sum -c` format), and
the manifest the sha256 of the labels file and of every model file; every path it names must stay
inside the version directory. These catch corrupted, half-copied or hand-edited versions; they do
not authenticate a version against someone who may write to the repository (docs/architecture.md).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

from modelrepo.checksums import sha256_of
from modelrepo.errors import ManifestError

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
CHECKSUM_FILE = "manifest.sha256"
LABELS_FILE = "labels.txt"
# `files` key -> (file name, format, runtime that loads it)
FILE_SPECS = {
    "mindir": ("model.mindir", "MINDIR", "mindspore"),
    "onnx": ("model.onnx", "ONNX", "onnxruntime"),
    "mslite": ("model.ms", "MINDIR_LITE", "mindspore_lite"),
    "air": ("model.air", "AIR", "ascend"),
    "om": ("model.om", "OM", "ascend_acl"),
}
REEXPORT = "re-export the version with `python -m export` (checksums of the manifest and labels came later)"
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")


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
    """One model file of a version: absolute path and what the manifest says of it."""

    key: str
    path: str
    format: str
    sha256: str
    input_layout: str
    batch: str
    verified_precisions: Tuple[str, ...] = ()
    """The precisions (f32, bf16) export verified the serving runtime in on this file (serving.manifest)."""


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
    verification: Dict[str, Any] = field(default_factory=dict)
    """What export verified: inputs, tolerance and one result per file and runtime (docs/architecture.md)."""

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return len(self.labels)

    def file(self, key: str) -> ModelFile:
        """The model file listed under `files[key]`, which must exist inside the version directory."""
        entry = self.files.get(key)
        if entry is None:
            raise ManifestError(f"{self.directory}: no '{key}' file (files: {', '.join(sorted(self.files)) or 'none'})")
        path = contained_path(self.directory, entry["path"])
        if not os.path.isfile(path):
            raise ManifestError(f"{self.directory}: manifest lists {path} but the file is missing")
        return ModelFile(key=key, path=path, format=entry.get("format", ""), sha256=entry.get("sha256", ""),
                         input_layout=entry.get("input_layout", self.input.get("layout", "NCHW")),
                         batch=entry.get("batch", "dynamic"))


def read_manifest(directory) -> Manifest:
    """Parse and check `directory`/manifest.json (against manifest.sha256) and the labels file it names."""
    directory = os.fspath(directory)
    path = os.path.join(directory, MANIFEST_FILE)
    data = _read_bytes(path)
    _check_digest(path, data, _recorded_manifest_digest(directory))
    try:
        raw = json.loads(data.decode("utf-8"))
    except ValueError as error:
        raise ManifestError(f"cannot parse {path}: {error}") from None
    if not isinstance(raw, dict) or raw.get("schema_version") != SCHEMA_VERSION:
        raise ManifestError(f"{path}: not a manifest of schema_version {SCHEMA_VERSION}")
    labels = _read_labels(directory, raw.get("labels_file", LABELS_FILE), raw.get("labels_sha256"))
    try:
        manifest = Manifest(name=str(raw["name"]), version=str(raw["version"]), directory=directory,
                            model=dict(raw["model"]), labels=labels, input=dict(raw["input"]),
                            output=dict(raw["output"]), preprocessing=_preprocessing(raw["preprocessing"]),
                            files=dict(raw["files"]), verification=dict(raw.get("verification") or {}))
    except (KeyError, TypeError, ValueError) as error:
        raise ManifestError(f"{path}: malformed manifest ({type(error).__name__}: {error})") from None
    _check_consistent(manifest, path)
    return manifest


def read_version(directory) -> Manifest:
    """read_manifest, and the manifest's version must be exactly the directory's name."""
    manifest = read_manifest(directory)
    name = os.path.basename(os.path.normpath(directory))
    if manifest.version != name:
        raise ManifestError(f"{directory}: the directory is version {name} but its manifest says version "
                            f"{manifest.version!r}")
    return manifest


def contained_path(directory, relative: str) -> str:
    """The real path of `relative` inside `directory`; ManifestError if it leads out of it.

    Absolute paths, '..' and symbolic links pointing outside are all refused: a manifest may only
    name files of its own version directory.
    """
    if not isinstance(relative, str) or not relative:
        raise ManifestError(f"{directory}: a file path in the manifest is {relative!r}, not a relative path")
    root = os.path.realpath(directory)
    path = os.path.realpath(os.path.join(root, relative))
    if path == root or os.path.commonpath([root, path]) != root:
        raise ManifestError(f"{directory}: the manifest names {relative!r}, which is outside the version directory")
    return path


def file_entry(key: str, directory, *, batch, input_layout="NCHW", input_dtype="float32", **extra) -> Dict[str, Any]:
    """One `files` entry: path, format, runtime, sha256, batch ("dynamic" or sizes), layout, dtype, `extra`."""
    name, file_format, runtime = FILE_SPECS[key]
    entry = {"path": name, "format": file_format, "runtime": runtime,
             "sha256": sha256_of(os.path.join(directory, name)), "batch": batch,
             "input_layout": input_layout, "input_dtype": input_dtype}
    entry.update(extra)
    return entry


def new_manifest(*, name: str, version: int, model: Dict[str, Any], input_spec: Dict[str, Any],
                 output_spec: Dict[str, Any], preprocessing: Dict[str, Any], files: Dict[str, Any],
                 skipped: Dict[str, str], source_checkpoint: Dict[str, Any], runtime_versions: Dict[str, Any],
                 verification: Dict[str, Any]) -> Dict[str, Any]:
    """The manifest dict of a new version, keys in schema order; `files` maps keys to file_entry() dicts."""
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "version": version,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": model,
        "labels_file": LABELS_FILE,
        "input": input_spec,
        "output": output_spec,
        "preprocessing": preprocessing,
        "files": files,
        "skipped": skipped,
        "source_checkpoint": source_checkpoint,
        "runtime_versions": runtime_versions,
        "verification": verification,
    }


def write_labels(directory, labels: List[str]) -> None:
    """Write the class names, line i = class i, as the version's labels file."""
    with open(os.path.join(directory, LABELS_FILE), "w", encoding="utf-8") as handle:
        handle.write("\n".join(labels) + "\n")


def write_manifest(directory, manifest: Dict[str, Any]) -> None:
    """Write manifest.json, with the sha256 of the labels file beside it, and manifest.sha256.

    manifest.sha256 holds the sha256 of manifest.json's bytes in `sha256sum -c` format; readers
    check it, and through the manifest the labels and every model file. Any earlier manifest,
    even a read-only one, is replaced.
    """
    data = (json.dumps(_with_labels_digest(directory, manifest), indent=2) + "\n").encode("utf-8")
    _replace(os.path.join(directory, MANIFEST_FILE), data)
    _replace(os.path.join(directory, CHECKSUM_FILE),
             f"{hashlib.sha256(data).hexdigest()}  {MANIFEST_FILE}\n".encode("ascii"))


def _with_labels_digest(directory, manifest: Dict[str, Any]) -> Dict[str, Any]:
    """`manifest` with "labels_sha256" (of the labels file in `directory`) right after "labels_file"."""
    entries = []
    for key, value in manifest.items():
        if key != "labels_sha256":
            entries.append((key, value))
        if key == "labels_file":
            entries.append(("labels_sha256", sha256_of(os.path.join(directory, value))))
    return dict(entries)


def _replace(path: str, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename."""
    with open(path + ".tmp", "wb") as handle:
        handle.write(data)
    os.replace(path + ".tmp", path)


def _recorded_manifest_digest(directory: str) -> str:
    """The sha256 manifest.sha256 records (its first word, `sha256sum` format)."""
    path = os.path.join(directory, CHECKSUM_FILE)
    if not os.path.exists(path):
        raise ManifestError(f"{directory}: no {CHECKSUM_FILE}: {REEXPORT}")
    words = _read_bytes(path).decode("ascii", "replace").split()
    if not words or not _SHA256.match(words[0].lower()):
        raise ManifestError(f"{path} does not start with a sha256")
    return words[0].lower()


def _read_labels(directory: str, labels_file: str, recorded: str) -> List[str]:
    """The labels, one per non-blank line, from bytes checked against the manifest's labels_sha256."""
    if not recorded:
        raise ManifestError(f"{directory}: the manifest has no labels_sha256: {REEXPORT}")
    path = contained_path(directory, labels_file)
    data = _read_bytes(path)
    _check_digest(path, data, str(recorded).lower())
    try:
        labels = [line for line in data.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as error:
        raise ManifestError(f"labels file {path} is not UTF-8: {error}") from None
    if not labels:
        raise ManifestError(f"labels file {path} is empty")
    return labels


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise ManifestError(f"cannot read {path}: {error}") from None


def _check_digest(path: str, data: bytes, expected: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ManifestError(f"{path}: sha256 mismatch (recorded {expected}, file {actual})")


def _preprocessing(raw: Dict[str, Any]) -> Preprocessing:
    spec = Preprocessing(resize_size=int(raw["resize_size"]), crop_size=int(raw["crop_size"]),
                         mean=tuple(float(m) for m in raw["mean"]), std=tuple(float(s) for s in raw["std"]),
                         interpolation=str(raw.get("interpolation", "bilinear")),
                         color_space=str(raw.get("color_space", "RGB")))
    if spec.interpolation != "bilinear" or spec.color_space != "RGB":
        raise ValueError(f"only bilinear RGB preprocessing is supported, got {spec.interpolation} {spec.color_space}")
    if len(spec.mean) != 3 or len(spec.std) != 3 or min(spec.std) <= 0:
        raise ValueError("mean and std need 3 values each, std positive")
    if not 0 < spec.crop_size <= spec.resize_size:
        raise ValueError("crop_size must be in 1..resize_size")
    return spec


def _check_consistent(manifest: Manifest, path: str) -> None:
    classes = manifest.model.get("num_classes")
    if classes is not None and classes != manifest.num_classes:
        raise ManifestError(f"{path}: num_classes {classes} but {manifest.num_classes} labels")
    shape = manifest.input.get("shape", [])
    crop = manifest.preprocessing.crop_size
    if len(shape) != 4 or list(shape[1:]) != [3, crop, crop]:
        raise ManifestError(f"{path}: input shape {shape} does not match crop_size {crop}")
