"""The serving errors: one base class carrying its gRPC status code, one subclass per code; and
StartupError, the base of everything that stops the server from starting.

The data plane raises ServingErrors without knowing about gRPC; `serving.servicers` maps them to the
wire in one place (`ServingError.code` is the `grpc.StatusCode` name). `serving.cli` reports a
StartupError as one `cannot serve: ...` line and exits with its `exit_status`.
"""
from __future__ import annotations

import asyncio

from modelrepo.errors import ModelRepositoryError


class ServingError(Exception):
    """A failure with a client-facing message and the gRPC status code it maps to."""

    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ServingError):
    """The request cannot be served as sent (bad image, empty request, too many images)."""

    code = "INVALID_ARGUMENT"


class NotFound(ServingError):
    """The requested model version is not loaded."""

    code = "NOT_FOUND"


class QueueFull(ServingError):
    """Admitting the request would exceed the queue bound; retry later."""

    code = "RESOURCE_EXHAUSTED"


class DeadlineExpired(ServingError):
    """The caller's deadline passed before the work was computed."""

    code = "DEADLINE_EXCEEDED"


class Unavailable(ServingError):
    """The model is not ready: still loading, or the server is draining."""

    code = "UNAVAILABLE"


class InternalError(ServingError):
    """The server failed to compute a result (inference or batching failure)."""

    code = "INTERNAL"


class StartupError(Exception):
    """What the server cannot start with, in one line for the operator, and the exit status it maps to.

    Derived by TlsFileError, TokenFileError (2: unusable input) and BackendError (1: the runtime cannot
    load the model; DeviceMissing, found before loading, is 2).
    """

    exit_status = 2


# The model repository contract (modelrepo: ManifestError, RepositoryError) cannot depend on serving,
# so its error base stands beside StartupError here; an unusable repository or version exits with 2.
STARTUP_ERRORS = (StartupError, ModelRepositoryError)


def exit_status(error: BaseException) -> int:
    """The exit status a start-up error maps to (2 for the repository contract's errors)."""
    return getattr(error, "exit_status", StartupError.exit_status)


def reraise_cancellation(error: BaseException) -> None:
    """Re-raise `error` if it is a task's cancellation; call it first in every `except Exception` around an await.

    On Python 3.7 (the Lite server's) `asyncio.CancelledError` is an Exception (a BaseException from
    3.8 on): a bare `except Exception` would swallow the cancellation and keep the task running.
    """
    if isinstance(error, asyncio.CancelledError):
        raise error
