"""Command line of the server: flags generated from Settings, preflight checks, signal handling.

SIGTERM/SIGINT shut down gracefully; SIGHUP scans the model repository for new versions at once.
An inference thread still running at the end (a load abandoned at shutdown, waiting on its worker)
would hold the interpreter's exit: the process leaves without it, and the worker dies with it.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import typing
from typing import List, Optional

from modelrepo.layout import latest_version_dir
from modelrepo.manifest import Manifest
from serving.auth import read_tokens
from serving.backends import check_device
from serving.errors import STARTUP_ERRORS, exit_status
from serving.model import running_inference_threads
from serving.repository import resolve_model_name
from serving.server import Security, serve
from serving.settings import Settings, settings_fields
from serving.tls import is_loopback, server_credentials, server_ssl_context
from serving.verify import verified_manifest

LOG = logging.getLogger("serving")


def build_parser() -> argparse.ArgumentParser:
    """One --flag per Settings field, with the field's documentation as help."""
    parser = argparse.ArgumentParser(
        prog="python -m serving", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Serve the latest version of a model from a model repository over gRPC "
                    "(genet.v1.Classifier, KServe v2 inference.GRPCInferenceService, grpc.health.v1, reflection) "
                    "and KServe v2 HTTP/REST (--http-port) with dynamic batching.")
    hints = typing.get_type_hints(Settings)
    for field in settings_fields():
        flag = f"--{field.name.replace('_', '-')}"
        if hints[field.name] is bool:
            parser.add_argument(flag, action="store_true", help=field.metadata["help"])
        else:
            parser.add_argument(flag, type=_scalar_type(hints[field.name]), default=field.default,
                                help=field.metadata["help"])
    return parser


def _scalar_type(hint):
    """int for int and Optional[int], and so on."""
    arguments = [arg for arg in getattr(hint, "__args__", ()) if arg is not type(None)]
    return arguments[0] if arguments else hint


def preflight(settings: Settings) -> Manifest:
    """Find and verify what will be served before binding anything: fails fast with a clear message."""
    name = resolve_model_name(settings.model_repository, settings.model_name)
    manifest = verified_manifest(latest_version_dir(settings.model_repository, name), settings.backend)
    check_device(settings.device, settings.device_id)
    return manifest


def read_security(settings: Settings) -> Security:
    """Read the TLS files and tokens; warn about what crosses the network unprotected."""
    security = Security(
        credentials=server_credentials(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        if settings.tls else None,
        tokens=None if settings.auth_token_file is None else read_tokens(settings.auth_token_file),
        ssl_context=server_ssl_context(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        if settings.tls and settings.http_port is not None else None)
    exposed = [settings.host] + ([settings.http_address] if settings.http_port is not None else [])
    for host in sorted(set(h for h in exposed if not settings.tls and not is_loopback(h))):
        LOG.warning("--allow-insecure: serving PLAINTEXT on %s; anyone who can reach it can read the traffic%s",
                    host, " and the bearer tokens" if security.tokens is not None else "")
    return security


def main(argv: Optional[List[str]] = None) -> int:
    """Parse flags, check the repository and device, serve until SIGTERM/SIGINT; the exit status."""
    parser = build_parser()
    try:
        settings = Settings(**vars(parser.parse_args(argv)))
    except ValueError as error:
        parser.error(str(error))
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        manifest = preflight(settings)
        security = read_security(settings)
    except STARTUP_ERRORS as error:
        return _cannot_serve(error)
    return _leave(_serve(settings, manifest, security))


def _serve(settings: Settings, manifest: Manifest, security: Security) -> int:
    """Serve until stopped; the exit status."""
    try:
        asyncio.run(_run(settings, manifest, security))
    except STARTUP_ERRORS as error:  # the first version failed to load: the file changed, or the runtime refused it
        return _cannot_serve(error)
    except Exception:
        LOG.exception("the server failed")
        return 1
    return 0


def _cannot_serve(error: Exception) -> int:
    LOG.error("cannot serve: %s", error)
    return exit_status(error)


def _leave(status: int) -> int:
    """`status`, or exit with it at once if an inference thread is still running (the exit would join it)."""
    running = running_inference_threads()
    if running:
        LOG.warning("exiting without waiting for %s: a runtime call cannot be interrupted", ", ".join(running))
        logging.shutdown()
        os._exit(status)
    return status


async def _run(settings: Settings, manifest: Manifest, security: Security) -> None:
    stop, rescan = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _request_stop, stop, signum)
    loop.add_signal_handler(signal.SIGHUP, _request_rescan, rescan)
    await serve(settings, manifest, stop, security, rescan)


def _request_stop(stop: asyncio.Event, signum: int) -> None:
    LOG.info("received %s", signal.Signals(signum).name)
    stop.set()


def _request_rescan(rescan: asyncio.Event) -> None:
    LOG.info("received SIGHUP: scanning the model repository")
    rescan.set()
