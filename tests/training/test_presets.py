"""Tests for training.presets: values, op order and manifest of the train and eval transforms."""
import cv2
import numpy as np
import pytest
from mindspore.dataset import vision

from training.presets import IMAGENET_MEAN, IMAGENET_STD, EvalPreset, TrainPreset


def _jpeg(height: int, width: int) -> bytes:
    """A deterministic colour JPEG with structure in both directions."""
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([rows * 255 // height, cols * 255 // width, (rows * cols) % 256], axis=-1)
    return cv2.imencode(".jpg", image.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


@pytest.mark.parametrize("image_size, resize_size", [(224, 256), (48, 55), (64, 73), (32, 37)])
def test_eval_resize_keeps_the_reference_ratio(image_size, resize_size):
    preset = EvalPreset(image_size=image_size)
    assert (preset.resize_size, preset.crop_size) == (resize_size, image_size)


def test_manifest_matches_the_documented_schema():
    """docs/architecture.md's example manifest is for image_size 48."""
    assert EvalPreset(image_size=48).to_manifest() == {
        "color_space": "RGB", "resize_size": 55, "crop_size": 48, "interpolation": "bilinear",
        "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}


def test_eval_ops_follow_the_reference_order():
    ops = EvalPreset().ops()
    assert [type(op) for op in ops] == [vision.Decode, vision.Resize, vision.CenterCrop,
                                        vision.Normalize, vision.HWC2CHW]


def test_train_ops_follow_the_reference_order():
    ops = TrainPreset().ops()
    assert [type(op) for op in ops] == [vision.RandomCropDecodeResize, vision.RandomHorizontalFlip,
                                        vision.Normalize, vision.HWC2CHW]


def test_eval_call_resizes_crops_and_normalises():
    image = EvalPreset(image_size=32)(_jpeg(40, 60))
    assert image.shape == (3, 32, 32) and image.dtype == np.float32
    lowest = min((0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    highest = max((255 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    assert lowest <= image.min() and image.max() <= highest


def test_train_flip_mirrors_the_full_image_crop():
    """Scale 1 and ratio 1 on a square image crop the whole image: only the flip differs."""
    data = _jpeg(50, 50)
    kept = TrainPreset(image_size=32, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip_prob=0.0)(data)
    flipped = TrainPreset(image_size=32, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip_prob=1.0)(data)
    assert kept.shape == (3, 32, 32) and kept.dtype == np.float32
    np.testing.assert_array_equal(flipped, kept[:, :, ::-1])
    assert not np.array_equal(flipped, kept)


def test_train_default_output_shape():
    image = TrainPreset(image_size=24)(_jpeg(40, 30))
    assert image.shape == (3, 24, 24) and image.dtype == np.float32


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "224"])
def test_invalid_image_size_is_rejected(bad):
    with pytest.raises(ValueError, match="image_size"):
        EvalPreset(image_size=bad)
    with pytest.raises(ValueError, match="image_size"):
        TrainPreset(image_size=bad)


def test_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        EvalPreset(224)
