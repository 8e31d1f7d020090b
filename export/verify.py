"""Verification: every exported model, run in its own runtime, must reproduce the network's logits.

A file passes when, over every verification batch, max |logit difference| / max |reference logit|
is at most the tolerance and every image keeps its top-1 class. The tolerance is relative so that
it means the same at any logit scale (float32 runtimes differ by ~3e-4 of the logits after 50
layers, whether the logits are 5 or 500). OpenVINO in bf16 (8 bits of mantissa: logits off by percents)
passes by top-1 agreement alone, its differences recorded but not judged, and only on a CPU with native
bf16; a bf16 result that is skipped or fails does not stop the export, it keeps the server from serving
that version in bf16 (serving.backends.openvino_backend).
"""
import logging

import mindspore as ms
import numpy as np
import onnxruntime
import openvino

from export.errors import ExportError
from export.lite import predict_with_lite
from export.network import nonfinite_watch
from export.writers import INPUT_NAME
from runtime_env import onednn_uncapped

log = logging.getLogger(__name__)

TOLERANCE = 2e-3
"""Default relative tolerance: max |logit difference| / max |reference logit|. Measured float32
agreement of ONNX Runtime and Lite with MindSpore: up to 6.1e-4 at 224 px with initial BN
statistics, up to 2e-4 with calibrated ones or at demo size (README, Export)."""
SERVER_MAX_BATCH_SIZE = 8
"""The server's default --max-batch-size (serving/settings.py); its ladder is verified."""
BATCH_SIZES = (1, 2, 3, 4, 8)
"""Verified batch sizes: the server's ladder for SERVER_MAX_BATCH_SIZE (1, 2, 4, 8) and an odd size."""


def reference_logits(network, batches):
    """The network's logits in MindSpore for each batch.

    ExportError when the network computes NaN or inf on the verification images: such weights
    are broken (diverged training) and their logits mean nothing. Every layer is watched on the
    largest batch, which holds every image (watching costs time; the other batches repeat them).
    """
    largest = max(batches, key=lambda key: len(batches[key]))
    with nonfinite_watch(network) as broken_layers:
        logits = {largest: network(ms.Tensor(batches[largest])).asnumpy()}
    logits.update({key: network(ms.Tensor(batch)).asnumpy()
                   for key, batch in batches.items() if key != largest})
    nonfinite = sum(_count_nonfinite(batch_logits) for batch_logits in logits.values())
    if broken_layers or nonfinite:
        where = f"first in layer {broken_layers[0]}" if broken_layers else "in its output"
        total = sum(batch_logits.size for batch_logits in logits.values())
        raise ExportError(f"the network computes NaN or inf on the verification images ({where}; "
                          f"{nonfinite} of {total} logits are NaN or inf): its weights are "
                          f"broken, e.g. by diverged training; nothing was exported")
    return {key: logits[key] for key in batches}


def run_mindir(path, batches):
    """Logits of the MINDIR loaded with mindspore.load + nn.GraphCell."""
    cell = ms.nn.GraphCell(ms.load(str(path)))
    return {key: cell(ms.Tensor(batch)).asnumpy() for key, batch in batches.items()}


def run_onnx(path, batches):
    """Logits of the ONNX model in ONNX Runtime (CPU)."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {key: session.run(None, {INPUT_NAME: batch})[0] for key, batch in batches.items()}


def run_mslite(path, batches):
    """Logits of the Lite model in MindSpore Lite (a .venv-lite subprocess, one Model per batch)."""
    outputs, _ = predict_with_lite(path, batches)
    return outputs


def run_openvino(path, batches, precision="f32"):
    """Logits of the ONNX model in OpenVINO's CPU plugin at `precision` (f32, bf16), as
    `--backend openvino --precision` serves it."""
    with onednn_uncapped():
        core = openvino.Core()
        compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": precision})
    return {key: compiled(batch)[0] for key, batch in batches.items()}


RUNNERS = {"mindir": run_mindir, "onnx": run_onnx, "mslite": run_mslite}
SERVED_FROM = {"openvino": ("onnx", "f32"), "openvino-bf16": ("onnx", "bf16")}
"""Runtimes that serve another format's file (the server's --backend openvino serves model.onnx): each is
verified on that file at the precision it computes in, as a result of its own ({"file": "onnx",
"precision": "f32", ...}): f32 under the tolerance, bf16 by top-1 agreement where the CPU computes bf16
natively (elsewhere the result says why it was skipped)."""
TOP1_AGREEMENT = "top-1 agreement"
"""The criterion of a bf16 result: every image keeps the network's top-1 class; differences are not judged."""


def openvino_capabilities():
    """OpenVINO's optimisation capabilities of this CPU (e.g. FP32, BF16, INT8)."""
    with onednn_uncapped():
        return list(openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def bf16_unverifiable(capabilities):
    """Why OpenVINO bf16 cannot be verified on a CPU with these `capabilities`, or None where it computes
    bf16 natively (never emulated: an emulated bf16 is not what a server on such a CPU runs)."""
    if "BF16" in capabilities:
        return None
    return (f"this CPU has no native bf16 (OpenVINO CPU capabilities: {', '.join(capabilities)}; "
            "it needs AVX512-BF16 or AMX)")


def verify_served(reference, path, batches, precision, capabilities, tolerance=TOLERANCE):
    """The result of OpenVINO on `path` at `precision` on a CPU with these OpenVINO `capabilities`:
    compare() under `tolerance` for f32; for bf16 compare() by top-1 agreement alone, or
    {"skipped": why} where the CPU has no native bf16."""
    if precision == "f32":
        return compare(reference, run_openvino(path, batches), tolerance)
    skipped = bf16_unverifiable(capabilities)
    if skipped:
        return {"criterion": TOP1_AGREEMENT, "skipped": skipped}
    return dict(compare(reference, run_openvino(path, batches, precision), tolerance=None),
                criterion=TOP1_AGREEMENT)


def compare(reference, outputs, tolerance=TOLERANCE):
    """Absolute and relative max |logit difference| and top-1 agreement, overall and per batch; passed
    when every image keeps its top-1 class and, unless `tolerance` is None, the relative difference is
    within it.

    Outputs of the wrong shape or with NaN/inf fail with an `error` and no numbers: values that
    were not compared are never reported as a difference.
    """
    scale = logit_scale(reference)
    batches = {}
    for key, expected in reference.items():
        got = outputs.get(key)
        error = _unusable(key, got, expected)
        if error:
            return {"max_abs_diff": None, "max_rel_diff": None, "top1_equal": False,
                    "passed": False, "error": error}
        diff = float(np.max(np.abs(got - expected)))
        batches[key] = {"max_abs_diff": diff, "max_rel_diff": _relative(diff, scale),
                        "top1_equal": bool(np.array_equal(got.argmax(axis=1),
                                                          expected.argmax(axis=1)))}
    max_diff = max(b["max_abs_diff"] for b in batches.values())
    top1_equal = all(b["top1_equal"] for b in batches.values())
    max_rel = _relative(max_diff, scale)
    return {"max_abs_diff": max_diff, "max_rel_diff": max_rel, "top1_equal": top1_equal,
            "passed": top1_equal and (tolerance is None or max_rel <= tolerance), "batches": batches}


def verify_files(reference, files, batches, tolerance=TOLERANCE):
    """Run each {format: path} in its runtime against `reference` logits; ExportError on failure."""
    results = {}
    for fmt, path in files.items():
        results[fmt] = compare(reference, RUNNERS[fmt](path, batches), tolerance)
        _log_result(fmt, results[fmt])
    capabilities = openvino_capabilities()
    for runtime, (fmt, precision) in SERVED_FROM.items():
        if fmt in files:
            results[runtime] = dict(verify_served(reference, files[fmt], batches, precision, capabilities,
                                                  tolerance), file=fmt, precision=precision)
            _log_result(f"{runtime} on {fmt}", results[runtime])
    failed = {fmt: result for fmt, result in results.items() if _fails_export(result)}
    if failed:
        scale = logit_scale(reference)
        details = "; ".join(f"{fmt}: {describe_failure(r, tolerance)}" for fmt, r in failed.items())
        raise ExportError(f"verification failed (the largest logit is {scale:.4g}; accepted: "
                          f"differences up to {tolerance:g} of it and the same top-1 class): {details}")
    return results


def logit_scale(reference):
    """The largest |logit| over all reference batches: what the relative tolerance refers to."""
    return max(float(np.max(np.abs(logits))) for logits in reference.values())


def describe_failure(result, tolerance):
    """One sentence on why a compare() result failed; a top-1 agreement result (bf16) is judged by its
    top-1 classes alone, its differences only reported."""
    if "error" in result:
        return result["error"]
    differences = (f"logits differ by up to {result['max_abs_diff']:.4g} "
                   f"({result['max_rel_diff']:.3g} of the largest logit)")
    top1_wrong = [key for key, b in result["batches"].items() if not b["top1_equal"]]
    if result.get("criterion") == TOP1_AGREEMENT:
        return (f"the top-1 class differs at {', '.join(top1_wrong)} (judged by {TOP1_AGREEMENT} alone; "
                f"{differences})")
    problems = []
    too_far = [key for key, b in result["batches"].items() if b["max_rel_diff"] > tolerance]
    if too_far:
        problems.append(f"{differences} at {', '.join(too_far)}")
    if top1_wrong:
        problems.append(f"the top-1 class differs at {', '.join(top1_wrong)}")
    return " and ".join(problems)


def _unusable(key, got, expected):
    """Why `got` cannot be compared with `expected`, or None."""
    if got is None:
        return f"{key}: no output"
    if got.shape != expected.shape:
        return f"{key}: output shape {list(got.shape)}, expected {list(expected.shape)}"
    if not np.all(np.isfinite(got)):
        return f"{key}: {_count_nonfinite(got)} of {got.size} logits are NaN or inf"
    return None


def _relative(diff, scale):
    return diff / max(scale, float(np.finfo(np.float32).tiny))


def _count_nonfinite(array):
    return int(np.size(array) - np.count_nonzero(np.isfinite(array)))


def _fails_export(result):
    """Whether a result stops the export: a failed file or f32 runtime does; a bf16 result, skipped or failed,
    only keeps the version from being served in bf16 (the f32 files it was computed from are verified)."""
    return "skipped" not in result and not result["passed"] and result.get("criterion") != TOP1_AGREEMENT


def _log_result(name, result):
    """Log one verification result: a skipped or failed bf16 one as a warning, else its numbers."""
    if "skipped" in result:
        log.warning("%s not verified: %s", name, result["skipped"])
    elif not result["passed"] and result.get("criterion") == TOP1_AGREEMENT:
        log.warning("%s failed: %s; the server will not serve this version in bf16", name,
                    describe_failure(result, None))
    else:
        log.info("verified %s: %s", name, _summary(result))


def _summary(result):
    return {key: value for key, value in result.items() if key != "batches"}
