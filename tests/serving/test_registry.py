"""The model registry and the repository scan: readiness, versions, pinning, failed loads."""
import asyncio
import dataclasses
import shutil

import pytest

from serving.errors import NotFound, Unavailable
from serving.manifest import ManifestError, read_manifest
from serving.registry import ModelRegistry
from serving.repository import RepositoryError, latest_version_dir, resolve_model_name


class LoadedVersion:
    """Stands for a ServedModel: what the registry needs of one (version, ready, close)."""

    def __init__(self, manifest):
        self.manifest = manifest
        self.version = manifest.version
        self.ready = False
        self.closed = False

    async def close(self, timeout_s=None):
        """Mark closed."""
        self.ready = False
        self.closed = True


async def load_version(manifest):
    """A loader: version 13 fails to load, like a broken new version."""
    if manifest.version == "13":
        raise RuntimeError("broken version")
    return LoadedVersion(manifest)


@pytest.fixture
def manifest(version_dir):
    """The exported version's manifest."""
    return read_manifest(str(version_dir))


def test_nothing_is_served_until_loaded_then_versions_can_be_pinned(manifest):
    async def scenario():
        registry = ModelRegistry("genet_res50", load_version)
        with pytest.raises(Unavailable, match="not ready"):
            registry.get("")
        with pytest.raises(NotFound, match="version '1' is not loaded"):
            registry.get("1")
        first = await registry.load(dataclasses.replace(manifest, version="1"))
        second = await registry.load(dataclasses.replace(manifest, version="2"))
        assert registry.get("") is second and registry.get("1") is first and registry.get("01") is first
        with pytest.raises(RuntimeError, match="broken version"):
            await registry.load(dataclasses.replace(manifest, version="13"))
        assert registry.get("") is second and registry.versions() == ["1", "2"]
        await registry.unload("2")
        assert second.closed and registry.get("") is first
        await registry.close()
        assert first.closed and not registry.ready

    asyncio.run(scenario())


def test_a_manifest_of_another_model_is_refused(manifest):
    registry = ModelRegistry("other", load_version)
    with pytest.raises(ValueError, match="registry serves 'other'"):
        asyncio.run(registry.load(manifest))


def test_the_repository_scan_finds_the_latest_complete_version(model_repository, version_dir, tmp_path):
    for entry in ("1", "2", ".tmp-3", "10"):
        shutil.copytree(version_dir, tmp_path / "genet_res50" / entry)
    (tmp_path / "genet_res50" / "11").mkdir()  # no manifest: still being written
    assert resolve_model_name(str(tmp_path), None) == "genet_res50"
    assert latest_version_dir(str(tmp_path), "genet_res50").endswith("genet_res50/10")
    with pytest.raises(RepositoryError, match="models: genet_res50"):
        resolve_model_name(str(tmp_path), "resnet")


def test_a_manifest_without_the_backends_file_is_refused(version_dir, tmp_path):
    copy = tmp_path / "1"
    shutil.copytree(version_dir, copy)
    (copy / "model.ms").unlink()
    with pytest.raises(ManifestError, match="the file is missing"):
        read_manifest(str(copy)).model_file("mslite")


def test_an_unload_cancelled_while_draining_is_finished_by_close(manifest):
    async def scenario():
        drained = asyncio.Event()

        class DrainingVersion(LoadedVersion):
            async def close(self, timeout_s=None):
                """Close once its admitted requests are done (`drained`)."""
                await drained.wait()
                await super().close(timeout_s)

        async def load(manifest):
            return DrainingVersion(manifest)

        registry = ModelRegistry("genet_res50", load)
        first = await registry.load(dataclasses.replace(manifest, version="1"))
        unloading = asyncio.ensure_future(registry.unload("1"))
        await asyncio.sleep(0)
        unloading.cancel()  # the repository watcher is cancelled at shutdown while the version drains
        await asyncio.wait([unloading])
        drained.set()
        await registry.close()
        return first.closed

    assert asyncio.run(scenario())
