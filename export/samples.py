"""Verification inputs: real photographs, JPEG-encoded, through training's eval preprocessing."""
import io
from pathlib import Path

import numpy as np

from export.errors import ExportError
from training.presets import EvalPreset

# Photographs bundled inside scikit-image (no download); camera is grey and becomes RGB.
SKIMAGE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "immunohistochemistry",
                  "hubble_deep_field", "camera")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def verification_batches(image_size, batch_sizes, image_dir=None):
    """{"batch<N>": NCHW float32} for each batch size, and a description of the inputs."""
    images, description = preprocessed_images(image_size, image_dir)
    batches = {}
    for size in batch_sizes:
        # Fewer images than the batch: repeat them in order.
        batches[f"batch{size}"] = np.stack([images[i % len(images)] for i in range(size)])
    return batches, description


def preprocessed_images(image_size, image_dir=None, limit=None):
    """The images of `image_dir` (default: the bundled photographs; the first `limit` when given)
    through the eval preset, as one NCHW float32 array, and a description of them."""
    named = (_folder_jpegs(image_dir) if image_dir else _skimage_jpegs())[:limit]
    preset = EvalPreset(image_size=image_size)
    images = np.stack([np.asarray(preset(data), dtype=np.float32) for _, data in named])
    source = f"{image_dir}" if image_dir else "scikit-image photographs"
    description = (f"{len(images)} images from {source} "
                   f"({', '.join(name for name, _ in named)}) through "
                   f"EvalPreset(image_size={image_size})")
    return images, description


def _skimage_jpegs():
    """The bundled scikit-image photographs, each encoded as an RGB JPEG."""
    # Imported here: scikit-image takes seconds to import and --verify-images does not need it.
    from PIL import Image
    from skimage import data

    encoded = []
    for name in SKIMAGE_PHOTOS:
        buffer = io.BytesIO()
        Image.fromarray(getattr(data, name)()).convert("RGB").save(buffer, "JPEG", quality=90)
        encoded.append((name, buffer.getvalue()))
    return encoded


def _folder_jpegs(image_dir):
    """The image files of a folder (sorted by name), as raw bytes."""
    folder = Path(image_dir)
    if not folder.is_dir():
        raise ExportError(f"verification image folder not found: {folder}")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ExportError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return [(p.name, p.read_bytes()) for p in paths]
