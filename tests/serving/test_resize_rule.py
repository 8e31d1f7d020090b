"""Serving's resize rule is MindSpore's: every image shape up to 600 x 600, at every config's resize size.

The output shape of Resize(size) depends only on (shorter side, longer side, size), so MindSpore's
own Resize runs once per unordered pair on an all-zero (shorter, longer) uint8 image; serving's
`resized_size` is checked against it in both orientations, here and in .venv-lite. Where the old
double-precision rule int(longer * size / shorter) disagreed, whole tensors are compared as well.
MindSpore's side costs about 90 CPU-seconds, nearly all of it OpenCV filling the large outputs of thin
images at 256 (1 x 600 becomes 256 x 153,600); it runs on every core.
"""
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Tuple

import cv2
import numpy as np
import pytest
from mindspore.dataset import vision
from mindspore.dataset.vision import Inter

from clients.benchmark.servers import REPO_ROOT
from modelrepo.manifest import Preprocessing
from runtime_env import lite_python
from serving.preprocessing import Preprocessor, resized_size
from training.config import load_config
from training.presets import EvalPreset

SIDE = 600
LITE_SCRIPT = """
import sys, numpy as np
from modelrepo.manifest import Preprocessing
from serving.preprocessing import Preprocessor, resized_size
inputs, out = np.load(sys.argv[1]), {}
for size in inputs["sizes"]:
    out[f"rule/{size}"] = np.array([[resized_size(h, w, int(size)) for w in range(1, {side} + 1)]
                                   for h in range(1, {side} + 1)])
for name in inputs.files:
    if name.startswith("image/"):
        _, resize, crop, _ = name.split("/")
        spec = Preprocessing(int(resize), int(crop), tuple(inputs["mean"]), tuple(inputs["std"]))
        out["tensor/" + name] = Preprocessor(spec, 10 ** 8)(inputs[name].tobytes())
np.savez(sys.argv[2], **out)
""".replace("{side}", str(SIDE))


def _presets() -> Dict[int, EvalPreset]:
    """The eval preset of every config in training/configs and of the reference 224 crop, by resize size."""
    image_sizes = {load_config(path).model.image_size for path in (REPO_ROOT / "training" / "configs").glob("*.yaml")}
    return {preset.resize_size: preset for preset in (EvalPreset(image_size=size) for size in image_sizes | {224})}


PRESETS = _presets()


def _mindspore_shapes(size: int) -> np.ndarray:
    """shapes[h - 1, w - 1] = the (height, width) MindSpore's Resize(size) gives an h x w image, h <= w."""
    def row(height: int) -> List[Tuple[int, int]]:
        resize = vision.Resize(size, Inter.LINEAR)
        return [resize(np.zeros((height, width), np.uint8)).shape for width in range(height, SIDE + 1)]
    shapes = np.zeros((SIDE, SIDE, 2), np.int64)
    with ThreadPoolExecutor(os.cpu_count()) as pool:  # the op releases the GIL
        for height, widths in enumerate(pool.map(row, range(1, SIDE + 1)), start=1):
            shapes[height - 1, height - 1:] = widths
    return shapes


@pytest.fixture(scope="module")
def mindspore_shapes() -> Dict[int, np.ndarray]:
    """MindSpore's output shape for every h <= w <= 600 at every resize size."""
    return {size: _mindspore_shapes(size) for size in PRESETS}


@pytest.fixture(scope="module")
def old_rule_mismatches(mindspore_shapes) -> Dict[int, List[Tuple[int, int]]]:
    """Per resize size, the shapes (both orientations) where int(longer * size / shorter) was wrong."""
    found = {}
    for size, shapes in mindspore_shapes.items():
        pairs = [(h, w) for h in range(1, SIDE + 1) for w in range(h, SIDE + 1)
                 if int(w * size / h) != shapes[h - 1, w - 1, 1]]
        found[size] = pairs + [(w, h) for h, w in pairs]
    return found


@pytest.fixture(scope="module")
def mismatch_images(old_rule_mismatches) -> Dict[str, bytes]:
    """A random-content PNG of every mismatching shape, named image/<resize>/<crop>/<h>x<w>."""
    rng = np.random.default_rng(0)
    return {f"image/{size}/{PRESETS[size].crop_size}/{h}x{w}":
            cv2.imencode(".png", rng.integers(0, 256, (h, w, 3), np.uint8))[1].tobytes()
            for size, shapes in old_rule_mismatches.items() for h, w in shapes}


@pytest.fixture(scope="module")
def lite_outputs(mismatch_images, tmp_path_factory):
    """The rule's shapes for every h, w and the tensors of the mismatch images, computed in .venv-lite."""
    scratch = tmp_path_factory.mktemp("resize_rule")
    preset = next(iter(PRESETS.values()))
    np.savez(scratch / "in.npz", sizes=np.array(sorted(PRESETS)), mean=np.array(preset.mean), std=np.array(preset.std),
             **{name: np.frombuffer(data, np.uint8) for name, data in mismatch_images.items()})
    completed = subprocess.run([lite_python(), "-c", LITE_SCRIPT, str(scratch / "in.npz"), str(scratch / "out.npz")],
                               cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=300,
                               env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert completed.returncode == 0, completed.stderr[-2000:]
    return np.load(scratch / "out.npz")


def _serving_shapes(size: int) -> np.ndarray:
    """shapes[h - 1, w - 1] = serving's resized_size(h, w, size) for every h, w <= 600."""
    return np.array([[resized_size(h, w, size) for w in range(1, SIDE + 1)] for h in range(1, SIDE + 1)])


def _assert_equal_to_mindspore(rule: np.ndarray, mindspore: np.ndarray) -> None:
    """Every pair h <= w against MindSpore's (h, w) shape, and (w, h) against its transpose."""
    upper = np.triu(np.ones((SIDE, SIDE), bool))
    np.testing.assert_array_equal(rule[upper], mindspore[upper])
    np.testing.assert_array_equal(rule.transpose(1, 0, 2)[upper], mindspore[upper][:, ::-1])


@pytest.mark.parametrize("size", sorted(PRESETS))
def test_the_rule_gives_mindspore_resize_shape_for_every_image_up_to_600(size, mindspore_shapes, lite_outputs):
    _assert_equal_to_mindspore(_serving_shapes(size), mindspore_shapes[size])
    _assert_equal_to_mindspore(lite_outputs[f"rule/{size}"], mindspore_shapes[size])


@pytest.mark.parametrize("height, width, size, expected", [(23, 28, 46, (46, 55)), (28, 23, 46, (55, 46)),
                                                           (23, 55, 46, (46, 109)), (5, 21, 55, (55, 230))])
def test_float32_rounding_cases(height, width, size, expected):
    assert vision.Resize(size, Inter.LINEAR)(np.zeros((height, width), np.uint8)).shape == expected
    assert resized_size(height, width, size) == expected
    assert int(max(height, width) * size / min(height, width)) == max(expected) + 1  # the old rule


def test_the_old_rule_was_wrong_on_some_shapes(old_rule_mismatches):
    """Guards the next test: it must have shapes to run on."""
    assert sum(len(shapes) for shapes in old_rule_mismatches.values()) > 0


def test_tensors_equal_the_eval_preset_where_the_old_rule_was_wrong(mismatch_images, lite_outputs):
    for name, data in mismatch_images.items():
        _, resize, _, _ = name.split("/")
        preset = PRESETS[int(resize)]
        spec = Preprocessing(preset.resize_size, preset.crop_size, preset.mean, preset.std)
        expected = preset(data)
        np.testing.assert_array_equal(Preprocessor(spec, 10 ** 8)(data), expected, err_msg=name)
        np.testing.assert_array_equal(lite_outputs[f"tensor/{name}"], expected, err_msg=name)
