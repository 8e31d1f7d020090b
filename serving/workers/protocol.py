"""The front <-> inference worker protocol: JSON headers and raw tensors framed over a pipe pair.

Python 3.7 and 3.11, stdlib and numpy only. A message is

    u32 header length | u64 payload length   (little-endian, 12 bytes)
    header            (UTF-8 JSON object)
    payload           (the C-order bytes of one tensor; header "dtype" and "shape" describe it)

A message without a tensor has no "dtype" in its header and an empty payload. The worker speaks first:
{"op": "hello", "protocol": 1, "pid", "python"}. Then each request gets exactly one reply, in order:

    {"op": "load", "backend", "model_file": {ModelFile fields}, "device", "device_id", "threads"}
        -> {"ok": true, "runtime_version"}
    {"op": "warm_up", "max_batch_size"} + sample (3, H, W)  -> {"ok": true, "run_sizes": [...]}
    {"op": "predict"} + batch (N, 3, H, W) float32          -> {"ok": true} + logits (N, classes)
    {"op": "run"} + batch                                   -> {"ok": true} + logits
    {"op": "close"}                                         -> {"ok": true}, then the worker exits 0

A failed request gets {"ok": false, "error": exception class name, "message"} and the worker keeps
serving. Tensors travel inline: a shared-memory region would save 0.1 ms per batch at the demo size
and 2-4 ms of a ~480 ms batch of 8 at 224 px (measured by bench_transfer, docs/workers.md).
"""
import fcntl
import json
import os
import selectors
import struct
import time
from typing import Any, Dict, Optional, Tuple

import numpy as np

PROTOCOL_VERSION = 1
PREFIX = struct.Struct("<IQ")
MAX_HEADER_BYTES = 1 << 20
# Linux pipes hold 64 KiB; 1 MiB (an unprivileged process's limit) halves the cost of a 4.8 MB batch.
PIPE_BYTES = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# Raw bytes are only ever read into these: never an object dtype.
DTYPES = frozenset(("float32", "float16", "int32", "int64", "uint8"))

Header = Dict[str, Any]
Message = Tuple[Header, Optional[np.ndarray]]


class ProtocolError(RuntimeError):
    """The peer sent something that is not a well-formed message."""


class Channel:
    """Messages over a read and a write file descriptor; a deadline (time.monotonic()) bounds each call.

    Both descriptors are made non-blocking so that a peer that stops reading or writing can never
    block the caller past its deadline. Raises EOFError when the peer has closed its end,
    TimeoutError when the deadline passes, BrokenPipeError when the peer is gone while writing.
    """

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd
        self._readable, self._writable = selectors.DefaultSelector(), selectors.DefaultSelector()
        for fd, selector, event in ((read_fd, self._readable, selectors.EVENT_READ),
                                    (write_fd, self._writable, selectors.EVENT_WRITE)):
            os.set_blocking(fd, False)
            selector.register(fd, event)

    def send(self, header: Header, tensor: Optional[np.ndarray] = None, deadline: Optional[float] = None) -> None:
        """Write one message: `header` plus, when given, `tensor` as its payload."""
        payload = b""
        if tensor is not None:
            tensor = np.ascontiguousarray(tensor, dtype=tensor.dtype.newbyteorder("="))  # the peer reads native order
            header = dict(header, dtype=tensor.dtype.name, shape=list(tensor.shape))
            payload = memoryview(tensor).cast("B") if tensor.size else b""
        encoded = json.dumps(header).encode("utf-8")
        self._write(PREFIX.pack(len(encoded), len(payload)) + encoded, deadline)
        if len(payload):
            self._write(payload, deadline)

    def receive(self, deadline: Optional[float] = None) -> Message:
        """Read one message: its header and its tensor (None when it carries none)."""
        header_size, payload_size = PREFIX.unpack(self._read(PREFIX.size, deadline))
        if header_size > MAX_HEADER_BYTES:
            raise ProtocolError(f"header of {header_size} bytes announced (at most {MAX_HEADER_BYTES})")
        try:
            header = json.loads(self._read(header_size, deadline).decode("utf-8"))
        except ValueError as error:
            raise ProtocolError(f"malformed header: {error}") from None
        if not isinstance(header, dict):
            raise ProtocolError(f"the header is not a JSON object: {header!r}")
        if "dtype" not in header and not payload_size:
            return header, None
        tensor = _empty_tensor(header, payload_size)
        if payload_size:
            self._read_into(memoryview(tensor).cast("B"), deadline)
        return header, tensor

    def close(self) -> None:
        """Close both descriptors."""
        for selector in (self._readable, self._writable):
            selector.close()
        for fd in {self.read_fd, self.write_fd}:
            os.close(fd)

    def _read(self, size: int, deadline: Optional[float]) -> bytes:
        buffer = bytearray(size)
        self._read_into(memoryview(buffer), deadline)
        return bytes(buffer)

    def _read_into(self, view: memoryview, deadline: Optional[float]) -> None:
        done = 0
        while done < len(view):
            try:
                count = os.readv(self.read_fd, [view[done:]])
            except BlockingIOError:
                _wait(self._readable, deadline)
                continue
            if not count:
                raise EOFError("the peer closed the channel")
            done += count

    def _write(self, data: Any, deadline: Optional[float]) -> None:
        view, done = memoryview(data), 0
        while done < len(view):
            try:
                done += os.write(self.write_fd, view[done:])
            except BlockingIOError:
                _wait(self._writable, deadline)


def enlarge_pipe(fd: int) -> None:
    """Grow the pipe behind `fd` to PIPE_BYTES where the system allows it (Linux); else leave it."""
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass


def error_header(error: BaseException) -> Header:
    """The reply to a request that raised `error`."""
    return {"ok": False, "error": type(error).__name__, "message": str(error)}


def deadline_after(seconds: Optional[float]) -> Optional[float]:
    """The time.monotonic() deadline `seconds` from now; None (no deadline) for None."""
    return None if seconds is None else time.monotonic() + seconds


def _wait(selector: selectors.BaseSelector, deadline: Optional[float]) -> None:
    timeout = None if deadline is None else deadline - time.monotonic()
    if timeout is not None and timeout <= 0 or not selector.select(timeout):
        raise TimeoutError("no progress on the worker channel before the deadline")


def _empty_tensor(header: Header, payload_size: int) -> np.ndarray:
    """An uninitialised array of the header's dtype and shape, checked against the payload size."""
    dtype, shape = header.get("dtype"), header.get("shape")
    if dtype not in DTYPES or not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ProtocolError(f"payload with bad dtype {dtype!r} or shape {shape!r}")
    tensor = np.empty(shape, dtype)
    if tensor.nbytes != payload_size:
        raise ProtocolError(f"payload of {payload_size} bytes for {dtype} {shape}")
    return tensor
