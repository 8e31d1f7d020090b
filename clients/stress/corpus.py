"""The bad-input corpus: malformed and unusual requests, each with the status serving/README.md documents.

Statuses (serving/README.md, "Status codes"): an unusable image, an empty request or too many
images -> INVALID_ARGUMENT with details "image N: reason" for images; a message over
--max-message-mb -> RESOURCE_EXHAUSTED; an unknown model_version -> NOT_FOUND. Unusual but valid
images (16-bit, CMYK, grey, progressive, 1x1, a bomb under the pixel limit, the longest 1-pixel strip
(up to 8000 px) whose resized copy fits the pixel limit) -> OK; the first strip over it -> INVALID_ARGUMENT.
Where the README leaves the outcome open (bit flips inside JPEG scan data may or may not be recoverable by libjpeg),
both outcomes are accepted and the case is still required to leave the server healthy.
"""
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from PIL import Image

from clients.stress import forge
from genet.v1 import classifier_pb2

OK = ("OK",)
INVALID = ("INVALID_ARGUMENT",)
UINT32_MAX = 2 ** 32 - 1
JPEG_MAGIC = b"\xff\xd8\xff\xe0"


@dataclass(frozen=True)
class Limits:
    """The server limits the corpus is built against (from GetModelInfo)."""

    max_images_per_request: int
    max_message_bytes: int
    max_image_pixels: int
    resize_size: int
    """The model's preprocessing resize: images are scaled so that their shorter side is this long."""

    @property
    def longest_strip(self) -> int:
        """The longest 1-pixel-high image whose resized copy (longest_strip * resize_size x resize_size) fits
        the pixel limit (40 million pixels by default): 18,903 px at the demo model's 46, 610 at the reference
        network's 256."""
        return self.max_image_pixels // self.resize_size ** 2


@dataclass(frozen=True)
class Case:
    """One bad (or odd) request and the statuses it may get."""

    name: str
    request: classifier_pb2.ClassifyRequest
    expected: Tuple[str, ...]
    detail: Optional[str] = None
    """A substring the error details must contain (checked for error statuses only)."""


def _image_case(name: str, data: bytes, expected: Tuple[str, ...] = INVALID, detail: str = "image 0:") -> Case:
    return Case(name, classifier_pb2.ClassifyRequest(images=[data]), expected, detail if expected != OK else None)


def _sources() -> dict:
    """The valid encodings the malformed ones are derived from."""
    rgb = forge.sample_rgb(96, 128, seed=1)
    return {"jpeg": forge.encode(rgb, "JPEG", quality=90), "png": forge.encode(rgb, "PNG"),
            "progressive": forge.encode(rgb, "JPEG", progressive=True), "rgb": rgb}


def garbage_cases() -> List[Case]:
    """Bytes that are no image at all, or carry the wrong magic number."""
    src = _sources()
    return [
        _image_case("zero-byte image", b"", detail="empty image"),
        _image_case("text instead of an image", b"GET / HTTP/1.1\r\nHost: example\r\n\r\n", detail="not an image"),
        _image_case("random bytes 1 KiB", forge.random_bytes(1024, seed=2)),
        _image_case("random bytes 256 KiB", forge.random_bytes(256 * 1024, seed=3)),
        _image_case("JPEG magic on random bytes", forge.replace_prefix(forge.random_bytes(4096, 4), JPEG_MAGIC)),
        _image_case("PNG signature on random bytes", forge.replace_prefix(forge.random_bytes(4096, 5),
                                                                          forge.PNG_SIGNATURE)),
        _image_case("PNG data behind a JPEG magic", forge.replace_prefix(src["png"], JPEG_MAGIC)),
        _image_case("JPEG data behind a PNG signature", forge.replace_prefix(src["jpeg"], forge.PNG_SIGNATURE)),
    ]


def jpeg_cases(limits: Limits) -> List[Case]:
    """Truncated, corrupt and lying JPEGs."""
    jpeg = _sources()["jpeg"]
    over_limit = math.isqrt(limits.max_image_pixels) + 1
    scan = jpeg.index(b"\xff\xda")
    return [
        _image_case("JPEG truncated in its header (20 bytes)", jpeg[:20]),
        _image_case("JPEG truncated after the scan header", jpeg[:scan + 14], detail="truncated"),
        _image_case("JPEG truncated at 2/3", forge.truncate(jpeg, 2 / 3), detail="truncated"),
        _image_case("JPEG header with a random scan", forge.jpeg_with_garbage_scan(jpeg)),
        _image_case("JPEG with 40 bit flips in its scan", forge.flip_bits(jpeg, 40, seed=6, start=scan + 20),
                    expected=("OK", "INVALID_ARGUMENT")),
        _image_case("JPEG claiming 0 x 0", forge.jpeg_claiming(jpeg, 0, 0)),
        _image_case("JPEG claiming 65535 x 65535", forge.jpeg_claiming(jpeg, 65535, 65535), detail="pixel limit"),
        _image_case("JPEG claiming one pixel row over the limit",
                    forge.jpeg_claiming(jpeg, over_limit, over_limit), detail="pixel limit"),
        _image_case("JPEG claiming 12-bit samples", forge.jpeg_with_precision(jpeg, 12)),
    ]


def png_cases(limits: Limits) -> List[Case]:
    """Truncated, corrupt, lying and bombing PNGs."""
    png = _sources()["png"]
    over_side = math.isqrt(limits.max_image_pixels) + 64
    under_side = math.isqrt(int(limits.max_image_pixels * 0.9))
    return [
        _image_case("PNG truncated at 1/2", forge.truncate(png, 0.5)),
        _image_case("PNG signature only", forge.PNG_SIGNATURE),
        _image_case("PNG with a bad header CRC", forge.png_with_bad_crc(png)),
        _image_case("PNG claiming 0 x 0", forge.png_claiming(0, 0)),
        _image_case("PNG claiming 2^31-1 x 2^31-1", forge.png_claiming(2 ** 31 - 1, 2 ** 31 - 1)),
        _image_case("PNG claiming 50000 x 50000", forge.png_claiming(50000, 50000), detail="pixel limit"),
        _image_case(f"PNG bomb {over_side} x {over_side} (over the pixel limit)",
                    forge.png_bomb(over_side, over_side), detail="pixel limit"),
        _image_case(f"PNG bomb {under_side} x {under_side} (under the pixel limit: valid)",
                    forge.png_bomb(under_side, under_side), expected=OK),
        _image_case(f"1 x {limits.longest_strip + 1} strip PNG (resizes over the pixel limit)",
                    forge.encode(forge.sample_rgb(1, limits.longest_strip + 1, seed=8), "PNG"), detail="pixel limit"),
    ]


def other_format_cases() -> List[Case]:
    """Formats training's decoder refuses, and broken BMP/TIFF."""
    rgb = _sources()["rgb"]
    return [
        _image_case("animated GIF", forge.animated_gif(), detail="GIF images are not supported"),
        _image_case("WebP", forge.encode(rgb, "WEBP")),
        _image_case("BMP claiming 100000 x 100000", forge.bmp_claiming(100000, 100000), detail="pixel limit"),
        _image_case("BMP truncated", forge.truncate(forge.encode(rgb, "BMP"), 0.4)),
        _image_case("TIFF truncated", forge.truncate(forge.encode(rgb, "TIFF"), 0.4)),
    ]


def valid_oddity_cases(limits: Limits) -> List[Case]:
    """Unusual but valid images: each must be classified (OK)."""
    src = _sources()
    rgb = Image.fromarray(src["rgb"])
    grey16 = Image.fromarray(forge.sample_rgb(40, 56, seed=7)[..., 0].astype("uint16") * 257)
    strip = min(8000, limits.longest_strip)
    return [
        _image_case("16-bit grey PNG", forge.encode(grey16, "PNG"), OK),
        _image_case("16-bit RGB PNG", forge.encode16_rgb_png(src["rgb"]), OK),
        _image_case("CMYK JPEG", forge.encode(rgb.convert("CMYK"), "JPEG"), OK),
        _image_case("grey JPEG", forge.encode(rgb.convert("L"), "JPEG"), OK),
        _image_case("progressive JPEG", src["progressive"], OK),
        _image_case("RGBA PNG", forge.encode(rgb.convert("RGBA"), "PNG"), OK),
        _image_case("1 x 1 PNG", forge.encode(src["rgb"][:1, :1], "PNG"), OK),
        _image_case(f"1 x {strip} strip PNG", forge.encode(forge.sample_rgb(1, strip, seed=8), "PNG"), OK),
        _image_case("PNG followed by 64 KiB of garbage", src["png"] + forge.random_bytes(65536, 9), OK),
        _image_case("JPEG with a 60 KB comment", forge.encode(rgb, "JPEG", comment=b"x" * 60000), OK),
    ]


def request_cases(limits: Limits) -> List[Case]:
    """Requests that are bad as a whole: empty, too many images, too big, unknown version, huge top_k."""
    good = _sources()["jpeg"]
    request = classifier_pb2.ClassifyRequest
    oversized = forge.random_bytes(limits.max_message_bytes + 1024 * 1024, seed=10)
    return [
        Case("empty request", request(), INVALID, "no images"),
        Case("too many images (limit + 1)", request(images=[good] * (limits.max_images_per_request + 1)),
             INVALID, "--max-images-per-request"),
        Case("oversized message (limit + 1 MiB)", request(images=[oversized]), ("RESOURCE_EXHAUSTED",),
             "larger than max"),
        Case("unknown model_version 99", request(images=[good], model_version="99"), ("NOT_FOUND",)),
        Case("model_version '../1'", request(images=[good], model_version="../1"), ("NOT_FOUND",)),
        Case("model_version of 10 KB", request(images=[good], model_version="9" * 10000), ("NOT_FOUND",)),
        Case("huge top_k (2^32-1)", request(images=[good], top_k=UINT32_MAX), OK),
        Case("one bad image among good ones", request(images=[good, good[:100], good]), INVALID, "image 1:"),
    ]


def build_corpus(limits: Limits) -> List[Case]:
    """Every case, in a fixed order."""
    cases = (request_cases(limits) + garbage_cases() + jpeg_cases(limits) + png_cases(limits)
             + other_format_cases() + valid_oddity_cases(limits))
    names = [case.name for case in cases]
    if len(set(names)) != len(names):
        raise ValueError("duplicate corpus case names")
    return cases


def expected_predictions(request: classifier_pb2.ClassifyRequest, num_classes: int) -> int:
    """How many predictions each image of an OK answer must carry (top_k 0 means 5)."""
    return min(request.top_k or 5, num_classes)


def describe(cases: Sequence[Case]) -> List[dict]:
    """Name, expected statuses and size of every case (for the report)."""
    return [{"name": case.name, "expected": list(case.expected), "bytes": case.request.ByteSize()}
            for case in cases]
