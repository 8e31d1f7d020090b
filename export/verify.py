"""Verification: every exported model, run in its own runtime, must reproduce the network's logits."""
import logging

import mindspore as ms
import numpy as np
import onnxruntime

from export.errors import ExportError
from export.lite import predict_with_lite
from export.writers import INPUT_NAME

log = logging.getLogger(__name__)

TOLERANCE = 1e-4


def reference_logits(network, batches):
    """The checkpoint network's logits in MindSpore for each batch."""
    return {key: network(ms.Tensor(batch)).asnumpy() for key, batch in batches.items()}


def run_mindir(path, batches):
    """Logits of the MINDIR loaded with mindspore.load + nn.GraphCell."""
    cell = ms.nn.GraphCell(ms.load(str(path)))
    return {key: cell(ms.Tensor(batch)).asnumpy() for key, batch in batches.items()}


def run_onnx(path, batches):
    """Logits of the ONNX model in ONNX Runtime (CPU)."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {key: session.run(None, {INPUT_NAME: batch})[0] for key, batch in batches.items()}


def run_mslite(path, batches):
    """Logits of the Lite model in MindSpore Lite (a .venv-lite subprocess)."""
    outputs, _ = predict_with_lite(path, batches)
    return outputs


RUNNERS = {"mindir": run_mindir, "onnx": run_onnx, "mslite": run_mslite}


def compare(reference, outputs, tolerance=TOLERANCE):
    """Max |logit difference| and top-1 agreement over all batches."""
    max_diff, top1_equal = 0.0, True
    for key, expected in reference.items():
        got = outputs[key]
        if got.shape != expected.shape:
            return {"max_abs_diff": None, "top1_equal": False, "passed": False,
                    "error": f"{key}: output shape {list(got.shape)}, expected {list(expected.shape)}"}
        max_diff = max(max_diff, float(np.max(np.abs(got - expected))))
        top1_equal &= bool(np.array_equal(got.argmax(axis=1), expected.argmax(axis=1)))
    return {"max_abs_diff": max_diff, "top1_equal": top1_equal,
            "passed": top1_equal and max_diff <= tolerance}


def verify_files(network, files, batches, tolerance=TOLERANCE):
    """Run each {format: path} in its runtime and compare; ExportError naming every failure."""
    reference = reference_logits(network, batches)
    results = {}
    for fmt, path in files.items():
        results[fmt] = compare(reference, RUNNERS[fmt](path, batches), tolerance)
        log.info("verified %s: %s", fmt, results[fmt])
    failed = {fmt: result for fmt, result in results.items() if not result["passed"]}
    if failed:
        details = "; ".join(f"{fmt}: max abs diff {r['max_abs_diff']}, top-1 equal "
                            f"{r['top1_equal']}{', ' + r['error'] if 'error' in r else ''}"
                            for fmt, r in failed.items())
        raise ExportError(f"verification failed (tolerance {tolerance}): {details}")
    return results
