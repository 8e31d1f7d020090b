"""Training's eval transform, reproduced from the manifest: bytes -> normalised float32 CHW tensor.

MindSpore's eval pipeline is Decode -> Resize(resize_size, LINEAR) -> CenterCrop(crop_size) ->
Normalize(mean, std) -> HWC2CHW. Resize with an int size == cv2.resize(INTER_LINEAR) to the size
`resized_size` computes (MindSpore's float32 rule, compared with MindSpore's own Resize on every
shape up to 600 x 600 by tests/serving/test_resize_rule.py); CenterCrop == slicing at
floor((side - crop) / 2). A 1x1 image is valid: it is scaled up like any small image.
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import cv2
import numpy as np

from modelrepo.manifest import Preprocessing
from serving.decoding import decode_rgb
from serving.errors import InvalidInput


@functools.lru_cache(maxsize=4096)  # numpy scalar arithmetic costs microseconds; served images repeat sizes
def resized_size(height: int, width: int, resize_size: int) -> Tuple[int, int]:
    """(height, width) after MindSpore's Resize(resize_size): the shorter side becomes resize_size.

    The longer side is floor(float32(longer) / shorter * resize_size), each operation rounded to
    float32 as in MindSpore's C++ ResizeOp. It is one pixel short of the exact
    longer * resize_size / shorter whenever that is an integer float32 lands just below
    (23 x 28 at 46: 46 x 55, not 46 x 56).
    """
    if height < width:
        return resize_size, _longer_side(width, height, resize_size)
    return _longer_side(height, width, resize_size), resize_size


def _longer_side(longer: int, shorter: int, resize_size: int) -> int:
    """MindSpore's float32 computation of the resized longer side."""
    return int(np.floor(np.float32(longer) / np.float32(shorter) * np.float32(resize_size)))


class Preprocessor:
    """Callable turning encoded image bytes into the model's input for one image (3, crop, crop)."""

    def __init__(self, spec: Preprocessing, max_pixels: int) -> None:
        self.spec = spec
        self.max_pixels = max_pixels
        self._mean = np.asarray(spec.mean, np.float32).reshape(3, 1, 1)
        self._std = np.asarray(spec.std, np.float32).reshape(3, 1, 1)

    def __call__(self, data: bytes) -> np.ndarray:
        """Decode, resize, center-crop, normalise and transpose one image."""
        return self.transform(decode_rgb(data, self.max_pixels, self.check_resized_size))

    def small(self, data: bytes, max_pixels: int) -> Optional[np.ndarray]:
        """The model's input for an image of at most `max_pixels` pixels that also resizes to at most
        2 x resize_size^2; None, before any pixel is decoded, for any larger one."""
        try:
            return self.transform(decode_rgb(data, self.max_pixels, lambda w, h: self._check_small(w, h, max_pixels)))
        except _NotSmall:
            return None

    def _check_small(self, width: int, height: int, max_pixels: int) -> None:
        new_h, new_w = resized_size(height, width, self.spec.resize_size)
        if width * height > max_pixels or new_h * new_w > 2 * self.spec.resize_size ** 2:
            raise _NotSmall()

    def check_resized_size(self, width: int, height: int) -> None:
        """Refuse images whose resized copy would exceed the pixel limit (long thin strips:
        a 1 x 200,000 PNG of 661 bytes would otherwise resize to 11 billion pixels)."""
        new_h, new_w = resized_size(height, width, self.spec.resize_size)
        if new_h * new_w > self.max_pixels:
            raise InvalidInput(f"{width} x {height} resizes to {new_w} x {new_h} = {new_h * new_w} pixels, over the "
                               f"pixel limit of {self.max_pixels} (--max-image-pixels)")

    def transform(self, rgb: np.ndarray) -> np.ndarray:
        """The eval transform on a decoded RGB uint8 (H, W, 3) array."""
        height, width = rgb.shape[:2]
        new_h, new_w = resized_size(height, width, self.spec.resize_size)
        if (new_h, new_w) != (height, width):
            rgb = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        crop = self.spec.crop_size
        top, left = (new_h - crop) // 2, (new_w - crop) // 2
        # Planes first, then the float math on contiguous planes: the same values as normalising
        # (H, W, 3) pixels, 4x faster at 40 px and 13x at 224 px.
        planes = rgb[top:top + crop, left:left + crop].transpose(2, 0, 1).astype(np.float32, order="C")
        planes -= self._mean
        planes /= self._std
        return planes


class _NotSmall(Exception):
    """Raised from the header check of Preprocessor.small: the image is to be preprocessed elsewhere."""
