"""The model repository: versions never overwrite each other, unwritable roots fail clearly."""
import pytest

from export.errors import ExportError
from export.repository import create_staging, existing_versions, publish


def _stage(repository, content):
    staging = create_staging(repository, "net")
    (staging / "model.bin").write_text(content)
    return staging


def test_versions_count_up_from_1(tmp_path):
    first = publish(_stage(tmp_path, "a"), lambda version: None)
    second = publish(_stage(tmp_path, "b"), lambda version: None)
    assert (first.name, second.name) == ("1", "2")
    assert existing_versions(tmp_path / "net") == [1, 2]
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
    with pytest.raises(ExportError, match="model repository .*models is not writable"):
        create_staging(blocker, "net")
