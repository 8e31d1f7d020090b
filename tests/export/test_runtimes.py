"""The exported files, loaded in their own runtimes, reproduce the network at every verified size."""
import dataclasses
import os
import subprocess

import numpy as np
import onnx
import pytest

from export.errors import ExportError
from export.lite import lite_python
from export.network import random_network
from export.samples import preprocessed_images, verification_batches
from export.verify import (BATCH_SIZES, RUNNERS, SERVER_MAX_BATCH_SIZE, TOLERANCE, TOP1_AGREEMENT,
                           bf16_unverifiable, compare, describe_failure, openvino_capabilities,
                           reference_logits, verify_files, verify_served)
from serving.backends import batch_sizes
from serving.settings import Settings
from tests.export.conftest import REPO_ROOT
from training.config import load_config

# One Lite Model resized through these sizes computes wrong logits at some of them (Lite 2.0).
RESIZE_SEQUENCE = (1, 2, 1, 6, 4, 3, 2, 5, 6, 1)
NATIVE_BF16 = bf16_unverifiable(openvino_capabilities()) is None


@pytest.fixture(scope="module")
def photo_batches(tiny_model):
    """Real photographs through the eval preset, at every verified batch size."""
    batches, _ = verification_batches(tiny_model["image_size"], BATCH_SIZES)
    return batches


@pytest.fixture(scope="module")
def expected_logits(tiny_network, photo_batches):
    """The logits of the network rebuilt in this process from the export's seed."""
    return reference_logits(tiny_network, photo_batches)


@pytest.mark.parametrize("fmt", ["mindir", "onnx", "mslite"])
def test_file_reproduces_network_logits_at_every_verified_size(fmt, exported, photo_batches,
                                                              expected_logits):
    path = exported["dir"] / exported["manifest"]["files"][fmt]["path"]
    result = compare(expected_logits, RUNNERS[fmt](path, photo_batches))
    assert result["passed"], result
    assert result["max_rel_diff"] <= TOLERANCE and result["top1_equal"]


def test_verified_sizes_cover_the_servers_default_ladder_and_an_odd_size():
    defaults = {field.name: field.default for field in dataclasses.fields(Settings)}
    assert defaults["max_batch_size"] == SERVER_MAX_BATCH_SIZE
    assert set(batch_sizes(SERVER_MAX_BATCH_SIZE)) <= set(BATCH_SIZES)
    assert any(size % 2 == 1 and size > 1 for size in BATCH_SIZES)


def test_photos_give_distinct_logits(expected_logits):
    logits = expected_logits["batch8"]
    assert len({row.tobytes() for row in logits[:7]}) == 7


def test_onnx_is_normalised_for_the_lite_converter(exported):
    model = onnx.load(str(exported["dir"] / "model.onnx"))
    for node in model.graph.node:
        names = {attr.name for attr in node.attribute}
        assert "auto_pad" not in names, node.name
        if node.op_type == "Conv":
            assert {"strides", "dilations", "kernel_shape", "pads"} <= names, node.name
        if node.op_type == "MaxPool":
            assert "dilations" not in names, node.name
    for value in list(model.graph.input) + list(model.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch", value.name


def test_verification_fails_with_the_numbers_for_other_weights(exported, tiny_config,
                                                               export_seed, photo_batches):
    other = random_network(load_config(tiny_config).model, export_seed + 1)
    with pytest.raises(ExportError, match=r"verification failed \(the largest logit is [\d.]+; "
                                          r"accepted: differences up to 0.002 of it and the same "
                                          r"top-1 class\): mindir: logits differ by up to [\d.]+ "
                                          r"\([\d.]+ of the largest logit\) at batch1, batch2"):
        verify_files(reference_logits(other, photo_batches),
                     {"mindir": exported["dir"] / "model.mindir"}, photo_batches)


def test_verification_catches_the_lite_resize_bug(exported, tiny_model, tiny_network, tmp_path):
    """One Model resized from size to size (the old check) fails; one Model per size passes."""
    images, _ = preprocessed_images(tiny_model["image_size"])
    batches = {f"step{step}_batch{size}": np.resize(images, (size,) + images.shape[1:])
               for step, size in enumerate(RESIZE_SEQUENCE)}
    reference = reference_logits(tiny_network, batches)
    model, inputs, outputs = exported["dir"] / "model.ms", tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(inputs, **batches)
    subprocess.run([str(lite_python()), "-m", "tests.export.lite_one_model", str(model),
                    str(inputs), str(outputs)], cwd=REPO_ROOT, check=True, capture_output=True,
                   env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    with np.load(outputs) as saved:
        resized = compare(reference, {key: saved[key] for key in saved.files})
    assert not resized["passed"]
    assert resized["max_rel_diff"] > 10 * TOLERANCE
    per_size = compare(reference, RUNNERS["mslite"](model, batches))
    assert per_size["passed"], per_size


def test_compare_reports_nan_outputs_without_a_difference(expected_logits):
    broken = {key: logits.copy() for key, logits in expected_logits.items()}
    broken["batch4"][1, 3] = np.nan
    result = compare(expected_logits, broken)
    assert result == {"max_abs_diff": None, "max_rel_diff": None, "top1_equal": False,
                      "passed": False, "error": "batch4: 1 of 40 logits are NaN or inf"}


def test_compare_is_relative_to_the_logit_scale(expected_logits):
    scaled = {key: 1000 * logits for key, logits in expected_logits.items()}
    nudged = {key: logits * (1 + TOLERANCE / 2) for key, logits in scaled.items()}
    result = compare(scaled, nudged)
    assert result["passed"] and result["max_abs_diff"] > TOLERANCE


def test_bf16_is_skipped_with_the_reason_on_a_cpu_without_native_bf16(exported, photo_batches, expected_logits):
    result = verify_served(expected_logits, exported["dir"] / "model.onnx", photo_batches, "bf16", ["FP32", "INT8"])
    assert result == {"criterion": TOP1_AGREEMENT, "skipped": "this CPU has no native bf16 (OpenVINO CPU "
                                                              "capabilities: FP32, INT8; it needs AVX512-BF16 or AMX)"}
    assert bf16_unverifiable(["FP32", "BF16", "INT8"]) is None


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16")
def test_a_bf16_top1_disagreement_is_recorded_and_named_but_does_not_fail_the_export(exported, tiny_model,
                                                                                     tiny_network):
    # Random inputs give some images two nearly equal logits: bf16 changes a few of their top-1 classes.
    side = tiny_model["image_size"]
    batches = {"noise256": np.random.RandomState(0).normal(0, 1, (256, 3, side, side)).astype(np.float32)}
    results = verify_files(reference_logits(tiny_network, batches), {"onnx": exported["dir"] / "model.onnx"},
                           batches)
    assert results["onnx"]["passed"] and results["openvino"]["passed"]
    bf16 = results["openvino-bf16"]
    assert (bf16["passed"], bf16["top1_equal"], bf16["criterion"]) == (False, False, TOP1_AGREEMENT)
    assert describe_failure(bf16, TOLERANCE).startswith(
        "the top-1 class differs at noise256 (judged by top-1 agreement alone; logits differ by up to")
