"""Decodes untrusted image bytes to an RGB uint8 HWC array exactly as MindSpore's `Decode` does.

Measured against `mindspore.dataset.vision.Decode` (MindSpore 2.10, eagerly, on generated files):
- JPEG: Decode uses libjpeg and ignores EXIF orientation. Pillow's JPEG decoder gives identical
  pixels for baseline, progressive, grey and CMYK files (max difference 0), and refuses truncated
  data, where OpenCV silently fills the missing rows with grey. JPEG is decoded with Pillow.
- Everything else (PNG, BMP, TIFF, PNM) goes through OpenCV in Decode: cv2.imdecode(IMREAD_COLOR)
  matched it exactly on palette, grey, grey+alpha, RGBA, 1-bit and 16-bit PNG (16-bit scaled by
  >> 8), RGBA TIFF (alpha premultiplied by libtiff) and BMP, where Pillow's own conversions
  differed by up to 241 levels. OpenCV refuses truncated PNG, BMP and TIFF data.
- Decode refuses GIF, WebP, TGA, ICO, JPEG 2000, PCX and SGI, so the server refuses them too:
  training could not have read them.
Pillow reads only the header first, so the pixel limit is enforced before any pixel is decoded.
`Decode` itself is never called: it can kill the process (SIGFPE) on malformed JPEG data.
"""
from __future__ import annotations

import io
from typing import Callable, Optional

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from serving.errors import InvalidInput

JPEG_FORMATS = ("JPEG", "MPO")
OPENCV_FORMATS = ("PNG", "BMP", "TIFF", "PPM")
_CV_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def decode_rgb(data: bytes, max_pixels: int,
               check_size: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
    """Decode `data` to an RGB uint8 array (H, W, 3); InvalidInput on anything unusable.

    `check_size(width, height)`, if given, vets the header's size before any pixel is decoded.
    """
    if not data:
        raise InvalidInput("empty image (0 bytes)")
    image = _open_header(data, max_pixels)
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidInput("image has no pixels ({} x {})".format(width, height))
    if width * height > max_pixels:
        raise InvalidInput("{} x {} = {} pixels exceeds the pixel limit of {} (--max-image-pixels)".format(
            width, height, width * height, max_pixels))
    if check_size is not None:
        check_size(width, height)
    if image.format in JPEG_FORMATS:
        rgb = _decode_jpeg(image)
    elif image.format in OPENCV_FORMATS:
        rgb = _decode_opencv(data, image.format)
    else:
        raise InvalidInput("{} images are not supported: training's decoder reads JPEG, PNG, BMP, TIFF "
                           "and PNM".format(image.format))
    if rgb.shape[:2] != (height, width):
        raise InvalidInput("decoded size {}x{} differs from the header's {}x{}".format(
            rgb.shape[1], rgb.shape[0], width, height))
    return rgb


def _open_header(data: bytes, max_pixels: int) -> Image.Image:
    """Identify the format and size from the header only (Pillow opens lazily)."""
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:  # Pillow's own limit, far above the default one
        raise InvalidInput("over the pixel limit of {} (--max-image-pixels): {}".format(max_pixels, error)) from None
    except UnidentifiedImageError:
        raise InvalidInput("not an image in a known format (first bytes {!r})".format(data[:8])) from None
    except Exception as error:  # header parse errors
        raise InvalidInput("truncated or unreadable image header: {}".format(_first_line(error))) from None


def _decode_jpeg(image: Image.Image) -> np.ndarray:
    try:
        image.load()
        return np.asarray(image.convert("RGB"))
    except Exception as error:  # OSError "image file is truncated", SyntaxError, ValueError ...
        raise InvalidInput("corrupt or truncated JPEG data: {}".format(_first_line(error))) from None


def _decode_opencv(data: bytes, image_format: str) -> np.ndarray:
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), _CV_FLAGS)
    except cv2.error as error:
        raise InvalidInput("cannot decode {} data: {}".format(image_format, _first_line(error))) from None
    if bgr is None:
        raise InvalidInput("corrupt or truncated {} data".format(image_format))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
