"""manifest.json of a model version (schema in docs/architecture.md), its checksum file and file digests."""
import hashlib
import json
import os
import time

MANIFEST_FILE = "manifest.json"
CHECKSUM_FILE = "manifest.sha256"
LABELS_FILE = "labels.txt"
SCHEMA_VERSION = 1
ARCH = "genet_res50"

# format key -> (file name, format, runtime that loads it)
FILE_SPECS = {
    "mindir": ("model.mindir", "MINDIR", "mindspore"),
    "onnx": ("model.onnx", "ONNX", "onnxruntime"),
    "mslite": ("model.ms", "MINDIR_LITE", "mindspore_lite"),
    "air": ("model.air", "AIR", "ascend"),
    "om": ("model.om", "OM", "ascend_acl"),
}


def sha256_of(path):
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(fmt, directory, *, batch, input_layout="NCHW", input_dtype="float32", **extra):
    """One `files` entry: path, format, runtime, sha256, batch ("dynamic" or sizes), layout."""
    name, file_format, runtime = FILE_SPECS[fmt]
    entry = {"path": name, "format": file_format, "runtime": runtime,
             "sha256": sha256_of(os.path.join(directory, name)), "batch": batch,
             "input_layout": input_layout, "input_dtype": input_dtype}
    entry.update(extra)
    return entry


def build_manifest(*, name, version, model_cfg, preprocessing, files, skipped, source,
                   runtime_versions, verification):
    """The manifest dict; `files` maps format keys to file_entry() dicts."""
    size, classes = model_cfg.image_size, model_cfg.num_classes
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "version": version,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {"arch": ARCH, "variant": model_cfg.variant, "extra": model_cfg.extra,
                  "mlp": model_cfg.mlp, "num_classes": classes, "image_size": size,
                  "width_multiplier": model_cfg.width_multiplier},
        "labels_file": LABELS_FILE,
        "input": {"name": "x", "dtype": "float32", "shape": [-1, 3, size, size], "layout": "NCHW"},
        "output": {"name": "logits", "dtype": "float32", "shape": [-1, classes]},
        "preprocessing": preprocessing,
        "files": files,
        "skipped": skipped,
        "source_checkpoint": source,
        "runtime_versions": runtime_versions,
        "verification": verification,
    }


def write_manifest(directory, manifest):
    """Write manifest.json, with the sha256 of the labels file beside it, and manifest.sha256.

    manifest.sha256 holds the sha256 of manifest.json's bytes in `sha256sum -c` format; serving
    checks it, and through the manifest the labels and every model file. Any earlier manifest,
    even a read-only one, is replaced.
    """
    data = (json.dumps(with_labels_digest(directory, manifest), indent=2) + "\n").encode("utf-8")
    _replace(os.path.join(directory, MANIFEST_FILE), data)
    _replace(os.path.join(directory, CHECKSUM_FILE),
             f"{hashlib.sha256(data).hexdigest()}  {MANIFEST_FILE}\n".encode("ascii"))


def with_labels_digest(directory, manifest):
    """`manifest` with "labels_sha256" (of the labels file in `directory`) right after "labels_file"."""
    entries = []
    for key, value in manifest.items():
        if key != "labels_sha256":
            entries.append((key, value))
        if key == "labels_file":
            entries.append(("labels_sha256", sha256_of(os.path.join(directory, value))))
    return dict(entries)


def _replace(path, data):
    """Write `data` to `path` through a temporary file and a rename."""
    with open(path + ".tmp", "wb") as handle:
        handle.write(data)
    os.replace(path + ".tmp", path)
