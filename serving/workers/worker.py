"""An inference worker: one backend served over the worker protocol on its stdin and stdout pipes.

    python -m serving.workers.worker --parent-pid PID

Started by serving.workers.proxy.WorkerBackend in the backend's interpreter (.venv-lite for mslite,
.venv for mindspore); it sees tensors only, never request bytes. It never outlives its front: the
kernel kills it when the front exits (PR_SET_PDEATHSIG, even while a batch runs or the worker hangs),
and it exits at end-of-file of its request pipe. It ignores SIGINT and SIGTERM: a Ctrl+C or a service
manager's SIGTERM to the whole process group is the front's to handle, which finishes the batch in
flight and then closes its workers. Logs go to stderr; so does anything a native library prints to
stdout, because the protocol keeps its own copy of the pipe and fd 1 is pointed at stderr.
"""
import argparse
import ctypes
import logging
import os
import platform
import signal
import sys
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from serving.backends import Backend, create_backend
from modelrepo.manifest import ModelFile
from serving.workers.protocol import PROTOCOL_VERSION, Channel, Header, error_header

LOG = logging.getLogger("serving.workers.worker")
PR_SET_PDEATHSIG = 1
EXIT_ORPHANED = 3
OK = {"ok": True}

Reply = Tuple[Header, Optional[np.ndarray]]


class Worker:
    """Answers the requests of one front, in order, with one backend loaded by the first request."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.backend: Optional[Backend] = None
        self.handlers: Dict[str, Callable[[Header, Optional[np.ndarray]], Reply]] = {
            "load": self.load, "warm_up": self.warm_up, "predict": self.predict, "run": self.run,
            "close": self.close}

    def serve(self) -> None:
        """Say hello, then answer requests until a close request or the end of the request pipe."""
        self.channel.send({"op": "hello", "protocol": PROTOCOL_VERSION, "pid": os.getpid(),
                           "python": platform.python_version()})
        op = None
        while op != "close":
            try:
                header, tensor = self.channel.receive()
            except EOFError:
                LOG.info("the front closed the request pipe: exiting")
                break
            op = header.get("op")
            try:
                reply, output = self.handle(op, header, tensor)
            except Exception as error:  # a failed request fails only itself; the front gets the class and message
                LOG.warning("%s failed: %s: %s", op, type(error).__name__, error)
                reply, output = error_header(error), None
            self.channel.send(reply, output)
        self.release()

    def handle(self, op: str, header: Header, tensor: Optional[np.ndarray]) -> Reply:
        """The reply to one request."""
        if op not in self.handlers:
            raise ValueError(f"unknown op {op!r} (known: {', '.join(sorted(self.handlers))})")
        return self.handlers[op](header, tensor)

    def load(self, header: Header, _: Optional[np.ndarray]) -> Reply:
        """Create the backend named in the request for its model file."""
        if self.backend is not None:
            raise ValueError("this worker has a model loaded already")
        self.backend = create_backend(header["backend"], ModelFile(**header["model_file"]), device=header["device"],
                                      device_id=int(header["device_id"]), threads=int(header["threads"]),
                                      precision=header.get("precision", "auto"))
        return dict(OK, runtime_version=self.backend.runtime_version, precision=self.backend.precision), None

    def warm_up(self, header: Header, sample: Optional[np.ndarray]) -> Reply:
        """Backend.warm_up on the sample image; replies the prepared batch sizes."""
        backend = self._loaded()
        backend.warm_up(_required(sample, "warm_up"), int(header["max_batch_size"]))
        return dict(OK, run_sizes=list(backend.run_sizes)), None

    def predict(self, _: Header, batch: Optional[np.ndarray]) -> Reply:
        """Backend.predict: logits of a batch, run at the next prepared size."""
        return OK, self._loaded().predict(_required(batch, "predict"))

    def run(self, _: Header, batch: Optional[np.ndarray]) -> Reply:
        """Backend.run: logits of a batch at exactly its size."""
        return OK, self._loaded().run(_required(batch, "run"))

    def close(self, _: Header, __: Optional[np.ndarray]) -> Reply:
        """Release the backend before acknowledging, so the front knows its resources are free."""
        self.release()
        return OK, None

    def release(self) -> None:
        """Close the backend, if one is loaded."""
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    def _loaded(self) -> Backend:
        if self.backend is None:
            raise ValueError("no model loaded: send a load request first")
        return self.backend


def _required(tensor: Optional[np.ndarray], op: str) -> np.ndarray:
    if tensor is None:
        raise ValueError(f"{op} needs a tensor payload")
    return tensor


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent exits; exit now if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the front died before the prctl took effect
        LOG.error("the front (pid %d) is gone: exiting", parent_pid)
        sys.exit(EXIT_ORPHANED)


def take_stdio() -> Channel:
    """The protocol channel on private copies of fds 0 and 1; fd 0 becomes /dev/null, fd 1 stderr."""
    read_fd, write_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return Channel(read_fd, write_fd)


def main(argv: Optional[list] = None) -> None:
    """Parse the command line, tie this process to its front and serve until told to stop."""
    parser = argparse.ArgumentParser(prog="python -m serving.workers.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--parent-pid", type=int, required=True, help="pid of the front that started this worker")
    parser.add_argument("--log-level", type=int, default=logging.INFO, help="the front's logging level (a number)")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level,
                        format="%(asctime)s worker[%(process)d] %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent(args.parent_pid)
    Worker(take_stdio()).serve()


if __name__ == "__main__":
    main()
