"""The repository layout: complete versions, canonical names, and publications that never overwrite."""
import shutil

import pytest

from modelrepo.errors import RepositoryError
from modelrepo.layout import create_staging, latest_version_dir, model_names, publish, taken_numbers, versions


def _stage(repository, content):
    staging = create_staging(repository, "net")
    (staging / "model.bin").write_text(content)
    return staging


def test_versions_count_up_from_1(tmp_path):
    first = publish(_stage(tmp_path, "a"), lambda version: None)
    second = publish(_stage(tmp_path, "b"), lambda version: None)
    assert (first.name, second.name) == ("1", "2")
    assert taken_numbers(tmp_path / "net") == [1, 2]
    assert (first / "model.bin").read_text() == "a"
    assert (first.stat().st_mode & 0o777, (first / "model.bin").stat().st_mode & 0o777) \
        == (0o755, 0o444)


def test_number_taken_concurrently_moves_to_the_next_one(tmp_path):
    publish(_stage(tmp_path, "old"), lambda version: None)
    rival = _stage(tmp_path, "rival")
    mine = _stage(tmp_path, "mine")
    versions_seen = []

    def rival_publishes_first(version):
        # The rival export takes the same number between our choice and our rename.
        versions_seen.append(version)
        if len(versions_seen) == 1:
            (rival / "manifest.json").write_text(str(version))
            rival.rename(rival.parent / str(version))
        (mine / "manifest.json").write_text(str(version))

    published = publish(mine, rival_publishes_first)
    assert versions_seen == [2, 3] and published.name == "3"
    assert (tmp_path / "net" / "2" / "model.bin").read_text() == "rival"
    assert (published / "model.bin").read_text() == "mine"
    assert (published / "manifest.json").read_text() == "3"
    assert (tmp_path / "net" / "1" / "model.bin").read_text() == "old"


def test_empty_directory_with_the_next_number_is_not_replaced(tmp_path):
    (tmp_path / "net" / "1").mkdir(parents=True)
    published = publish(_stage(tmp_path, "a"), lambda version: None)
    assert published.name == "2" and list((tmp_path / "net" / "1").iterdir()) == []


def test_unwritable_repository_is_named(tmp_path):
    blocker = tmp_path / "models"
    blocker.write_text("a file where the repository should be")
    with pytest.raises(RepositoryError, match="model repository .*models is not writable"):
        create_staging(blocker, "net")


def test_the_scan_finds_the_latest_complete_version(version_copy, tmp_path):
    for entry in ("1", "2", ".tmp-3", "10"):
        shutil.copytree(version_copy, tmp_path / "models" / "genet_res50" / entry)
    (tmp_path / "models" / "genet_res50" / "11").mkdir()  # no manifest: still being written
    (tmp_path / "models" / "empty").mkdir()  # a model without a complete version
    assert model_names(tmp_path / "models") == ["genet_res50"]
    assert versions(tmp_path / "models", "genet_res50") == [1, 2, 10]
    assert str(latest_version_dir(str(tmp_path / "models"), "genet_res50")).endswith("genet_res50/10")
    with pytest.raises(RepositoryError, match="model 'empty' has no complete version in"):
        latest_version_dir(tmp_path / "models", "empty")
    with pytest.raises(RepositoryError, match="is not a directory"):
        model_names(tmp_path / "missing")


def test_only_canonical_version_names_are_versions(version_copy, tmp_path):
    shutil.copytree(str(version_copy), str(tmp_path / "genet_res50" / "03"))
    assert versions(str(tmp_path), "genet_res50") == [2]
