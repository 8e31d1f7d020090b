"""The front's side of an inference worker: WorkerBackend, a Backend whose runtime runs in a child process.

Code holding a Backend cannot tell a WorkerBackend from an in-process one: the same run, predict,
warm_up, close, run_sizes and runtime_version, and a BackendError raised in the worker is raised
here as a BackendError. predict_async is the same predict on an event loop (the server's path). What is new is the worker's failures: WorkerDied (the process exited, e.g.
kill -9 or a native crash) and WorkerTimeout (a call outlived its timeout; the worker was killed).
Both leave the handle without a worker; restart() starts a fresh one, and when to (with what
backoff) is the caller's decision.
"""
import asyncio
import dataclasses
import logging
import os
import signal
import subprocess
import threading
from typing import Any, Optional, Tuple

import numpy as np

from serving.backends import Backend, BackendError
from modelrepo.manifest import ModelFile
from runtime_env import LITE_PYTHON_ENV, REPO_ROOT, backend_python
from serving.workers.protocol import PROTOCOL_VERSION, Channel, Header, ProtocolError, deadline_after, enlarge_pipe

LOG = logging.getLogger(__name__)
CLOSE_TIMEOUT_S = 30.0
# Errors the front re-raises as themselves; any other class arrives as a WorkerError naming it.
REMOTE_ERRORS = {"BackendError": BackendError, "ValueError": ValueError}


class WorkerError(BackendError):
    """The worker failed as a process: it died, hung, or broke the protocol."""


class WorkerDied(WorkerError):
    """The worker exited before answering; `returncode` is its exit code, or -N for signal N."""

    def __init__(self, message: str, returncode: Optional[int]) -> None:
        super().__init__(message)
        self.returncode = returncode


class WorkerTimeout(WorkerError):
    """The worker did not answer within the call's timeout and was killed."""


class WorkerBackend(Backend):
    """A backend (mslite, mindspore, ...) loaded in a worker process started with its interpreter.

    One call at a time: the blocking calls hold a lock and may come from any thread; predict_async
    runs on an event loop and relies on its caller (the worker pool) to make no other call meanwhile.
    The kernel kills the worker when the *thread* that started it exits (PR_SET_PDEATHSIG follows the
    thread): construct and restart() from a thread that lives as long as the handle, like the main
    thread or a pool's supervisor thread. `timeout_s` bounds run and predict (None: no bound); `setup_timeout_s` bounds start, load and
    warm-up, which may compile a graph per batch size.
    """

    def __init__(self, backend: str, model_file: ModelFile, *, device: str, device_id: int, threads: int,
                 precision: str = "auto", timeout_s: Optional[float] = None, setup_timeout_s: float = 600.0,
                 python: Optional[str] = None, stderr: Any = None) -> None:
        self.backend = backend
        self.load_request = {"op": "load", "backend": backend, "model_file": dataclasses.asdict(model_file),
                             "device": device, "device_id": device_id, "threads": threads, "precision": precision}
        self.timeout_s, self.setup_timeout_s = timeout_s, setup_timeout_s
        self.python = python or backend_python(backend)
        self.stderr = stderr
        self._lock = threading.Lock()
        self._process: Optional[subprocess.Popen] = None
        self._channel: Optional[Channel] = None
        self._warm_up_args: Optional[Tuple[np.ndarray, int]] = None
        self.restart()

    @property
    def pid(self) -> Optional[int]:
        """The worker's process id; None when no worker is running."""
        return self._process.pid if self._process else None

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Backend.run in the worker."""
        return self._call({"op": "run"}, batch, self.timeout_s)[1]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Backend.predict in the worker (padding to the prepared sizes happens there)."""
        return self._call({"op": "predict"}, np.ascontiguousarray(batch, dtype=np.float32), self.timeout_s)[1]

    async def predict_async(self, batch: np.ndarray) -> np.ndarray:
        """`predict` on the running event loop, with no thread in between: the batch is written to the
        worker's pipe and its logits read back as the descriptors become ready.

        The caller (the worker pool) makes sure that no other call uses this worker meanwhile. A
        worker that dies, hangs past `timeout_s`, garbles its reply, or whose call is cancelled half
        way (its pipe would be out of step) is killed: WorkerDied, WorkerTimeout, WorkerError, or the
        cancellation.
        """
        if self._channel is None:
            raise self._gone()
        try:
            async with asyncio.timeout(self.timeout_s):  # unlike wait_for, no task: the batch leaves at once
                await self._channel.send_async({"op": "predict"}, np.ascontiguousarray(batch, dtype=np.float32))
                reply, output = await self._channel.receive_async()
        except (EOFError, BrokenPipeError):
            returncode = await asyncio.get_running_loop().run_in_executor(None, self._exit_code)
            raise self._died("predict", returncode) from None
        except asyncio.TimeoutError:
            raise self._timed_out("predict", self.timeout_s) from None
        except ProtocolError as error:
            raise self._garbled("predict", error) from None
        except asyncio.CancelledError:
            self._discard()
            raise
        if not reply.get("ok"):
            raise remote_error(reply, self.backend)
        return output

    def warm_up(self, sample: np.ndarray, max_batch_size: int) -> None:
        """Backend.warm_up in the worker; remembered, so that restart() warms the new worker up too."""
        with self._lock:
            self._warm_up_args = (np.ascontiguousarray(sample, dtype=np.float32), max_batch_size)
            self._warm_up()

    def close(self) -> None:
        """Wait for the call in flight, then have the worker release its runtime and exit."""
        with self._lock:
            if self._process is None:
                return
            try:
                self._exchange({"op": "close"}, None, CLOSE_TIMEOUT_S)
                self._process.wait(CLOSE_TIMEOUT_S)
            except (WorkerError, subprocess.TimeoutExpired) as error:
                LOG.warning("the %s worker did not close cleanly (%s): killing it", self.backend, error)
            finally:
                self._discard()

    def kill(self) -> None:
        """SIGKILL the worker now, from any thread, even during a call (which then raises WorkerDied)."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()

    def restart(self) -> None:
        """Replace the worker (killing any running one) by a fresh one, loaded and warmed up as before."""
        with self._lock:
            self._discard()
            self._start()
            if self._warm_up_args is not None:
                self._warm_up()

    def _warm_up(self) -> None:
        sample, max_batch_size = self._warm_up_args
        reply, _ = self._exchange({"op": "warm_up", "max_batch_size": max_batch_size}, sample, self.setup_timeout_s)
        self.run_sizes = tuple(reply["run_sizes"])

    def _start(self) -> None:
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        command = [self.python, "-m", "serving.workers.worker", "--parent-pid", str(os.getpid()),
                   "--log-level", str(logging.getLogger().getEffectiveLevel())]
        path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        try:
            self._process = subprocess.Popen(command, stdin=request_read, stdout=reply_write, stderr=self.stderr,
                                             env=dict(os.environ, PYTHONPATH=path))
        except OSError as error:
            os.close(request_write)
            os.close(reply_read)
            raise BackendError(f"cannot start the {self.backend} worker with {self.python}: {error} "
                               f"(set {LITE_PYTHON_ENV} for mslite)") from None
        finally:
            os.close(request_read)
            os.close(reply_write)
        enlarge_pipe(request_write)
        enlarge_pipe(reply_read)
        self._channel = Channel(reply_read, request_write)
        try:
            hello, _ = self._receive("start", self.setup_timeout_s)
            if hello.get("protocol") != PROTOCOL_VERSION:
                raise WorkerError(f"the worker speaks protocol {hello.get('protocol')!r}, "
                                  f"this front {PROTOCOL_VERSION}")
            reply, _ = self._exchange(self.load_request, None, self.setup_timeout_s)
        except BaseException:
            self._discard()
            raise
        self.runtime_version = reply["runtime_version"]
        self.precision = reply["precision"]
        LOG.info("%s worker pid %d (Python %s) serves %s with %s", self.backend, self._process.pid,
                 hello.get("python"), self.load_request["model_file"]["path"], self.runtime_version)

    def _call(self, header: Header, tensor: Optional[np.ndarray], timeout_s: Optional[float]):
        with self._lock:
            return self._exchange(header, tensor, timeout_s)

    def _exchange(self, header: Header, tensor: Optional[np.ndarray], timeout_s: Optional[float]):
        """Send one request and return its reply (header, tensor); raise what the worker raised."""
        if self._channel is None:
            raise self._gone()
        try:
            self._channel.send(header, tensor, deadline_after(timeout_s))
        except BrokenPipeError:
            self._raise_died(header["op"])
        reply, output = self._receive(header["op"], timeout_s)
        if not reply.get("ok"):
            raise remote_error(reply, self.backend)
        return reply, output

    def _receive(self, op: str, timeout_s: Optional[float]):
        """The worker's next message; a worker that dies, hangs or garbles it is gone afterwards."""
        try:
            return self._channel.receive(deadline_after(timeout_s))
        except EOFError:
            self._raise_died(op)
        except TimeoutError:
            raise self._timed_out(op, timeout_s) from None
        except ProtocolError as error:
            raise self._garbled(op, error) from None

    def _timed_out(self, op: str, timeout_s: Optional[float]) -> WorkerTimeout:
        """Kill the worker that did not answer `op` in time; the exception saying so."""
        pid = self._process.pid
        self._discard()
        return WorkerTimeout(f"the {self.backend} worker (pid {pid}) did not answer {op} within {timeout_s} s: killed")

    def _garbled(self, op: str, error: ProtocolError) -> WorkerError:
        """Kill the worker that broke the protocol during `op`; the exception saying so."""
        pid = self._process.pid
        self._discard()
        return WorkerError(f"the {self.backend} worker (pid {pid}) broke the protocol during {op}: {error}; killed")

    def _gone(self) -> WorkerDied:
        return WorkerDied(f"no {self.backend} worker is running (closed, or lost to an earlier failure): restart it",
                          None)

    def _raise_died(self, op: str) -> None:
        raise self._died(op, self._exit_code()) from None

    def _exit_code(self) -> Optional[int]:
        """The returncode of a worker that closed its pipe; None if it still runs after CLOSE_TIMEOUT_S."""
        try:
            return self._process.wait(CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return None

    def _died(self, op: str, returncode: Optional[int]) -> WorkerDied:
        """Discard the worker that closed its pipe during `op`; the exception saying how it ended."""
        pid = self._process.pid
        self._discard()
        return WorkerDied(f"the {self.backend} worker (pid {pid}) died during {op}: {describe_exit(returncode)}",
                          returncode)

    def _discard(self) -> None:
        """Kill the worker if it still runs, reap it and close the pipes."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            self._process = None
        if self._channel is not None:
            self._channel.close()
            self._channel = None


def remote_error(reply: Header, backend: str) -> Exception:
    """The exception a worker's error reply stands for: its own class where the front knows it."""
    error_class = REMOTE_ERRORS.get(reply.get("error"))
    if error_class is None:
        return WorkerError(f"{reply.get('error')} in the {backend} worker: {reply.get('message')}")
    return error_class(reply.get("message"))


def describe_exit(returncode: Optional[int]) -> str:
    """How a worker ended, from its Popen returncode (None: it closed its pipe but still runs)."""
    if returncode is None:
        return "closed its pipe but did not exit"
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"
