"""Model versions for tests, written through the contract as export writes them (no runtime needed)."""
import json
import os

from modelrepo.manifest import file_entry, new_manifest, write_labels, write_manifest

MODEL_NAME = "genet_res50"
LABELS = ["class_0", "class_1", "class_2"]


def write_version(directory, version):
    """A complete version in `directory`: labels, a model.ms of random bytes, manifest and its checksum."""
    directory.mkdir(parents=True)
    write_labels(directory, LABELS)
    (directory / "model.ms").write_bytes(os.urandom(256))  # the contract never parses model files
    write_manifest(directory, new_manifest(
        name=MODEL_NAME, version=version,
        model={"arch": "genet_res50", "num_classes": len(LABELS), "image_size": 8},
        input_spec={"name": "x", "dtype": "float32", "shape": [-1, 3, 8, 8], "layout": "NCHW"},
        output_spec={"name": "logits", "dtype": "float32", "shape": [-1, len(LABELS)]},
        preprocessing={"color_space": "RGB", "resize_size": 9, "crop_size": 8, "interpolation": "bilinear",
                       "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]},
        files={"mslite": file_entry("mslite", directory, batch="dynamic")},
        skipped={}, source_checkpoint={"path": None, "sha256": "random-init", "seed": 0},
        runtime_versions={}, verification={}))
    return directory


def rewrite_manifest(directory, **changes):
    """Change top-level manifest entries the way export writes them (checksums recomputed)."""
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest.update(changes)
    write_manifest(str(directory), manifest)
