"""The model registry and the choice of what to serve: readiness, versions, pinning, failed loads, the
served file and the checks serving adds to the manifest contract (tests/modelrepo holds the contract's)."""
import asyncio
import dataclasses
import os
import shutil
import stat

import pytest

from modelrepo.errors import ManifestError, RepositoryError
from modelrepo.manifest import read_manifest
from serving.errors import NotFound, Unavailable
from serving.manifest import served_file
from serving.registry import ModelRegistry
from serving.repository import resolve_model_name
from serving.verify import private_copy, verified_manifest
from tests.modelrepo.versions import rewrite_manifest


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
        for version in ("", "1", "7"):  # shutting down: refused, whether the version was loaded or not
            with pytest.raises(Unavailable, match="shutting down"):
                registry.get(version)

    asyncio.run(scenario())


def test_a_manifest_of_another_model_is_refused(manifest):
    registry = ModelRegistry("other", load_version)
    with pytest.raises(ValueError, match="registry serves 'other'"):
        asyncio.run(registry.load(manifest))


def test_the_only_model_of_the_repository_is_served_unless_another_is_named(version_dir, tmp_path):
    for entry in ("1", "2", ".tmp-3", "10"):
        shutil.copytree(version_dir, tmp_path / "genet_res50" / entry)
    (tmp_path / "genet_res50" / "11").mkdir()  # no manifest: still being written
    assert resolve_model_name(str(tmp_path), None) == "genet_res50"
    with pytest.raises(RepositoryError, match="models: genet_res50"):
        resolve_model_name(str(tmp_path), "resnet")


def test_a_manifest_without_the_backends_file_is_refused(version_dir, tmp_path):
    copy = tmp_path / "1"
    shutil.copytree(version_dir, copy)
    (copy / "model.ms").unlink()
    with pytest.raises(ManifestError, match="the file is missing"):
        served_file(read_manifest(str(copy)), "mslite")


@pytest.fixture
def version_copy(version_dir, tmp_path):
    """A writable copy of the exported version as <tmp>/genet_res50/2 (the manifest still says 1)."""
    copy = tmp_path / "genet_res50" / "2"
    shutil.copytree(str(version_dir), str(copy))
    for path in copy.iterdir():
        path.chmod(0o644)  # export publishes read-only files
    return copy


def test_a_version_not_written_as_its_directory_name_is_refused(version_copy):
    rewrite_manifest(version_copy, version="02")
    with pytest.raises(ManifestError, match="the directory is version 2 but its manifest says version '02'"):
        verified_manifest(str(version_copy), "mslite")
    registry = ModelRegistry("genet_res50", load_version)
    with pytest.raises(ValueError, match="not in canonical form"):
        asyncio.run(registry.load(read_manifest(str(version_copy))))


def test_the_runtime_gets_a_private_copy_of_the_checked_bytes(version_copy):
    rewrite_manifest(version_copy, version=2)
    model_file = served_file(verified_manifest(str(version_copy), "mslite"), "mslite")
    with private_copy(model_file) as copy:
        assert copy.path != model_file.path and os.path.basename(copy.path) == "model.ms"
        assert stat.S_IMODE(os.stat(os.path.dirname(copy.path)).st_mode) == 0o700
        assert open(copy.path, "rb").read() == open(model_file.path, "rb").read()
    assert not os.path.exists(os.path.dirname(copy.path))
    data = bytearray((version_copy / "model.ms").read_bytes())
    data[len(data) // 2] ^= 0xFF  # changed after verified_manifest checked it
    (version_copy / "model.ms").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="sha256 mismatch"):
        with private_copy(model_file):
            pass


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
