"""Bad requests get the right status and a message naming the image; the server keeps serving."""
import io
import struct
import zlib

import grpc
import numpy as np
import pytest
from PIL import Image

from genet.v1 import classifier_pb2


def encode(pixels, fmt="JPEG", **options) -> bytes:
    """Encode an array with Pillow."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, fmt, **options)
    return buffer.getvalue()


GOOD = encode(np.random.default_rng(0).integers(0, 256, (60, 80, 3)), quality=90)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but carries a few bytes of zeros: a decompression bomb."""
    def chunk(kind, data):
        """One PNG chunk: length, type, data, CRC."""
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header is patched to claim width x height."""
    data = bytearray(GOOD)
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def jpeg_with_garbage_body() -> bytes:
    """A valid JPEG header followed by random bytes (the input that makes MindSpore's Decode SIGFPE)."""
    start_of_scan = GOOD.index(b"\xff\xda")
    return GOOD[:start_of_scan + 12] + np.random.default_rng(0).integers(0, 256, 2000, np.uint8).tobytes()


BAD_IMAGES = {
    "zero bytes": (b"", "empty image"),
    "text": (b"hello, this is not an image", "not an image"),
    "truncated JPEG": (GOOD[:len(GOOD) * 2 // 3], "truncated"),
    "JPEG header with a garbage body": (jpeg_with_garbage_body(), "JPEG"),
    "truncated PNG": (encode(np.random.default_rng(1).integers(0, 256, (40, 40, 3)), "PNG")[:3000], "truncated"),
    "PNG bomb 50000x50000": (png_header_only(50000, 50000), "pixel limit"),
    "JPEG bomb 60000x60000": (jpeg_claiming(60000, 60000), "pixel limit"),
    "JPEG claiming 8000x8000": (jpeg_claiming(8000, 8000), "pixel limit"),
    "GIF": (encode(np.zeros((8, 8, 3)), "GIF"), "GIF images are not supported"),
    # 661 bytes whose resized copy would need 55 x 11,000,000 pixels.
    "PNG strip 1x200000": (png_header_only(200000, 1), "resizes to"),
}


def rpc_error(call, request):
    """The RpcError that `call(request)` must raise."""
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=30)
    return caught.value


def assert_still_serving(stub):
    """The next valid request is served normally."""
    response = stub.Classify(classifier_pb2.ClassifyRequest(images=[GOOD]), timeout=30)
    assert len(response.results) == 1 and len(response.results[0].predictions) == 5


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_an_unusable_image_fails_the_request_naming_its_index(stub, case):
    data, reason = BAD_IMAGES[case]
    error = rpc_error(stub.Classify, classifier_pb2.ClassifyRequest(images=[GOOD, data, GOOD]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("image 1: ") and reason in error.details()
    assert_still_serving(stub)


def scores(stub, image: bytes) -> dict:
    """Every class's score for one image, by class id."""
    response = stub.Classify(classifier_pb2.ClassifyRequest(images=[image], top_k=1000), timeout=30)
    return {p.class_id: p.score for p in response.results[0].predictions}


@pytest.mark.parametrize("shape", [(1, 1), (1, 3), (5, 2)])
def test_a_tiny_image_is_scaled_up_and_classified_like_the_same_content_at_full_size(stub, shape):
    # Resizing and cropping a one-colour image gives the same colour: the tiny image must score
    # exactly like a large image of the colour it decodes to.
    for fmt in ("PNG", "JPEG"):
        tiny = encode(np.full(shape + (3,), (200, 40, 120)), fmt)
        decoded = np.asarray(Image.open(io.BytesIO(tiny)).convert("RGB"))
        colour = decoded[0, 0]
        assert (decoded == colour).all()
        assert len(scores(stub, tiny)) == len(scores(stub, GOOD))
        assert scores(stub, tiny) == pytest.approx(scores(stub, encode(np.full((64, 80, 3), colour), "PNG")),
                                                   abs=1e-5), (fmt, colour)


def test_grey_palette_rgba_cmyk_and_16_bit_images_are_accepted(stub):
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 50, 3), np.uint8))
    images = [encode(rgb.convert("L"), "PNG"), encode(rgb.convert("P"), "PNG"), encode(rgb.convert("RGBA"), "PNG"),
              encode(rgb, "JPEG"), encode(np.asarray(rgb.convert("L")), "JPEG")]
    cmyk, grey16 = io.BytesIO(), io.BytesIO()
    rgb.convert("CMYK").save(cmyk, "JPEG")
    Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257).save(grey16, "PNG")
    response = stub.Classify(classifier_pb2.ClassifyRequest(images=images + [cmyk.getvalue(), grey16.getvalue()]),
                             timeout=30)
    assert len(response.results) == 7


def test_an_empty_request_is_invalid(stub):
    error = rpc_error(stub.Classify, classifier_pb2.ClassifyRequest())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "no images" in error.details()
    assert_still_serving(stub)


def test_too_many_images_are_refused(stub):
    error = rpc_error(stub.Classify, classifier_pb2.ClassifyRequest(images=[GOOD] * 33))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "33 images" in error.details() and "--max-images-per-request" in error.details()
    assert_still_serving(stub)


def test_an_unknown_model_version_is_not_found(stub):
    for call, request in ((stub.Classify, classifier_pb2.ClassifyRequest(images=[GOOD], model_version="99")),
                          (stub.GetModelInfo, classifier_pb2.GetModelInfoRequest(model_version="99"))):
        error = rpc_error(call, request)
        assert error.code() == grpc.StatusCode.NOT_FOUND and "'99'" in error.details()
    assert_still_serving(stub)


def test_a_huge_model_version_is_not_found_with_a_short_message(stub):
    version = "9" * 10000  # more digits than Python's int() accepts
    error = rpc_error(stub.Classify, classifier_pb2.ClassifyRequest(images=[GOOD], model_version=version))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert len(error.details()) < 300 and "999..." in error.details()
    assert_still_serving(stub)


def test_a_message_over_the_size_limit_is_resource_exhausted(stub):
    oversized = np.random.default_rng(0).integers(0, 256, 3 * 1024 * 1024, np.uint8).tobytes()
    error = rpc_error(stub.Classify, classifier_pb2.ClassifyRequest(images=[oversized]))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in error.details()
    assert_still_serving(stub)


def test_errors_are_counted_by_status_code(server, stub):
    before = server.metric("genet_requests_total", method="Classify", code="INVALID_ARGUMENT")
    rpc_error(stub.Classify, classifier_pb2.ClassifyRequest())
    assert server.metric("genet_requests_total", method="Classify", code="INVALID_ARGUMENT") == before + 1
