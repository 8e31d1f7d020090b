"""Preprocessing parity: the tensor the server feeds the model equals training's eval pipeline.

Checked in both server environments: in this process (Python 3.11, the MindSpore backend's
environment) and in .venv-lite (Python 3.7, Pillow 9.5: the Lite server's environment).
"""
import io
import json
import os
import subprocess
from typing import Dict

import cv2
import numpy as np
import pytest
from mindspore.dataset import vision
from mindspore.dataset.vision import Inter
from PIL import Image

from clients.benchmark.servers import REPO_ROOT
from modelrepo.manifest import Preprocessing, read_manifest
from runtime_env import lite_python
from serving.decoding import decode_rgb
from serving.preprocessing import Preprocessor
from training.presets import EvalPreset

ONE_LEVEL = 1 / 57.12  # one 8-bit step after normalisation by the smallest std: 0.0175
MAX_PIXELS = 40_000_000
LITE_SCRIPT = f"""
import sys, numpy as np
from modelrepo.manifest import read_manifest
from serving.preprocessing import Preprocessor
from serving.decoding import decode_rgb
manifest = read_manifest(sys.argv[1])
preprocess = Preprocessor(manifest.preprocessing, {MAX_PIXELS})
images = np.load(sys.argv[2])
out = {{}}
for name in images.files:
    data = images[name].tobytes()
    out["tensor/" + name] = preprocess(data)
    out["decoded/" + name] = decode_rgb(data, {MAX_PIXELS})
np.savez(sys.argv[3], **out)
"""


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def mode_images(photos) -> Dict[str, bytes]:
    """One file per pixel format whose conversion to RGB must follow MindSpore's Decode."""
    rgb = Image.open(io.BytesIO(next(iter(photos.values())))).convert("RGB").resize((90, 60))
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 90, dtype=np.uint8), (60, 1))))
    bgr16 = np.asarray(rgb)[..., ::-1].astype(np.uint16) * 257 + 3
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90": MindSpore's Decode ignores it
    images = {
        "grey.jpg": _save(rgb.convert("L"), "JPEG"), "cmyk.jpg": _save(rgb.convert("CMYK"), "JPEG"),
        "progressive.jpg": _save(rgb, "JPEG", progressive=True), "exif_rotated.jpg": _save(rgb, "JPEG", exif=exif),
        "trailer.jpg": _save(rgb, "JPEG") + b"camera trailer after the end-of-image marker",
        "grey.png": _save(rgb.convert("L"), "PNG"), "bilevel.png": _save(rgb.convert("1"), "PNG"),
        "palette.png": _save(rgb.convert("P"), "PNG"), "palette_alpha.png": _save(rgb.convert("P"), "PNG",
                                                                               transparency=0),
        "grey_alpha.png": _save(rgba.convert("LA"), "PNG"), "rgba.png": _save(rgba, "PNG"),
        "grey16.png": _save(Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257), "PNG"),
        "rgb16.png": cv2.imencode(".png", bgr16)[1].tobytes(),
        "rgba16.png": cv2.imencode(".png", np.dstack([bgr16, np.full(bgr16.shape[:2], 40000, np.uint16)]))[1].tobytes(),
        "rgba.tif": _save(rgba, "TIFF"), "rgb.bmp": _save(rgb, "BMP"), "rgb.ppm": _save(rgb, "PPM"),
    }
    return images


@pytest.fixture(scope="module")
def preset(version_dir):
    """Training's EvalPreset for the exported model, checked against its manifest."""
    manifest = json.loads((version_dir / "manifest.json").read_text())
    preset = EvalPreset(image_size=manifest["model"]["image_size"])
    assert preset.to_manifest() == manifest["preprocessing"]
    return preset


@pytest.fixture(scope="module")
def lite_env_outputs(version_dir, photos, fmnist_images, mode_images, tmp_path_factory):
    """What the Lite server's interpreter computes for every test image: tensors and decoded RGB."""
    scratch = tmp_path_factory.mktemp("lite_preprocessing")
    images = {**photos, **fmnist_images, **mode_images}
    np.savez(scratch / "in.npz", **{name: np.frombuffer(data, np.uint8) for name, data in images.items()})
    completed = subprocess.run([lite_python(), "-c", LITE_SCRIPT, str(version_dir), str(scratch / "in.npz"),
                                str(scratch / "out.npz")], cwd=str(REPO_ROOT), capture_output=True, text=True,
                               timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert completed.returncode == 0, completed.stderr[-2000:]
    return np.load(scratch / "out.npz")


@pytest.mark.parametrize("image_set", ["photos", "fmnist_images", "mode_images"])
def test_server_tensors_equal_the_training_eval_pipeline(request, image_set, preset, version_dir,
                                                         lite_env_outputs):
    preprocess = Preprocessor(read_manifest(str(version_dir)).preprocessing, MAX_PIXELS)
    for name, data in request.getfixturevalue(image_set).items():
        expected = preset(data)
        here, lite = preprocess(data), lite_env_outputs[f"tensor/{name}"]
        assert here.shape == lite.shape == expected.shape == (3, preset.crop_size, preset.crop_size)
        assert here.dtype == lite.dtype == np.float32
        assert np.abs(here - expected).max() <= ONE_LEVEL, name
        assert np.abs(lite - expected).max() <= ONE_LEVEL, name


def test_at_the_reference_size_the_server_tensors_equal_the_training_eval_pipeline(photos):
    """The same check at 224 px (resize 256, 30 x the demo's pixels), the reference network's input."""
    preset = EvalPreset(image_size=224)
    preprocess = Preprocessor(Preprocessing(**preset.to_manifest()), MAX_PIXELS)
    for name, data in photos.items():
        expected, here = preset(data), preprocess(data)
        assert here.shape == expected.shape == (3, 224, 224) and here.dtype == np.float32
        assert np.abs(here - expected).max() <= ONE_LEVEL, name


def test_every_pixel_format_decodes_exactly_like_mindspore_decode(mode_images, photos, lite_env_outputs):
    """Whole grey and colour JPEGs (the photographs at full size too) take OpenCV's decoder, the others
    Pillow's (serving.decoding): each gives MindSpore's pixels."""
    decode = vision.Decode()  # safe here: these files are well-formed
    for name, data in {**mode_images, **photos}.items():
        expected = decode(np.frombuffer(data, np.uint8))
        np.testing.assert_array_equal(decode_rgb(data, MAX_PIXELS), expected, err_msg=name)
        np.testing.assert_array_equal(lite_env_outputs[f"decoded/{name}"], expected, err_msg=name)


@pytest.mark.parametrize("height, width", [(1, 1), (1, 300), (300, 1), (33, 37), (37, 33), (451, 300), (97, 640)])
def test_resize_and_crop_equal_mindspore_on_any_shape(preset, version_dir, height, width):
    rgb = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), np.uint8)
    expected = rgb
    for op in (vision.Resize(preset.resize_size, Inter.LINEAR), vision.CenterCrop(preset.crop_size),
               vision.Normalize(mean=list(preset.mean), std=list(preset.std)), vision.HWC2CHW()):
        expected = op(expected)
    actual = Preprocessor(read_manifest(str(version_dir)).preprocessing, MAX_PIXELS).transform(rgb)
    assert np.abs(actual - expected).max() <= ONE_LEVEL


def test_small_images_are_preprocessed_alike_and_larger_ones_refused_before_decoding(version_dir, fmnist_images):
    """Preprocessor.small (the data plane's inline path for a lone small image) gives the same tensor,
    and None for an image over its pixel budget or one that resizes to a large strip."""
    preprocess = Preprocessor(read_manifest(str(version_dir)).preprocessing, MAX_PIXELS)
    for name, data in fmnist_images.items():
        np.testing.assert_array_equal(preprocess.small(data, 64 * 64), preprocess(data), err_msg=name)
    large = _save(Image.new("RGB", (100, 100)), "PNG")
    strip = _save(Image.new("RGB", (4000, 1)), "PNG")  # 4,000 pixels that resize to 37 x 148,000
    assert preprocess.small(large, 64 * 64) is None and preprocess.small(strip, 64 * 64) is None
    assert preprocess(large).shape == preprocess(strip).shape == (3, 32, 32)
