"""Train and eval image transforms, defined once (torchvision `presets.py` style).

Everything that turns image bytes into network input uses these classes: the dataset pipeline,
evaluation, and export, which writes `EvalPreset.to_manifest()` into manifest.json so that serving
reproduces the eval transform exactly (see docs/architecture.md).
"""
from typing import Any, Dict, List, Tuple

import numpy as np
from mindspore.dataset import transforms, vision
from mindspore.dataset.vision import Inter

# ImageNet statistics on the 0..255 scale, as in the reference dataset.py.
IMAGENET_MEAN: Tuple[float, float, float] = (123.675, 116.28, 103.53)
IMAGENET_STD: Tuple[float, float, float] = (58.395, 57.12, 57.375)
# The reference resizes to 256 for a 224 crop; other image sizes keep that ratio.
RESIZE_RATIO = 256 / 224


def _check_image_size(image_size: int) -> int:
    """Return `image_size` if it is a positive int, else raise ValueError."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    return image_size


class EvalPreset:
    """Decode -> Resize(shorter side, bilinear) -> CenterCrop -> Normalize -> HWC2CHW.

    `resize_size` is round(image_size * 256 / 224): 256 at 224, 55 at 48.
    """

    def __init__(self, *, image_size: int = 224) -> None:
        self.crop_size = _check_image_size(image_size)
        self.resize_size = round(image_size * RESIZE_RATIO)
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD
        self.interpolation = "bilinear"

    def ops(self) -> List[Any]:
        """Return the MindSpore vision ops in order, for `Dataset.map` or eager use."""
        return [
            vision.Decode(),
            vision.Resize(self.resize_size, Inter.LINEAR),
            vision.CenterCrop(self.crop_size),
            vision.Normalize(mean=list(self.mean), std=list(self.std)),
            vision.HWC2CHW(),
        ]

    def __call__(self, image_bytes: bytes) -> np.ndarray:
        """Apply the transform eagerly to one encoded image; returns float32 CHW."""
        return transforms.Compose(self.ops())(np.frombuffer(image_bytes, dtype=np.uint8))

    def to_manifest(self) -> Dict[str, Any]:
        """Return the `preprocessing` section of manifest.json (docs/architecture.md)."""
        return {
            "color_space": "RGB",
            "resize_size": self.resize_size,
            "crop_size": self.crop_size,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(image_size={self.crop_size}, "
                f"resize_size={self.resize_size}, interpolation={self.interpolation!r})")


class TrainPreset:
    """RandomCropDecodeResize -> RandomHorizontalFlip -> Normalize -> HWC2CHW (the reference's)."""

    def __init__(self, *, image_size: int = 224, scale: Tuple[float, float] = (0.08, 1.0),
                 ratio: Tuple[float, float] = (0.75, 1.333), hflip_prob: float = 0.5) -> None:
        self.image_size = _check_image_size(image_size)
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        if not 0.0 <= hflip_prob <= 1.0:
            raise ValueError(f"hflip_prob must be in [0, 1], got {hflip_prob!r}")
        self.hflip_prob = hflip_prob
        self.mean = IMAGENET_MEAN
        self.std = IMAGENET_STD

    def ops(self) -> List[Any]:
        """Return the MindSpore vision ops in order, for `Dataset.map`."""
        return [
            vision.RandomCropDecodeResize(self.image_size, scale=self.scale, ratio=self.ratio,
                                          interpolation=Inter.LINEAR),
            vision.RandomHorizontalFlip(prob=self.hflip_prob),
            vision.Normalize(mean=list(self.mean), std=list(self.std)),
            vision.HWC2CHW(),
        ]

    def __call__(self, image_bytes: bytes) -> np.ndarray:
        """Apply the random transform eagerly to one encoded image; returns float32 CHW."""
        return transforms.Compose(self.ops())(np.frombuffer(image_bytes, dtype=np.uint8))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(image_size={self.image_size}, scale={self.scale}, "
                f"ratio={self.ratio}, hflip_prob={self.hflip_prob})")
