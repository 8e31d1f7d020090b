"""End-to-end export through `python -m export`: version directory, manifest, versions, errors."""
import json
import shutil
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from export.verify import BATCH_SIZES, TOLERANCE, TOP1_AGREEMENT, bf16_unverifiable, openvino_capabilities
from modelrepo.checksums import sha256_of
from tests.export.conftest import write_config
from training.presets import EvalPreset

MANIFEST_KEYS = {"schema_version", "name", "version", "created_utc", "model", "labels_file", "labels_sha256",
                 "input", "output", "preprocessing", "files", "skipped", "source_checkpoint",
                 "runtime_versions", "verification"}
CORE_FILES = {"mindir": "model.mindir", "onnx": "model.onnx", "mslite": "model.ms"}
NATIVE_BF16 = bf16_unverifiable(openvino_capabilities()) is None


def test_last_line_is_the_first_version_directory(exported):
    assert exported["dir"] == exported["repository"] / "tiny" / "1"
    assert exported["dir"].is_dir()


def test_every_format_available_here_is_written(exported):
    names = {p.name for p in exported["dir"].iterdir()}
    assert set(CORE_FILES.values()) | {"manifest.json", "manifest.sha256", "labels.txt"} <= names
    files = exported["manifest"]["files"]
    assert set(CORE_FILES) <= set(files)
    for fmt, reason in exported["manifest"]["skipped"].items():
        assert fmt in ("air", "om") and reason and fmt not in files
    if shutil.which("atc") is None:
        assert "atc" in exported["manifest"]["skipped"]["om"]


def test_manifest_describes_the_model_and_its_files(exported, tiny_model, export_seed):
    manifest, version_dir = exported["manifest"], exported["dir"]
    assert set(manifest) == MANIFEST_KEYS
    assert (manifest["schema_version"], manifest["name"], manifest["version"]) == (1, "tiny", 1)
    assert {k: manifest["model"][k] for k in tiny_model} == tiny_model
    assert (manifest["model"]["extra"], manifest["model"]["mlp"]) == (True, False)
    size = tiny_model["image_size"]
    assert manifest["input"] == {"name": "x", "dtype": "float32", "shape": [-1, 3, size, size],
                                 "layout": "NCHW"}
    assert manifest["output"]["shape"] == [-1, tiny_model["num_classes"]]
    assert manifest["preprocessing"] == EvalPreset(image_size=size).to_manifest()
    for fmt, entry in manifest["files"].items():
        assert entry["sha256"] == sha256_of(version_dir / entry["path"]), fmt
        assert entry["batch"] == "dynamic" and entry["input_layout"] == "NCHW", fmt
    assert manifest["source_checkpoint"] == {"path": None, "sha256": "random-init", "seed": export_seed}
    assert manifest["runtime_versions"]["mindspore_lite"] == "2.0.0"
    labels = (version_dir / manifest["labels_file"]).read_text().splitlines()
    assert manifest["labels_sha256"] == sha256_of(version_dir / manifest["labels_file"])
    checksum = (version_dir / "manifest.sha256").read_text()
    assert checksum == f"{sha256_of(version_dir / 'manifest.json')}  manifest.json\n"
    assert labels == [f"class_{i}" for i in range(tiny_model["num_classes"])]


def test_manifest_records_passed_verification(exported):
    verification = exported["manifest"]["verification"]
    assert verification["batch_sizes"] == list(BATCH_SIZES)
    assert (verification["tolerance"], verification["tolerance_kind"]) == (TOLERANCE, "relative")
    scale = verification["reference_max_abs_logit"]
    assert set(verification["results"]) == set(CORE_FILES) | {"openvino", "openvino-bf16"}
    assert {key: verification["results"]["openvino"][key] for key in ("file", "precision")} == {
        "file": "onnx", "precision": "f32"}
    for fmt, result in verification["results"].items():
        if fmt == "openvino-bf16":
            continue  # judged by top-1 agreement alone (below)
        assert result["passed"] and result["top1_equal"], fmt
        assert 0 <= result["max_rel_diff"] <= TOLERANCE, fmt
        assert result["max_abs_diff"] == pytest.approx(result["max_rel_diff"] * scale), fmt
        assert set(result["batches"]) == {f"batch{size}" for size in BATCH_SIZES}, fmt


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16")
def test_manifest_records_bf16_verified_by_top1_agreement_with_its_differences(exported):
    result = exported["manifest"]["verification"]["results"]["openvino-bf16"]
    assert {key: result[key] for key in ("file", "precision", "criterion")} == {
        "file": "onnx", "precision": "bf16", "criterion": TOP1_AGREEMENT}
    assert result["passed"] and result["top1_equal"]
    assert set(result["batches"]) == {f"batch{size}" for size in BATCH_SIZES}
    assert all(batch["top1_equal"] for batch in result["batches"].values())
    # Computed in bf16 for real: differences far beyond f32's, recorded though not judged.
    assert result["max_rel_diff"] > TOLERANCE
    assert result["max_abs_diff"] == pytest.approx(
        result["max_rel_diff"] * exported["manifest"]["verification"]["reference_max_abs_logit"])


@pytest.mark.skipif(NATIVE_BF16, reason="this CPU has native bf16")
def test_manifest_records_bf16_as_skipped_with_the_reason_without_native_bf16(exported):
    result = exported["manifest"]["verification"]["results"]["openvino-bf16"]
    assert "passed" not in result and result["skipped"].startswith("this CPU has no native bf16")


def test_checkpoint_export_is_version_2_and_leaves_version_1_untouched(exported, tiny_run_dir,
                                                                       export_cli):
    version_1 = exported["dir"]
    before = {p.name: p.read_bytes() for p in version_1.iterdir()}
    ckpt = tiny_run_dir / "final.ckpt"
    result = export_cli("--ckpt", ckpt, "--repository", exported["repository"], "--name", "tiny",
                        "--formats", "mindir")
    assert result.returncode == 0, result.stderr[-3000:]
    version_2 = Path(result.stdout.strip().splitlines()[-1])
    assert version_2 == version_1.parent / "2"
    assert {p.name for p in version_2.iterdir()} == {"model.mindir", "manifest.json", "manifest.sha256",
                                                       "labels.txt"}
    assert {p.name: p.read_bytes() for p in version_1.iterdir()} == before
    manifest = json.loads((version_2 / "manifest.json").read_text())
    assert manifest["version"] == 2
    assert manifest["source_checkpoint"] == {"path": str(ckpt), "sha256": sha256_of(ckpt)}
    assert (version_2 / "labels.txt").read_text() == (tiny_run_dir / "labels.txt").read_text()
    assert manifest["verification"]["results"]["mindir"]["max_abs_diff"] == 0.0


def test_failed_export_leaves_no_version_behind(tmp_path, tiny_config, export_cli):
    empty = tmp_path / "no_images"
    empty.mkdir()
    result = export_cli("--random-init", "--config", tiny_config, "--repository",
                            tmp_path / "models", "--name", "tiny", "--formats", "mindir",
                            "--verify-images", empty)
    assert result.returncode == 1
    assert "no images" in result.stderr
    assert list((tmp_path / "models" / "tiny").iterdir()) == []


def test_corrupt_checkpoint_fails_with_one_clear_line(tmp_path, tiny_config, export_cli):
    bad = tmp_path / "final.ckpt"
    bad.write_bytes(b"this is not a checkpoint\n" * 20)
    result = export_cli("--ckpt", bad, "--config", tiny_config, "--repository",
                            tmp_path / "models")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("export failed:") and "not a readable MindSpore checkpoint" in last
    assert not (tmp_path / "models").exists()


@pytest.mark.skipif(shutil.which("atc") is not None, reason="CANN atc is installed here")
def test_om_requested_without_atc_fails_clearly(tmp_path, tiny_config, export_cli):
    result = export_cli("--random-init", "--config", tiny_config, "--repository",
                            tmp_path / "models", "--formats", "mindir,om")
    assert result.returncode == 1
    assert "format om was requested but cannot be produced here: CANN atc not found" \
        in result.stderr
    assert not (tmp_path / "models").exists()


def test_checkpoint_whose_logits_overflow_is_refused_naming_the_layer(tmp_path, tiny_model,
                                                                      tiny_network, export_cli):
    """Finite but huge weights (as after diverged training) overflow float32 inside the network."""
    params = {name: param.asnumpy() for name, param in tiny_network.parameters_dict().items()}
    conv = next(name for name, value in params.items()
                if name.startswith("layer2.") and value.ndim == 4)
    params[conv] = np.full_like(params[conv], 3e38)
    ckpt = tmp_path / "final.ckpt"
    ms.save_checkpoint([{"name": name, "data": ms.Tensor(value)} for name, value in params.items()],
                       str(ckpt))
    (tmp_path / "labels.txt").write_text("".join(f"c{i}\n" for i in range(tiny_model["num_classes"])))
    write_config(tmp_path / "config.yaml")
    result = export_cli("--ckpt", ckpt, "--repository", tmp_path / "models", "--name", "tiny")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("export failed: the network computes NaN or inf on the "
                           f"verification images (first in layer {conv.rsplit('.', 1)[0]}; "), last
    assert "weights are broken, e.g. by diverged training" in last
    assert "diff" not in last
    assert list((tmp_path / "models" / "tiny").iterdir()) == []


def test_calibrate_bn_on_a_folder_is_recorded_in_the_manifest(tmp_path, tiny_config, export_cli):
    from PIL import Image
    from skimage import data

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("coffee", "rocket"):
        Image.fromarray(getattr(data, name)()).save(photos / f"{name}.jpg")
    result = export_cli("--random-init", f"--calibrate-bn={photos}", "--config", tiny_config,
                        "--repository", tmp_path / "models", "--formats", "mindir")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((Path(result.stdout.strip().splitlines()[-1]) / "manifest.json").read_text())
    assert manifest["source_checkpoint"]["bn_calibration"] == (
        f"2 images from {photos} (coffee.jpg, rocket.jpg) through EvalPreset(image_size=32)")
