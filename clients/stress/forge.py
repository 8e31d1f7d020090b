"""Forged image bytes for the bad-input corpus: encoders, header patches, truncation, bit flips, bombs.

Everything is generated at run time with Pillow, numpy, zlib and struct; nothing binary is stored.
"""
import io
import struct
import zlib

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sample_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth, photo-like uint8 RGB image: gradients plus noise (compresses like a photo)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    phases = rng.uniform(0, 2 * np.pi, 3)
    channels = [127 + 100 * np.sin(xx / (7 + 5 * c) + yy / (11 + 3 * c) + phases[c]) for c in range(3)]
    pixels = np.stack(channels, axis=-1) + rng.normal(0, 12, (height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def encode(pixels, fmt: str = "JPEG", **options) -> bytes:
    """An array (or a PIL image) encoded by Pillow in fmt."""
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(np.asarray(pixels))
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def random_bytes(count: int, seed: int = 0) -> bytes:
    """count uniformly random bytes."""
    return np.random.default_rng(seed).integers(0, 256, count, np.uint8).tobytes()


def truncate(data: bytes, fraction: float) -> bytes:
    """The first fraction of data."""
    return data[:int(len(data) * fraction)]


def flip_bits(data: bytes, count: int, seed: int = 0, start: int = 0) -> bytes:
    """data with count random bits flipped at offsets >= start."""
    rng = np.random.default_rng(seed)
    flipped = bytearray(data)
    for offset in rng.integers(start, len(data), count):
        flipped[offset] ^= 1 << int(rng.integers(0, 8))
    return bytes(flipped)


def replace_prefix(data: bytes, prefix: bytes) -> bytes:
    """data with its first len(prefix) bytes replaced (a wrong magic number)."""
    return prefix + data[len(prefix):]


def jpeg_frame_offset(data: bytes) -> int:
    """Offset of the first start-of-frame marker (baseline SOF0 or progressive SOF2)."""
    offsets = [data.find(marker) for marker in (b"\xff\xc0", b"\xff\xc2")]
    found = [offset for offset in offsets if offset >= 0]
    if not found:
        raise ValueError("no JPEG start-of-frame marker")
    return min(found)


def jpeg_claiming(data: bytes, width: int, height: int) -> bytes:
    """A JPEG whose frame header is patched to claim width x height (the scan data is unchanged)."""
    patched = bytearray(data)
    frame = jpeg_frame_offset(data)
    patched[frame + 5:frame + 9] = struct.pack(">HH", height, width)
    return bytes(patched)


def jpeg_with_precision(data: bytes, bits: int) -> bytes:
    """A JPEG whose frame header claims another sample precision (12-bit JPEG is not decodable here)."""
    patched = bytearray(data)
    patched[jpeg_frame_offset(data) + 4] = bits
    return bytes(patched)


def jpeg_with_garbage_scan(data: bytes, length: int = 2000, seed: int = 0) -> bytes:
    """A valid JPEG header and scan header followed by random bytes (what makes MindSpore's Decode SIGFPE)."""
    start_of_scan = data.index(b"\xff\xda")
    return data[:start_of_scan + 12] + random_bytes(length, seed)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload, CRC."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_file(width: int, height: int, idat: bytes, bit_depth: int = 8, colour_type: int = 2) -> bytes:
    """A PNG with the given header fields and compressed image data (not checked for consistency)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def png_claiming(width: int, height: int) -> bytes:
    """A PNG declaring width x height whose data holds a few zero bytes only."""
    return png_file(width, height, zlib.compress(b"\0" * 64))


def png_bomb(width: int, height: int) -> bytes:
    """A complete, valid RGB PNG of zeros: tiny on the wire, width * height * 3 bytes once decoded."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * width)  # filter byte + pixels
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    return png_file(width, height, b"".join(parts))


def encode16_rgb_png(rgb: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG of an 8-bit RGB array (Pillow cannot write 16-bit RGB itself)."""
    height, width = rgb.shape[:2]
    samples = (rgb.astype(">u2") * 257).reshape(height, width * 3)
    rows = b"".join(b"\0" + row.tobytes() for row in samples)
    return png_file(width, height, zlib.compress(rows), bit_depth=16, colour_type=2)


def png_with_bad_crc(data: bytes) -> bytes:
    """A PNG whose header chunk's CRC is wrong."""
    patched = bytearray(data)
    crc_offset = len(PNG_SIGNATURE) + 8 + 13  # length + type + IHDR payload
    patched[crc_offset] ^= 0xFF
    return bytes(patched)


def bmp_claiming(width: int, height: int) -> bytes:
    """A 24-bit BMP header declaring width x height with 16 bytes of pixel data."""
    pixels = b"\0" * 16
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    header = struct.pack("<2sIHHI", b"BM", 14 + len(info) + len(pixels), 0, 0, 14 + len(info))
    return header + info + pixels


def animated_gif(frames: int = 4, side: int = 24) -> bytes:
    """An animated GIF of frames solid-colour frames."""
    images = [Image.new("RGB", (side, side), (60 * i % 256, 40, 200 - 30 * i)) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)
    return buffer.getvalue()
