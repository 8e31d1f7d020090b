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
import asyncio
import fcntl
import json
import os
import selectors
import struct
import time
from typing import Any, Dict, Generator, Optional, Tuple

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
READ, WRITE = "read", "write"
Steps = Generator[str, None, Any]
"""Non-blocking I/O as a generator: it yields READ or WRITE when its descriptor is not ready, and
returns its result; Channel._drive and _drive_async wait for readiness between steps."""


class ProtocolError(RuntimeError):
    """The peer sent something that is not a well-formed message."""


class Channel:
    """Messages over a read and a write file descriptor, with a blocking and an asyncio interface.

    Both descriptors are made non-blocking so that a peer that stops reading or writing can never
    block the caller past its deadline. The blocking `send` and `receive` take a deadline
    (time.monotonic()) and raise TimeoutError when it passes; `send_async` and `receive_async` wait
    on the running event loop instead (bound them with asyncio.wait_for). Either raises EOFError when
    the peer has closed its end, BrokenPipeError when the peer is gone while writing. The framing is
    written once, as generators that yield READ or WRITE whenever the descriptor is not ready.
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
        self._drive(self._send_steps(header, tensor), deadline)

    def receive(self, deadline: Optional[float] = None) -> Message:
        """Read one message: its header and its tensor (None when it carries none)."""
        return self._drive(self._receive_steps(), deadline)

    async def send_async(self, header: Header, tensor: Optional[np.ndarray] = None) -> None:
        """`send` on the running event loop."""
        await self._drive_async(self._send_steps(header, tensor))

    async def receive_async(self) -> Message:
        """`receive` on the running event loop."""
        return await self._drive_async(self._receive_steps())

    def close(self) -> None:
        """Close both descriptors."""
        for selector in (self._readable, self._writable):
            selector.close()
        for fd in {self.read_fd, self.write_fd}:
            os.close(fd)

    def _drive(self, steps: Steps, deadline: Optional[float]) -> Any:
        """Run I/O steps to completion, blocking on the selectors; their return value."""
        try:
            while True:
                _wait(self._readable if next(steps) == READ else self._writable, deadline)
        except StopIteration as finished:
            return finished.value

    async def _drive_async(self, steps: Steps) -> Any:
        """Run I/O steps to completion, waiting on the running event loop; their return value."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                wanted = next(steps)
                ready = loop.create_future()
                fd, watch, unwatch = ((self.read_fd, loop.add_reader, loop.remove_reader) if wanted == READ
                                      else (self.write_fd, loop.add_writer, loop.remove_writer))
                watch(fd, _resolve, ready)
                try:
                    await ready
                finally:
                    unwatch(fd)
        except StopIteration as finished:
            return finished.value

    def _send_steps(self, header: Header, tensor: Optional[np.ndarray]) -> Steps:
        payload = b""
        if tensor is not None:
            tensor = np.ascontiguousarray(tensor, dtype=tensor.dtype.newbyteorder("="))  # the peer reads native order
            header = dict(header, dtype=tensor.dtype.name, shape=list(tensor.shape))
            payload = memoryview(tensor).cast("B") if tensor.size else b""
        encoded = json.dumps(header).encode("utf-8")
        yield from self._write_steps(PREFIX.pack(len(encoded), len(payload)) + encoded)
        if len(payload):
            yield from self._write_steps(payload)

    def _receive_steps(self) -> Steps:
        prefix = bytearray(PREFIX.size)
        yield from self._read_steps(memoryview(prefix))
        header_size, payload_size = PREFIX.unpack(prefix)
        if header_size > MAX_HEADER_BYTES:
            raise ProtocolError(f"header of {header_size} bytes announced (at most {MAX_HEADER_BYTES})")
        encoded = bytearray(header_size)
        yield from self._read_steps(memoryview(encoded))
        try:
            header = json.loads(encoded.decode("utf-8"))
        except ValueError as error:
            raise ProtocolError(f"malformed header: {error}") from None
        if not isinstance(header, dict):
            raise ProtocolError(f"the header is not a JSON object: {header!r}")
        if "dtype" not in header and not payload_size:
            return header, None
        tensor = _empty_tensor(header, payload_size)
        if payload_size:
            yield from self._read_steps(memoryview(tensor).cast("B"))
        return header, tensor

    def _read_steps(self, view: memoryview) -> Steps:
        done = 0
        while done < len(view):
            try:
                count = os.readv(self.read_fd, [view[done:]])
            except BlockingIOError:
                yield READ
                continue
            if not count:
                raise EOFError("the peer closed the channel")
            done += count

    def _write_steps(self, data: Any) -> Steps:
        view, done = memoryview(data), 0
        while done < len(view):
            try:
                done += os.write(self.write_fd, view[done:])
            except BlockingIOError:
                yield WRITE


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


def _resolve(ready: "asyncio.Future") -> None:
    if not ready.done():
        ready.set_result(None)


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
