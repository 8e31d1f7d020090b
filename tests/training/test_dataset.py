"""Tests for training.dataset on real images: eval parity, every image scored, sharding, errors."""
import collections
import hashlib
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import mindspore.dataset as ds

from training.dataset import DatasetError, create_dataset, find_classes, image_problem
from training.prepare_data import FMNIST_CLASSES, build_fmnist, build_photos
from training.presets import EvalPreset


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory) -> Path:
    """Fashion-MNIST with 3 train and 2 val images per class."""
    out = tmp_path_factory.mktemp("data") / "fmnist"
    build_fmnist(out, train_per_class=3, val_per_class=2)
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """The packaged photographs as built by prepare_data."""
    out = tmp_path_factory.mktemp("photos")
    build_photos(out)
    return out


@pytest.fixture(scope="module")
def mixed_root(tmp_path_factory, fmnist, photos) -> Path:
    """Eval root: the 20 Fashion-MNIST val images plus a `photo` class (9 JPEGs and 1 PNG)."""
    root = tmp_path_factory.mktemp("mixed") / "root"
    shutil.copytree(fmnist / "val", root)
    (root / "photo").mkdir()
    for path in photos.glob("*.jpg"):
        shutil.copy(path, root / "photo")
    grey = cv2.imread(str(photos / "chelsea.jpg"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(root / "photo" / "chelsea_grey.png"), grey)
    return root


def _files(root: Path) -> list:
    """(label, path) of every image in the order ImageFolderDataset reads them."""
    classes = find_classes(root).items()
    return [(label, root / name / file_name)
            for label, (name, files) in enumerate(classes) for file_name in files]


def _numpy_eval(data: bytes, preprocessing: dict) -> np.ndarray:
    """manifest.json's `preprocessing` done with OpenCV and numpy, as serving does it."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    height, width = image.shape[:2]
    size, crop = preprocessing["resize_size"], preprocessing["crop_size"]
    if height <= width:
        new_height, new_width = size, int(width * size / height)
    else:
        new_height, new_width = int(height * size / width), size
    image = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_LINEAR)
    top, left = (new_height - crop) // 2, (new_width - crop) // 2
    image = image[top:top + crop, left:left + crop]
    mean = np.array(preprocessing["mean"], np.float32)
    std = np.array(preprocessing["std"], np.float32)
    return ((image.astype(np.float32) - mean) / std).transpose(2, 0, 1)


def _collect(dataset) -> tuple:
    """All images and labels of a batched dataset, and the batch sizes."""
    images, labels, sizes = [], [], []
    for image, label in dataset.create_tuple_iterator(output_numpy=True):
        images.extend(image)
        labels.extend(label.tolist())
        sizes.append(len(label))
    return images, labels, sizes


@pytest.mark.parametrize("image_size", [224, 48])
def test_eval_pipeline_equals_eager_ops_and_numpy(mixed_root, image_size):
    preset = EvalPreset(image_size=image_size)
    dataset, classes = create_dataset(mixed_root, train=False, batch_size=7, image_size=image_size)
    images, labels, _ = _collect(dataset)
    files = _files(mixed_root)
    assert labels == [label for label, _ in files]
    for image, (_, path) in zip(images, files):
        eager = np.frombuffer(path.read_bytes(), np.uint8)
        for op in preset.ops():
            eager = op(eager)
        np.testing.assert_array_equal(image, eager, err_msg=str(path))
        np.testing.assert_array_equal(image, _numpy_eval(path.read_bytes(), preset.to_manifest()),
                                      err_msg=str(path))
    assert classes == sorted(FMNIST_CLASSES + ("photo",))


def test_eval_scores_every_image(mixed_root):
    dataset, _ = create_dataset(mixed_root, train=False, batch_size=7, image_size=32)
    images, labels, sizes = _collect(dataset)
    assert len(images) == len(_files(mixed_root)) == 30
    assert sizes == [7, 7, 7, 7, 2]
    assert images[0].shape == (3, 32, 32) and images[0].dtype == np.float32
    assert collections.Counter(labels)[sorted(FMNIST_CLASSES + ("photo",)).index("photo")] == 10


def test_eval_images_scores_an_even_spread_of_each_shard(mixed_root):
    files = _files(mixed_root)
    dataset, _ = create_dataset(mixed_root, train=False, batch_size=4, image_size=16, eval_images=11)
    _, labels, sizes = _collect(dataset)
    assert sizes == [4, 4, 3]
    # 11 of 30 in file order: the 10 photos get 4, and 7 of the 10 two-image classes one each.
    assert labels == [files[i * 30 // 11][0] for i in range(11)]
    assert collections.Counter(labels).most_common(1)[0][1] == 4 and len(set(labels)) == 8
    shards = [_collect(create_dataset(mixed_root, train=False, batch_size=4, image_size=16, eval_images=11,
                                      rank_id=rank, rank_size=2)[0])[1] for rank in (0, 1)]
    assert sorted(shards[0] + shards[1]) == sorted(labels)
    whole, _ = create_dataset(mixed_root, train=False, batch_size=4, image_size=16, eval_images=30)
    assert len(_collect(whole)[1]) == 30


def test_train_batches_drop_the_remainder(fmnist):
    dataset, classes = create_dataset(fmnist / "train", train=True, batch_size=4, image_size=32)
    images, labels, sizes = _collect(dataset)
    assert classes == sorted(FMNIST_CLASSES)
    assert sizes == [4] * 7
    assert images[0].shape == (3, 32, 32) and images[0].dtype == np.float32
    assert all(0 <= label < 10 for label in labels)
    _, first_labels = next(dataset.create_tuple_iterator(output_numpy=True))
    assert first_labels.dtype == np.int32


def test_images_per_epoch_draws_a_new_subset_each_epoch(fmnist):
    ds.config.set_seed(0)
    dataset, _ = create_dataset(fmnist / "train", train=True, batch_size=4, image_size=32,
                                images_per_epoch=12)
    assert dataset.get_dataset_size() == 3
    iterator = dataset.create_tuple_iterator(output_numpy=True, num_epochs=2)
    epochs = [np.sort(np.concatenate([labels for _, labels in iterator])) for _ in range(2)]
    assert [len(labels) for labels in epochs] == [12, 12]
    # 12 of 30 images (3 per class): the class histograms of two draws differ (seeded, so stable).
    assert not np.array_equal(epochs[0], epochs[1])


def test_eval_shards_are_disjoint_and_complete(tmp_path, fmnist, photos):
    root = tmp_path / "odd"
    shutil.copytree(fmnist / "val", root)
    (root / "photo").mkdir()
    for name in ("dog.jpg", "eagle.jpg", "giraffe.jpg"):
        shutil.copy(photos / name, root / "photo")

    def keys(rank_id, rank_size):
        dataset, _ = create_dataset(root, train=False, batch_size=4, image_size=16,
                                    rank_id=rank_id, rank_size=rank_size)
        images, labels, _ = _collect(dataset)
        return collections.Counter((label, hashlib.sha256(image.tobytes()).hexdigest())
                                   for image, label in zip(images, labels))

    everything = keys(0, 1)
    shards = [keys(0, 2), keys(1, 2)]
    assert sum(everything.values()) == 23
    assert sorted(sum(shard.values()) for shard in shards) == [11, 12]
    assert not set(shards[0]) & set(shards[1])
    assert shards[0] + shards[1] == everything


def test_train_shards_have_equal_length(fmnist):
    """Data-parallel ranks must run the same number of steps."""
    sizes = [create_dataset(fmnist / "train", train=True, batch_size=4, image_size=16,
                            rank_id=rank, rank_size=2)[0].get_dataset_size() for rank in (0, 1)]
    assert sizes == [3, 3]  # 15 images per rank, remainder dropped


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path / "absent")):
        create_dataset(tmp_path / "absent", train=False, batch_size=2, image_size=16)


def test_root_without_class_folders(tmp_path, photos):
    shutil.copy(photos / "dog.jpg", tmp_path)
    with pytest.raises(DatasetError, match="no class folders"):
        create_dataset(tmp_path, train=True, batch_size=2, image_size=16)


def test_empty_class_folder_is_named(tmp_path, photos):
    (tmp_path / "dog").mkdir()
    shutil.copy(photos / "dog.jpg", tmp_path / "dog")
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match=str(tmp_path / "cat")) as error:
        create_dataset(tmp_path, train=False, batch_size=2, image_size=16)
    assert isinstance(error.value, ValueError)
    assert str(tmp_path / "dog") not in str(error.value)


def test_jpeg_cut_before_its_scan_data_is_rejected_not_decoded(tmp_path, photos):
    """Such a file makes MindSpore's Decode kill the process with SIGFPE; it must never reach it."""
    data = (photos / "eagle.jpg").read_bytes()
    (tmp_path / "bird").mkdir()
    (tmp_path / "bird" / "good.jpg").write_bytes(data)
    (tmp_path / "bird" / "cut.jpg").write_bytes(data[:data.find(b"\xff\xda")])
    (tmp_path / "bird" / "text.jpg").write_text("hello")
    with pytest.raises(DatasetError, match="2 unusable") as error:
        create_dataset(tmp_path, train=True, batch_size=1, image_size=16)
    assert str(tmp_path / "bird" / "cut.jpg") in str(error.value)
    assert str(tmp_path / "bird" / "text.jpg") in str(error.value)


def test_image_problem_accepts_real_files_and_rejects_cut_headers(tmp_path, photos, mixed_root):
    for _, path in _files(mixed_root):
        assert image_problem(path) is None, path
    data = (photos / "dog.jpg").read_bytes()  # its headers are longer than the first read
    scan = data.find(b"\xff\xda")
    scan_data = scan + 2 + int.from_bytes(data[scan + 2:scan + 4], "big")
    assert scan > 4096
    for length in (2, 100, 4096, scan, scan + 4, scan_data - 1):
        path = tmp_path / "cut.jpg"
        path.write_bytes(data[:length])
        assert image_problem(path) is not None, length
    path.write_bytes(data[:scan_data + 10])
    assert image_problem(path) is None


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"rank_id": 2, "rank_size": 2},
                                    {"rank_id": -1, "rank_size": 2}])
def test_invalid_arguments(fmnist, kwargs):
    arguments = {"train": False, "batch_size": 2, "image_size": 16, **kwargs}
    with pytest.raises(ValueError):
        create_dataset(fmnist / "val", **arguments)
