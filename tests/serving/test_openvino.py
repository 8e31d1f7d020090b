"""The OpenVINO backend: a real worker against ONNX Runtime on the same ONNX file, and its precision."""
import json
import logging
import shutil

import numpy as np
import onnxruntime
import openvino
import pytest

from clients.client import ClassifierClient
from tests.serving.conftest import start_server
from export.verify import TOLERANCE, bf16_unverifiable, openvino_capabilities
from modelrepo.manifest import read_manifest
from serving.backends import BackendError
from serving.backends.openvino_backend import resolve_precision
from serving.manifest import served_file
from serving.preprocessing import Preprocessor
from serving.settings import Settings
from serving.workers.proxy import WorkerBackend
from tests.modelrepo.versions import rewrite_manifest

MAX_BATCH_SIZE = 4
NATIVE_BF16 = bf16_unverifiable(openvino_capabilities()) is None


def start_worker(version_dir, precision: str) -> WorkerBackend:
    """An OpenVINO worker on the tiny model's ONNX file, one thread."""
    return WorkerBackend("openvino", served_file(read_manifest(str(version_dir)), "openvino"), device="cpu",
                         device_id=0, threads=1, precision=precision)


@pytest.fixture
def unverified_bf16_repository(version_dir, tmp_path):
    """A repository holding a copy of the tiny version whose manifest has no bf16 result, like a version exported
    before bf16 was verified."""
    copy = tmp_path / "models" / version_dir.parent.name / version_dir.name
    shutil.copytree(version_dir, copy)
    verification = json.loads((copy / "manifest.json").read_text())["verification"]
    del verification["results"]["openvino-bf16"]
    rewrite_manifest(copy, verification=verification)
    return copy.parents[1]


def test_an_f32_worker_matches_onnx_runtime_at_every_batch_size_within_the_export_tolerance(version_dir):
    side = read_manifest(str(version_dir)).preprocessing.crop_size
    images = np.random.RandomState(0).normal(0, 1, (7, 3, side, side)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: images})[0]
    worker = start_worker(version_dir, "f32")
    try:
        worker.warm_up(images[0], MAX_BATCH_SIZE)
        assert worker.run_sizes == (1, 2, 4) and worker.precision == "f32"
        assert worker.runtime_version == f"openvino {openvino.__version__.split('-')[0]} f32"
        served = np.concatenate([worker.predict(images[start:stop]) for start, stop in ((0, 1), (1, 4), (4, 7))])
    finally:
        worker.close()
    assert served.shape == expected.shape
    assert np.abs(served - expected).max() <= TOLERANCE * np.abs(expected).max()
    assert (served.argmax(axis=1) == expected.argmax(axis=1)).all()


@pytest.mark.skipif(NATIVE_BF16, reason="this CPU has native bf16")
def test_bf16_on_a_cpu_without_native_bf16_is_refused_with_a_clear_message(version_dir):
    with pytest.raises(BackendError, match="no native bf16.*--precision f32 or auto"):
        start_worker(version_dir, "bf16")


def test_auto_is_bf16_only_where_the_cpu_has_it_natively_and_export_verified_it(caplog):
    verified = ("f32", "bf16")
    assert resolve_precision("auto", ["FP32", "INT8"], verified) == "f32"
    assert resolve_precision("auto", ["FP32", "BF16", "INT8"], verified) == "bf16"
    assert resolve_precision("f32", ["FP32", "BF16"], verified) == "f32"
    assert resolve_precision("bf16", ["FP32", "BF16"], verified) == "bf16"
    with pytest.raises(BackendError, match="no native bf16"):
        resolve_precision("bf16", ["FP32"], verified)
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        assert resolve_precision("auto", ["FP32", "BF16"], ("f32",)) == "f32"
    assert "auto serves f32 although this CPU has native bf16: export did not verify" in caplog.text


def test_bf16_is_refused_on_a_version_export_did_not_verify_in_bf16():
    with pytest.raises(BackendError, match=r"--precision bf16: export did not verify this version in bf16: .*"
                                           r"'openvino-bf16' is absent .* skipped .* re-export it on one with "
                                           r"AVX512-BF16 or AMX\) or failed .*; serve --precision f32 or auto"):
        resolve_precision("bf16", ["FP32", "BF16"], ("f32",))


def test_bf16_unverified_computes_in_bf16_where_native_and_says_it_was_not_verified(caplog):
    with caplog.at_level(logging.WARNING):
        assert resolve_precision("bf16-unverified", ["FP32", "BF16"], ("f32",)) == "bf16-unverified"
    assert "computing in bf16 although export did not verify" in caplog.text
    assert resolve_precision("bf16-unverified", ["FP32", "BF16"], ("f32", "bf16")) == "bf16"  # it was verified
    with pytest.raises(BackendError, match="no native bf16"):
        resolve_precision("bf16-unverified", ["FP32"], ("f32",))


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16")
def test_a_version_not_verified_in_bf16_is_served_in_f32_by_auto_and_refused_in_bf16(unverified_bf16_repository,
                                                                                    tmp_path):
    server = start_server("openvino", unverified_bf16_repository, tmp_path, ["--precision", "auto"])
    try:
        with ClassifierClient(server.address) as client:
            info = client.model_info()
        assert info.runtime_version.endswith(" f32")
        assert server.metric("genet_inference_precision", version=info.version, precision="f32") == 1
    finally:
        assert server.stop() == 0, server.log()
    assert "auto serves f32 although this CPU has native bf16: export did not verify" in server.log()
    (version_dir,) = unverified_bf16_repository.glob("*/*/manifest.json")
    with pytest.raises(BackendError, match="--precision bf16: export did not verify this version in bf16"):
        start_worker(version_dir.parent, "bf16")


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16")
def test_a_bf16_worker_really_computes_in_bf16_and_keeps_the_top_1_of_f32(version_dir, photos, fmnist_images):
    manifest = read_manifest(str(version_dir))
    preprocess = Preprocessor(manifest.preprocessing, Settings().max_image_pixels)
    images = np.stack([preprocess(data) for data in [*photos.values(), *fmnist_images.values()]])
    logits = {}
    for precision in ("f32", "bf16"):
        worker = start_worker(version_dir, precision)
        try:
            logits[precision] = worker.predict(images)
        finally:
            worker.close()
    assert not np.array_equal(logits["bf16"], logits["f32"])  # bf16 keeps 8 bits of mantissa
    agreement = (logits["bf16"].argmax(axis=1) == logits["f32"].argmax(axis=1)).mean()
    assert agreement >= 0.9, f"bf16 keeps the f32 top-1 of only {agreement:.0%} of {len(images)} real images"


def test_auto_serves_bf16_exactly_where_the_cpu_has_it_and_says_so(model_repository, tmp_path):
    precision = "bf16" if NATIVE_BF16 else "f32"
    server = start_server("openvino", model_repository, tmp_path, ["--precision", "auto"])
    try:
        with ClassifierClient(server.address) as client:
            info = client.model_info()
        assert info.backend == "openvino" and info.runtime_version.endswith(f" {precision}")
        assert server.metric("genet_inference_precision", version=info.version, precision=precision) == 1
    finally:
        assert server.stop() == 0, server.log()
