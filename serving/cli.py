"""Command line of the server: flags generated from Settings, preflight checks, signal handling."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import typing
from typing import List, Optional

from serving.backends import BackendError, check_device
from serving.manifest import Manifest, ManifestError, read_manifest
from serving.repository import RepositoryError, latest_version_dir, resolve_model_name
from serving.server import serve
from serving.settings import Settings, settings_fields

LOG = logging.getLogger("serving")


def build_parser() -> argparse.ArgumentParser:
    """One --flag per Settings field, with the field's documentation as help."""
    parser = argparse.ArgumentParser(
        prog="python -m serving", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Serve the latest version of a model from a model repository over gRPC "
                    "(genet.v1.Classifier, grpc.health.v1, reflection) with dynamic batching.")
    hints = typing.get_type_hints(Settings)
    for field in settings_fields():
        parser.add_argument("--" + field.name.replace("_", "-"), type=_scalar_type(hints[field.name]),
                            default=field.default, help=field.metadata["help"])
    return parser


def _scalar_type(hint):
    """int for int and Optional[int], and so on."""
    arguments = [arg for arg in getattr(hint, "__args__", ()) if arg is not type(None)]
    return arguments[0] if arguments else hint


def preflight(settings: Settings) -> Manifest:
    """Find and check what will be served before binding anything: fails fast with a clear message."""
    name = resolve_model_name(settings.model_repository, settings.model_name)
    manifest = read_manifest(latest_version_dir(settings.model_repository, name))
    manifest.model_file(settings.backend)
    check_device(settings.device, settings.device_id)
    return manifest


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
    except (RepositoryError, ManifestError, BackendError) as error:
        LOG.error("cannot serve: %s", error)
        return 2
    try:
        asyncio.run(_run(settings, manifest))
    except BackendError as error:
        LOG.error("cannot load the model: %s", error)
        return 1
    except Exception:
        LOG.exception("the server failed")
        return 1
    return 0


async def _run(settings: Settings, manifest: Manifest) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _request_stop, stop, signum)
    await serve(settings, manifest, stop)


def _request_stop(stop: asyncio.Event, signum: int) -> None:
    LOG.info("received %s", signal.Signals(signum).name)
    stop.set()
