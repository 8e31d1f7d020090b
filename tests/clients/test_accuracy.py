"""Accuracy mode: every image counted, folders mapped to the server's class ids."""
import shutil

import pytest

from clients.benchmark.accuracy import class_ids, evenly_spaced, measure_accuracy
from clients.client import ClassifierClient


def test_images_filed_under_their_predicted_label_score_100_percent_and_broken_ones_count(server, images,
                                                                                          tmp_path):
    root = tmp_path / "val"
    with ClassifierClient(server.address) as client:
        labels = list(client.model_info().labels)
        predicted = client.classify(images, top_k=1).predictions
        for index, (image, ranked) in enumerate(zip(images, predicted)):
            folder = root / ranked[0].label
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(image, folder / f"{index}.jpg")
        (folder / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF")
        (folder / "notes.txt").write_text("not an image: not counted")
        accuracy = measure_accuracy(client, root, labels, images_per_request=3, concurrency=2)
    assert accuracy["images"] == len(images) + 1
    assert accuracy["failed"] == 1
    assert accuracy["top1_correct"] == accuracy["top5_correct"] == len(images)
    assert accuracy["top1"] == pytest.approx(len(images) / (len(images) + 1))
    assert accuracy["label_mapping"] == "labels"
    with ClassifierClient(server.address) as client:
        sample = measure_accuracy(client, root, labels, images_per_request=3, concurrency=2, limit=2)
    assert (sample["images"], sample["images_in_data"]) == (2, len(images) + 1)
    assert sample["top1_correct"] + sample["failed"] == 2


def test_evenly_spaced_keeps_order_and_spread():
    assert evenly_spaced(list(range(10)), 4) == [0, 2, 5, 7]
    assert evenly_spaced(list(range(10)), 0) == evenly_spaced(list(range(10)), 10) == list(range(10))


def test_class_ids_by_label_name_then_by_sorted_folder():
    assert class_ids(["dog", "cat"], ["ant", "cat", "dog"]) == ({"cat": 1, "dog": 2}, "labels")
    assert class_ids(["n02", "n01"], ["tench", "goldfish"]) == ({"n01": 0, "n02": 1}, "sorted_folders")
    with pytest.raises(ValueError):
        class_ids(["a", "b", "c"], ["x", "y"])
