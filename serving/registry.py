"""The model registry: which versions of the served model are loaded, and which one is the latest.

A version is registered only once loaded and warm; a new version is loaded before an old one is
unloaded, so swapping versions (hot reload) never leaves a gap. Requests name a version or get
the latest ready one. Every unloaded version is closed exactly once, even when the task unloading
it is cancelled (shutdown during a hot reload): close() finishes such drains.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Dict, List, Optional, Set

from modelrepo.manifest import Manifest
from serving.errors import NotFound, Unavailable
from serving.model import ServedModel

LOG = logging.getLogger(__name__)
# A client-chosen model_version is echoed in errors only this far: status details travel in
# metadata, which gRPC limits to 8 KiB.
_SHOWN_VERSION_CHARS = 64

Loader = Callable[[Manifest], Awaitable[ServedModel]]


class ModelRegistry:
    """Loaded versions of one model name, keyed by version string."""

    def __init__(self, name: str, loader: Loader) -> None:
        self.name = name
        self._loader = loader
        self._models: Dict[str, ServedModel] = {}
        self._latest: Optional[str] = None
        self._draining: Set[ServedModel] = set()  # unloaded, not yet closed
        self._closed = False
        self.closing = asyncio.Event()
        """Set when the server starts shutting down (close()): open streams stop reading."""

    @property
    def ready(self) -> bool:
        """True when a version is loaded, warm and accepting work."""
        return self._latest is not None and self._models[self._latest].ready

    @property
    def latest(self) -> Optional[str]:
        """The version unpinned requests get, or None before the first load."""
        return self._latest

    def versions(self) -> List[str]:
        """Loaded versions, ascending."""
        return sorted(self._models, key=_version_key)

    def get(self, version: str = "") -> ServedModel:
        """The requested version ('' = latest); Unavailable while nothing is ready, NotFound if unknown."""
        if self._closed:
            raise Unavailable(f"model {self.name} is not served: the server is shutting down")
        if not version:
            if not self.ready:
                raise Unavailable(f"model {self.name} is not ready (loading or out of service)")
            return self._models[self._latest]
        model = self._models.get(_normalise(version))
        if model is None:
            shown = version if len(version) <= _SHOWN_VERSION_CHARS else f"{version[:_SHOWN_VERSION_CHARS]}..."
            raise NotFound(f"model {self.name} version {shown!r} is not loaded (loaded: "
                           f"{', '.join(self.versions()) or 'none'})")
        if not model.ready:
            raise Unavailable(f"model {self.name} version {model.version} is not ready")
        return model

    async def load(self, manifest: Manifest) -> ServedModel:
        """Load and warm `manifest`'s version, then make it available (the latest if highest)."""
        if manifest.name != self.name:
            raise ValueError(f"manifest is for model {manifest.name!r}, the registry serves {self.name!r}")
        if _normalise(manifest.version) != manifest.version:
            # Loaded versions are keyed as written; "02" would never match its directory "2".
            raise ValueError(f"version {manifest.version!r} is not in canonical form "
                             f"({_normalise(manifest.version)!r})")
        model = await self._loader(manifest)
        previous = self._models.get(model.version)
        self._models[model.version] = model
        model.ready = True
        if self._latest is None or _version_key(model.version) >= _version_key(self._latest):
            self._latest = model.version
        if previous is not None:
            await self._close(previous)
        LOG.info("model %s version %s is ready (latest: %s)", self.name, model.version, self._latest)
        return model

    async def unload(self, version: str) -> None:
        """Stop routing to `version`, let its admitted work finish on it (drain), then release it."""
        model = self._models.pop(_normalise(version))
        if self._latest == model.version:
            self._latest = max(self._models, key=_version_key) if self._models else None
        await self._close(model)

    async def close(self, timeout_s: Optional[float] = None) -> None:
        """Unload every version and finish the unloads under way; work left after `timeout_s` fails.

        From now on every request is refused with Unavailable (shutting down)."""
        self._closed = True
        self.closing.set()
        models = [self._models.pop(version) for version in self.versions()]
        self._latest = None
        await asyncio.gather(*(self._close(model, timeout_s) for model in models + list(self._draining)))

    async def _close(self, model: ServedModel, timeout_s: Optional[float] = None) -> None:
        self._draining.add(model)
        await model.close(timeout_s)
        self._draining.discard(model)
        LOG.info("model %s version %s unloaded (drained; latest: %s)", self.name, model.version, self._latest)


def _normalise(version: str) -> str:
    # Not int(): Python refuses to parse more than 4300 digits, and versions come from clients.
    return (version.lstrip("0") or "0") if version.isdigit() else version


def _version_key(version: str):
    return (0, int(version), "") if version.isdigit() else (1, 0, version)
