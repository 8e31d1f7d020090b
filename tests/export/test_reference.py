"""The reference network (224 px, 1000 classes, random weights with calibrated BatchNorm) exports
and verifies as MINDIR, ONNX and Lite: theta-plus (shared fixture), theta and theta-minus."""
import json

import pytest

from export.verify import BATCH_SIZES, TOLERANCE, TOP1_AGREEMENT
from tests.conftest import MODEL_NAME, export_random

CPU_FORMATS = ("mindir", "onnx", "mslite")


def assert_verified_reference(repository, variant):
    """Version 1 of `repository` is `variant` at 224 px / 1000 classes, verified in every CPU format."""
    manifest = json.loads((repository / MODEL_NAME / "1" / "manifest.json").read_text())
    model = manifest["model"]
    assert (model["variant"], model["image_size"], model["num_classes"]) == (variant, 224, 1000)
    assert set(manifest["files"]) == set(CPU_FORMATS)
    assert "scikit-image photographs" in manifest["source_checkpoint"]["bn_calibration"]
    verification = manifest["verification"]
    assert verification["batch_sizes"] == list(BATCH_SIZES)
    assert verification["tolerance"] == TOLERANCE
    # Calibrated statistics give logits of a few units; initial ones (mean 0, var 1) give ~100.
    assert 0.1 < verification["reference_max_abs_logit"] < 20
    for fmt in CPU_FORMATS:
        result = verification["results"][fmt]
        assert result["passed"] and result["top1_equal"], (fmt, result)
        assert result["max_rel_diff"] <= TOLERANCE, (fmt, result)
    # Published whatever bf16 gives: at random weights it reorders near-tied logits (README, Export).
    bf16 = verification["results"]["openvino-bf16"]
    assert bf16["criterion"] == TOP1_AGREEMENT and ("skipped" in bf16 or bf16["passed"] == bf16["top1_equal"])


def test_reference_theta_plus_is_verified_in_every_cpu_format(reference_repository):
    assert_verified_reference(reference_repository, "theta_plus")


@pytest.mark.slow  # about 2 min each; theta-plus (above) runs in every suite
@pytest.mark.parametrize("variant", ["theta", "theta_minus"])
def test_reference_variant_is_verified_in_every_cpu_format(variant, tmp_path):
    repository = export_random(tmp_path, f"training/configs/{variant}.yaml", "--calibrate-bn",
                               "--formats", ",".join(CPU_FORMATS))
    assert_verified_reference(repository, variant)
