"""Hot reload: keep the newest valid versions of the model in the repository loaded.

A scan (every --reload-interval-s, and on SIGHUP) lists the complete versions (all-digit
directories holding a manifest.json: export renames them into place atomically) and wants the
newest --keep-versions of them that are not known to be broken. A wanted version that is not
loaded yet is verified (manifest, version number, sha256 of the served file), loaded and warmed
beside the serving ones, then becomes the latest in one step; versions no longer wanted are then
unloaded once their admitted requests have finished. A version that fails is rejected with a log
line, remembered (until its manifest.json changes) and the loaded ones keep serving. Removing a
version directory rolls back: the next scan loads the newest remaining one and unloads it.
Nothing is unloaded while no wanted version could be loaded. Cancelling the watcher (shutdown)
stops it at once, a load under way included; the registry finishes unloads under way.
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Dict, List, Optional, Tuple

from prometheus_client import CollectorRegistry, Counter, Gauge

from modelrepo.layout import versions
from modelrepo.manifest import MANIFEST_FILE, Manifest
from serving.errors import reraise_cancellation
from serving.registry import ModelRegistry
from serving.verify import verified_manifest

LOG = logging.getLogger(__name__)


class ReloadMetrics:
    """Version loads by outcome and the loaded versions, in the server's metric registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.reloads = Counter("genet_model_reloads", "Versions found by a repository scan, by outcome "
                               "(loaded, or rejected: invalid or unloadable)", ["outcome"], registry=registry)
        self.loaded = Gauge("genet_model_version_loaded", "1 for every loaded model version", ["version"],
                            registry=registry)
        self.latest = Gauge("genet_model_latest_version", "The version unpinned requests get", registry=registry)

    def show(self, loaded: List[str], latest: Optional[str]) -> None:
        """Publish the registry's current versions."""
        self.loaded.clear()
        for version in loaded:
            self.loaded.labels(version=version).set(1)
        self.latest.set(int(latest) if latest and latest.isdigit() else 0)


class RepositoryWatcher:
    """Reconciles the registry's loaded versions with the repository, one scan at a time."""

    def __init__(self, repository: str, registry: ModelRegistry, backend: str, keep_versions: int,
                 metrics: ReloadMetrics) -> None:
        self._root = os.path.join(repository, registry.name)
        self._registry = registry
        self._backend = backend
        self._keep = keep_versions
        self._metrics = metrics
        self._rejected: Dict[int, Tuple[int, int]] = {}  # version -> identity of the manifest it failed with
        self._lock = asyncio.Lock()

    async def load_first(self, manifest: Manifest) -> None:
        """Load the version chosen at start-up (already verified); its failure is the caller's to handle."""
        await self._registry.load(manifest)
        self._metrics.show(self._registry.versions(), self._registry.latest)

    async def run(self, rescan: asyncio.Event, interval_s: float) -> None:
        """Scan now, then every `interval_s` (0: never by itself) and whenever `rescan` is set."""
        while True:
            try:
                await self.scan()
            except Exception as error:  # a bug in a scan must not stop later ones, nor the server
                reraise_cancellation(error)
                LOG.exception("repository scan failed")
            try:
                await asyncio.wait_for(rescan.wait(), interval_s or None)
            except asyncio.TimeoutError:
                pass
            rescan.clear()

    async def scan(self) -> None:
        """Load the wanted versions that are missing, then unload the loaded ones no longer wanted."""
        async with self._lock:
            try:
                found = sorted(versions(os.path.dirname(self._root), self._registry.name), reverse=True)
            except OSError as error:
                LOG.warning("cannot scan %s: %s; the loaded versions keep serving", self._root, error)
                return
            wanted = await self._load_wanted(found)
            if wanted:
                for version in self._registry.versions():
                    if version not in wanted:
                        LOG.info("unloading model %s version %s once its requests finish", self._registry.name,
                                 version)
                        await self._registry.unload(version)
                        self._metrics.show(self._registry.versions(), self._registry.latest)

    async def _load_wanted(self, found: List[int]) -> List[str]:
        """The newest `keep` loadable versions of `found` (descending), loading those not loaded yet."""
        wanted: List[str] = []
        for version in found:
            if len(wanted) == self._keep:
                break
            if str(version) in self._registry.versions() or await self._try_load(version):
                wanted.append(str(version))
        return wanted

    async def _try_load(self, version: int) -> bool:
        """Verify, load and warm `version`; False (and a log line) if it is or was rejected."""
        directory = os.path.join(self._root, str(version))
        identity = _identity(directory)
        if self._rejected.get(version) == identity:
            return False
        LOG.info("model %s version %d found: verifying and loading it", self._registry.name, version)
        try:
            manifest = await asyncio.get_running_loop().run_in_executor(
                None, verified_manifest, directory, self._backend)
            await self._registry.load(manifest)
        except Exception as error:  # any failure rejects only this version
            reraise_cancellation(error)
            self._rejected[version] = identity
            self._metrics.reloads.labels(outcome="rejected").inc()
            LOG.error("rejected model %s version %d: %s; still serving version %s", self._registry.name, version,
                      _describe(error), self._registry.latest)
            return False
        self._metrics.reloads.labels(outcome="loaded").inc()
        self._metrics.show(self._registry.versions(), self._registry.latest)
        return True


def _identity(directory: str) -> Tuple[int, int]:
    """Which manifest.json a version directory holds: a re-exported version gets another chance."""
    try:
        stat = os.stat(os.path.join(directory, MANIFEST_FILE))
    except OSError:
        return (0, 0)
    return (stat.st_ino, stat.st_mtime_ns)


def _describe(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"
