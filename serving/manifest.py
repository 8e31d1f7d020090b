"""Which file of a model version each backend serves; the manifest itself is modelrepo's contract."""
from __future__ import annotations

from modelrepo.errors import ManifestError
from modelrepo.manifest import Manifest, ModelFile

# Which manifest "files" entry each backend serves.
BACKEND_FILE_KEYS = {"mslite": "mslite", "mindspore": "mindir", "openvino": "onnx"}


def served_file(manifest: Manifest, backend: str) -> ModelFile:
    """The model file `backend` serves, or ManifestError if export skipped it."""
    key = BACKEND_FILE_KEYS[backend]
    if key not in manifest.files:
        raise ManifestError(f"{manifest.directory}: no '{key}' file for backend {backend} (files: "
                            f"{', '.join(sorted(manifest.files)) or 'none'})")
    return manifest.file(key)
