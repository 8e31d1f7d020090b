"""Open Inference Protocol tensors without a transport: decoding from raw bytes or typed values, encoding back.

A tensor's raw form is its elements in row-major order, little-endian, without padding; a BYTES
element in raw form is a 4-byte little-endian length followed by that many bytes. The typed form is
a flat list of values (the `contents` fields of gRPC, the `data` of HTTP's JSON).
"""
from __future__ import annotations

import functools
import operator
from typing import Any, List, NamedTuple, Sequence, Tuple

import numpy as np

import kserve_bytes
from serving.errors import InvalidInput

BYTES = "BYTES"
NUMERIC_DTYPES = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}


class Tensor(NamedTuple):
    """A named v2 tensor; `data` is shaped, numeric, or an object array of bytes for BYTES."""

    name: str
    datatype: str
    shape: Tuple[int, ...]
    data: np.ndarray


def from_raw(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> Tensor:
    """Decode a tensor from its raw form; INVALID_ARGUMENT if the bytes do not fill the shape exactly."""
    shape = _checked_shape(name, shape)
    count = _elements(shape)
    if datatype == BYTES:
        return Tensor(name, datatype, shape, _object_array(split_bytes(raw, name), count, name, shape))
    dtype = _numeric_dtype(name, datatype)
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(f"input '{name}': {len(raw)} raw bytes do not hold a {datatype} tensor of shape "
                           f"{list(shape)} ({count * dtype.itemsize} bytes)")
    return Tensor(name, datatype, shape, np.frombuffer(raw, dtype).reshape(shape))


def from_values(name: str, datatype: str, shape: Sequence[int], values: Sequence[Any]) -> Tensor:
    """Decode a tensor from typed values (flat, or nested lists as JSON allows); strings are UTF-8 for BYTES."""
    shape = _checked_shape(name, shape)
    count = _elements(shape)
    if datatype == BYTES:
        items = _flatten(values)
        if not all(isinstance(item, (bytes, str)) for item in items):
            raise InvalidInput(f"input '{name}': BYTES elements must be strings")
        items = [item.encode("utf-8") if isinstance(item, str) else item for item in items]
        return Tensor(name, datatype, shape, _object_array(items, count, name, shape))
    dtype = _numeric_dtype(name, datatype)
    try:
        array = np.asarray(values, dtype=dtype).reshape(-1)
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"input '{name}': the values are not a {datatype} tensor: {error}") from None
    if array.size != count:
        raise InvalidInput(f"input '{name}': {array.size} values do not fill shape {list(shape)} ({count} elements)")
    return Tensor(name, datatype, shape, array.reshape(shape))


def to_raw(tensor: Tensor) -> bytes:
    """The tensor's raw form."""
    if tensor.datatype == BYTES:
        return kserve_bytes.join_bytes(tensor.data.reshape(-1))
    return np.ascontiguousarray(tensor.data, NUMERIC_DTYPES[tensor.datatype]).tobytes()


def to_values(tensor: Tensor) -> List[Any]:
    """The tensor's elements as a flat list of Python values (bytes for BYTES)."""
    return tensor.data.reshape(-1).tolist()


def split_bytes(raw: bytes, name: str = "") -> List[bytes]:
    """The elements of input `name`'s raw BYTES tensor; InvalidInput where the framing breaks."""
    try:
        return kserve_bytes.split_bytes(raw)
    except ValueError as error:
        raise InvalidInput(f"input '{name}': {error}") from None


def bytes_tensor(name: str, rows: Sequence[Sequence[bytes]]) -> Tensor:
    """A 2-D BYTES tensor from equally long rows."""
    shape = (len(rows), len(rows[0]) if rows else 0)
    data = np.empty(shape, dtype=object)
    for index, row in enumerate(rows):
        data[index, :] = row
    return Tensor(name, BYTES, shape, data)


def _checked_shape(name: str, shape: Sequence[int]) -> Tuple[int, ...]:
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidInput(f"input '{name}': shape {list(shape)} must be non-negative integers")
    return tuple(int(d) for d in shape)


def _elements(shape: Tuple[int, ...]) -> int:
    """The element count of `shape`, exact for any size (np.prod would overflow int64 silently)."""
    return functools.reduce(operator.mul, shape, 1)


def _numeric_dtype(name: str, datatype: str) -> np.dtype:
    dtype = NUMERIC_DTYPES.get(datatype)
    if dtype is None:
        raise InvalidInput(f"input '{name}': unknown datatype {datatype!r}")
    return dtype


def _object_array(items: List[bytes], count: int, name: str, shape: Tuple[int, ...]) -> np.ndarray:
    if len(items) != count:
        raise InvalidInput(f"input '{name}': {len(items)} BYTES elements do not fill shape {list(shape)} "
                           f"({count} elements)")
    array = np.empty(count, dtype=object)
    array[:] = items
    return array.reshape(shape)


def _flatten(values: Any) -> List[Any]:
    if isinstance(values, (list, tuple)):
        return [item for value in values for item in _flatten(value)]
    return [values]
