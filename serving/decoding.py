"""Decodes untrusted image bytes to an RGB uint8 HWC array exactly as MindSpore's `Decode` does.

Measured against `mindspore.dataset.vision.Decode` (MindSpore 2.10, eagerly, on generated files):
- JPEG: Decode uses libjpeg and ignores EXIF orientation. Pillow's JPEG decoder gives identical
  pixels for baseline, progressive, grey and CMYK files (max difference 0), and refuses truncated
  data, where OpenCV silently fills the missing rows with grey. OpenCV's decoder gives the same
  pixels for grey and YCbCr files (tests/serving/test_preprocessing.py) in a fifth of the time, so
  a JPEG file Pillow reads as grey or RGB that ends with its end-of-image marker (so is not cut
  short) is decoded by OpenCV; any other JPEG (CMYK, MPO, trailing bytes, truncated) by Pillow.
- Everything else (PNG, BMP, TIFF, PNM) goes through OpenCV in Decode: cv2.imdecode(IMREAD_COLOR)
  matched it exactly on palette, grey, grey+alpha, RGBA, 1-bit and 16-bit PNG (16-bit scaled by
  >> 8), RGBA TIFF (alpha premultiplied by libtiff) and BMP, where Pillow's own conversions
  differed by up to 241 levels. OpenCV refuses truncated PNG, BMP and TIFF data.
- Decode refuses GIF, WebP, TGA, ICO, JPEG 2000, PCX and SGI, so the server refuses them too:
  training could not have read them.
Untrusted bytes reach only the accepted decoders: the leading bytes pick the one accepted format
(anything else is refused, naming the format where its signature tells), and Pillow is told to
try only that format's plugin, never its other plugins (the WebP one hands the whole file to
libwebp while opening it). Pillow reads only the header first, so the pixel limit is enforced
before any pixel is decoded.
`Decode` itself is never called: it can kill the process (SIGFPE) on malformed JPEG data.
"""
from __future__ import annotations

import io
from typing import Callable, Optional

import cv2
import numpy as np
# The plugins of the accepted formats, registered here so that Image.open(formats=...) never needs
# Image.init(), which imports every plugin Pillow has.
from PIL import BmpImagePlugin, JpegImagePlugin, PngImagePlugin, PpmImagePlugin, TiffImagePlugin  # noqa: F401
from PIL import Image, UnidentifiedImageError

from serving.errors import InvalidInput

JPEG_FORMATS = ("JPEG", "MPO")  # Pillow's names for JPEG files
ACCEPTED = "JPEG, PNG, BMP, TIFF and PNM"
# Leading bytes of each accepted file type -> the one Pillow format allowed to open it.
_ACCEPTED_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),  # also MPO, which Pillow's JPEG plugin recognises
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"II+\x00", "TIFF"), (b"MM\x00+", "TIFF"),  # TIFF, BigTIFF
) + tuple((b"P" + kind, "PPM") for kind in (b"1", b"2", b"3", b"4", b"5", b"6"))  # PBM, PGM, PPM
# Leading bytes of refused image types, only to name them in the error.
_REFUSED_SIGNATURES = (
    (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"), (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x01\xda", "SGI"),
)
_TGA_FOOTER = b"TRUEVISION-XFILE.\x00"
_CV_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
_JPEG_END = b"\xff\xd9"  # the end-of-image marker: the last bytes of a JPEG file that is whole


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
        raise InvalidInput(f"image has no pixels ({width} x {height})")
    if width * height > max_pixels:
        raise InvalidInput(f"{width} x {height} = {width * height} pixels exceeds the pixel limit of {max_pixels} "
                           "(--max-image-pixels)")
    if check_size is not None:
        check_size(width, height)
    if image.format == "JPEG" and image.mode in ("L", "RGB") and data.endswith(_JPEG_END):
        rgb = _decode_opencv(data, image.format)
    elif image.format in JPEG_FORMATS:
        rgb = _decode_jpeg(image)
    else:
        rgb = _decode_opencv(data, image.format)
    if rgb.shape[:2] != (height, width):
        raise InvalidInput(f"decoded size {rgb.shape[1]}x{rgb.shape[0]} differs from the header's {width}x{height}")
    return rgb


def _accepted_format(data: bytes) -> str:
    """The Pillow format that may open `data`, from its leading bytes; InvalidInput for any other file."""
    for signature, image_format in _ACCEPTED_SIGNATURES:
        if data.startswith(signature):
            return image_format
    refused = _refused_format(data)
    if refused:
        raise InvalidInput(f"{refused} images are not supported: training's decoder reads {ACCEPTED}")
    raise InvalidInput(f"not an image in an accepted format ({ACCEPTED}; first bytes {data[:8]!r})")


def _refused_format(data: bytes) -> Optional[str]:
    """The name of a refused image format recognisable from its signature, else None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data.endswith(_TGA_FOOTER):  # TGA 2.0 footer (TGA has no leading signature)
        return "TGA"
    for signature, image_format in _REFUSED_SIGNATURES:
        if data.startswith(signature):
            return image_format
    return None


def _open_header(data: bytes, max_pixels: int) -> Image.Image:
    """Identify the size from the header only (Pillow opens lazily), trying only the accepted format's plugin."""
    image_format = _accepted_format(data)
    try:
        return Image.open(io.BytesIO(data), formats=[image_format])
    except Image.DecompressionBombError as error:  # Pillow's own limit, far above the default one
        raise InvalidInput(f"over the pixel limit of {max_pixels} (--max-image-pixels): {error}") from None
    except UnidentifiedImageError:
        raise InvalidInput(f"not a readable {image_format} image (first bytes {data[:8]!r})") from None
    except Exception as error:  # header parse errors
        raise InvalidInput(f"truncated or unreadable image header: {_first_line(error)}") from None


def _decode_jpeg(image: Image.Image) -> np.ndarray:
    try:
        image.load()
        return np.asarray(image.convert("RGB"))
    except Exception as error:  # OSError "image file is truncated", SyntaxError, ValueError ...
        raise InvalidInput(f"corrupt or truncated JPEG data: {_first_line(error)}") from None


def _decode_opencv(data: bytes, image_format: str) -> np.ndarray:
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), _CV_FLAGS)
    except cv2.error as error:
        raise InvalidInput(f"cannot decode {image_format} data: {_first_line(error)}") from None
    if bgr is None:
        raise InvalidInput(f"corrupt or truncated {image_format} data")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
