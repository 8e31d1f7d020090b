"""The benchmark's runtime comparison: ONNX Runtime and OpenVINO on the exported model.onnx, measured
like the offline baseline and reported beside it, with the CPU they ran on."""
import csv
import json

import numpy as np
import pytest

from clients.benchmark.cli import main
from clients.benchmark.runtimes import RUNTIMES, cpu_description, native_bf16
from modelrepo.manifest import read_manifest
from serving.backends import BackendError
from serving.onnx_runtimes import RUNTIMES as OFFLINE_RUNTIMES, create_runtime
from serving.preprocessing import Preprocessor


@pytest.fixture(scope="module")
def version_dir(model_repository):
    (manifest,) = model_repository.glob("*/*/manifest.json")
    return manifest.parent


def test_the_benchmark_asks_for_the_runtimes_the_offline_baseline_has():
    assert RUNTIMES == OFFLINE_RUNTIMES  # the names `python -m serving.offline --runtime` accepts


def test_openvino_computes_the_logits_of_onnx_runtime_at_several_batch_sizes(version_dir, images):
    manifest = read_manifest(str(version_dir))
    preprocess = Preprocessor(manifest.preprocessing, 40000000)
    batch = np.stack([preprocess(open(path, "rb").read()) for path in images])
    runtimes = [create_runtime(name, manifest.file("onnx"), threads=2, precision="f32") for name in RUNTIMES]
    for size in (1, len(batch), 2):  # OpenVINO reshapes its compiled model for each new size
        logits = [runtime.predict(batch[:size]) for runtime in runtimes]
        assert logits[0].shape == (size, manifest.num_classes)
        scale = np.abs(logits[0]).max()
        assert np.abs(logits[1] - logits[0]).max() <= 1e-4 * scale


def test_bf16_is_refused_with_a_reason_where_the_cpu_lacks_it(version_dir):
    if native_bf16(cpu_description()["flags"]):
        pytest.skip("this CPU computes bf16 natively")
    onnx_file = read_manifest(str(version_dir)).file("onnx")
    with pytest.raises(BackendError, match="no native bf16"):
        create_runtime("openvino", onnx_file, threads=1, precision="bf16")
    with pytest.raises(BackendError, match="f32 only"):
        create_runtime("onnxruntime", onnx_file, threads=1, precision="bf16")


def test_benchmark_reports_the_runtimes_beside_the_offline_baseline(model_repository, images, tmp_path):
    out = tmp_path / "report"
    status = main(["--start-server", "--model-repository", str(model_repository), "--max-batch-size", "4",
                   "--concurrency", "1,4", "--warmup", "0.2", "--duration", "0.5", "--images", *images,
                   "--offline-seconds", "0.2", "--compare-runtimes", ",".join(RUNTIMES), "--out", str(out)])
    assert status == 0
    report = json.loads((out / "benchmark.json").read_text())
    precisions = ["f32", "bf16"] if native_bf16(report["cpu"]["flags"]) else ["f32"]
    expected = [("onnxruntime", "f32", size) for size in (1, 4)] + [
        ("openvino", precision, size) for precision in precisions for size in (1, 4)]
    assert [(row["runtime"], row["precision"], row["batch_size"]) for row in report["runtimes"]] == expected
    for row in report["runtimes"]:
        assert row["throughput_ips"] > 0 and row["iterations"] >= 3
        assert row["runtime_version"].startswith(row["runtime"])
    assert report["cpu"]["model"] and report["cpu"]["usable_cores"] >= 1
    assert [run["efficiency"] > 0 for run in report["runs"]] == [True, True]  # against the served backend only
    with open(out / "benchmark.csv") as handle:
        sources = [row["source"] for row in csv.DictReader(handle)]
    assert sources.count("offline mslite") == 2 and sources.count("offline onnxruntime f32") == 2
