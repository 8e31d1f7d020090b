"""Which file of a model version each backend serves, and in which precisions export verified it; the manifest
itself is modelrepo's contract."""
from __future__ import annotations

import dataclasses
from typing import Tuple

from modelrepo.errors import ManifestError
from modelrepo.manifest import Manifest, ModelFile

# Which manifest "files" entry each backend serves.
BACKEND_FILE_KEYS = {"mslite": "mslite", "mindspore": "mindir", "openvino": "onnx"}
# The manifest's verification result of each precision a backend computes in (export.verify).
VERIFICATION_RESULTS = {"mslite": {"f32": "mslite"}, "mindspore": {"f32": "mindir"},
                        "openvino": {"f32": "openvino", "bf16": "openvino-bf16"}}


def served_file(manifest: Manifest, backend: str) -> ModelFile:
    """The model file `backend` serves, with the precisions export verified it in; ManifestError if export
    skipped it."""
    key = BACKEND_FILE_KEYS[backend]
    if key not in manifest.files:
        raise ManifestError(f"{manifest.directory}: no '{key}' file for backend {backend} (files: "
                            f"{', '.join(sorted(manifest.files)) or 'none'})")
    return dataclasses.replace(manifest.file(key), verified_precisions=verified_precisions(manifest, backend))


def verified_precisions(manifest: Manifest, backend: str) -> Tuple[str, ...]:
    """The precisions whose verification result for `backend` passed at export (none skipped or absent)."""
    results = manifest.verification.get("results", {})
    return tuple(precision for precision, result in VERIFICATION_RESULTS[backend].items()
                 if results.get(result, {}).get("passed") is True)
