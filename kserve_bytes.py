"""The raw form of a KServe v2 BYTES tensor, shared by the server and the clients (standard library only).

Each element is a 4-byte little-endian length followed by its bytes (the binary form tritonclient sends
in `raw_input_contents` and expects in `raw_output_contents` and the HTTP binary data extension).
"""
import struct
from typing import List, Sequence

_LENGTH = struct.Struct("<I")


def split_bytes(raw: bytes) -> List[bytes]:
    """The elements of a raw BYTES tensor; ValueError naming the byte where the framing breaks."""
    items, offset, view = [], 0, memoryview(raw)
    while offset < len(raw):
        if offset + _LENGTH.size > len(raw):
            raise ValueError(f"truncated BYTES element length at byte {offset}")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise ValueError(f"a BYTES element of {length} bytes overruns the {len(raw)} raw bytes")
        items.append(bytes(view[offset:offset + length]))
        offset += length
    return items


def join_bytes(items: Sequence[bytes]) -> bytes:
    """The raw form of BYTES elements."""
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)
