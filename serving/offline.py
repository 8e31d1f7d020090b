"""Offline baseline: the served model with serving's own preprocessing and backend, in-process, no gRPC.

    python -m serving.offline --model-dir models/genet_res50/1 --backend mslite --batch-sizes 1,16 IMAGE...
    python -m serving.offline --model-dir ... --backend openvino --precision f32 IMAGE...
    python -m serving.offline --model-dir ... --runtime onnxruntime IMAGE...

Runs in the backend's environment (.venv-lite for mslite, Python 3.7; .venv otherwise) and prints one
JSON line:
{"model_file", "sha256", "runtime_version", "precision", "results": [{"batch_size", "throughput_ips",
"latency_ms", "preprocess_ms", "infer_ms", "cpu_ms_per_image", "iterations", "pause_ms", "threads"}]}.
Each iteration preprocesses batch_size images (decode, resize, crop, normalise) and runs them as
one batch, sequentially in one thread: what one inference call costs end to end without a server
around it. cpu_ms_per_image counts every thread of the process, the runtime's included.
--pause-ms N sleeps N ms before each iteration (outside its timing), as a server's runtime idles between
lone requests: back to back, a runtime's threads and the caches stay hot, which no request at low load sees.
--precision (auto, f32, bf16) is the server's option of the same name: bf16 is refused where the CPU
has no native bf16, never emulated; "precision" in the JSON says what was computed in.
--runtime onnxruntime|openvino measures that runtime on the version's model.onnx instead of the
served backend (serving/onnx_runtimes.py, in .venv), with the same preprocessing and loop.
The benchmark (clients/benchmark/baseline.py) starts it as a subprocess and reads that line.
"""
import argparse
import json
import logging
import sys
import time
from typing import List, Optional, Sequence

import numpy as np

from latency import latency_summary
from modelrepo.manifest import read_manifest
from serving.backends import Backend, BackendError, create_backend
from serving.manifest import served_file
from serving.onnx_runtimes import RUNTIMES, create_runtime
from serving.preprocessing import Preprocessor
from serving.settings import BACKENDS, PRECISIONS, Settings

LOG = logging.getLogger("serving.offline")
MIN_ITERATIONS = 3


def measure_batch_size(backend, preprocess: Preprocessor, images: List[bytes], batch_size: int,
                       seconds: float, pause_s: float = 0.0) -> dict:
    """Throughput and latency of preprocess + infer at one batch size, for about `seconds`, idle for
    `pause_s` before each iteration (not counted in its latency or throughput).

    backend: anything with predict(batch) -> logits (a serving Backend or an onnx_runtimes.py model).
    """
    backend.predict(np.stack([preprocess(images[0])] * batch_size))  # resize and warm this batch size
    preprocess_s, infer_s = [], []
    start = time.monotonic()
    cpu = time.process_time()  # every thread of this process, the runtime's included
    offset = 0
    while len(infer_s) < MIN_ITERATIONS or time.monotonic() - start < seconds:
        time.sleep(pause_s)
        began = time.perf_counter()
        batch = np.stack([preprocess(images[(offset + i) % len(images)]) for i in range(batch_size)])
        preprocessed = time.perf_counter()
        backend.predict(batch)
        preprocess_s.append(preprocessed - began)
        infer_s.append(time.perf_counter() - preprocessed)
        offset += batch_size
    cpu = time.process_time() - cpu
    total = [p + i for p, i in zip(preprocess_s, infer_s)]
    return {
        "batch_size": batch_size,
        "throughput_ips": round(batch_size * len(total) / sum(total), 3),
        "latency_ms": latency_summary([t * 1000.0 for t in total]),
        "preprocess_ms": round(1000.0 * sum(preprocess_s) / len(total), 3),
        "infer_ms": round(1000.0 * sum(infer_s) / len(total), 3),
        "cpu_ms_per_image": round(1000.0 * cpu / (batch_size * len(total)), 3),
        "iterations": len(total),
        "pause_ms": round(1000.0 * pause_s, 3),
    }


def run(model_dir: str, backend_name: str, batch_sizes: Sequence[int], image_paths: Sequence[str],
        seconds: float, threads: int, device: str, device_id: int, runtime: str = "backend",
        precision: str = "auto", pause_s: float = 0.0) -> dict:
    """Loads the model like the server does (or the ONNX file in `runtime`) and measures every batch size."""
    manifest = read_manifest(model_dir)
    preprocess = Preprocessor(manifest.preprocessing, Settings().max_image_pixels)
    if runtime == "backend":
        model_file = served_file(manifest, backend_name)
        model = create_backend(backend_name, model_file, device=device, device_id=device_id, threads=threads,
                               precision=precision)
    else:  # the ONNX file, as the OpenVINO backend serves it: with the precisions export verified it in
        model_file = served_file(manifest, "openvino")
        model = create_runtime(runtime, model_file, threads, precision)
    images = []
    for image_path in image_paths:
        with open(image_path, "rb") as handle:
            images.append(handle.read())
    try:
        results = []
        for size in batch_sizes:
            results.append(dict(measure_batch_size(model, preprocess, images, size, seconds, pause_s), threads=threads))
            LOG.info("offline %s batch %d: %.1f img/s", model.runtime_version, size, results[-1]["throughput_ips"])
    finally:
        if isinstance(model, Backend):
            model.close()
    return {"model_file": model_file.path, "sha256": model_file.sha256, "runtime_version": model.runtime_version,
            "precision": model.precision, "results": results}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line options."""
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="python -m serving.offline", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--model-dir", required=True, help="a model version directory (with manifest.json)")
    parser.add_argument("--backend", default=defaults.backend, choices=BACKENDS)
    parser.add_argument("--batch-sizes", default="1", help="comma-separated, e.g. 1,16")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per batch size")
    parser.add_argument("--pause-ms", type=float, default=0.0,
                        help="idle time before each iteration, as between a server's lone requests (default 0)")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="runtime threads (as the server)")
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--device-id", type=int, default=defaults.device_id)
    parser.add_argument("--runtime", default="backend", choices=("backend",) + RUNTIMES,
                        help="backend: the served --backend; else that runtime on the version's model.onnx")
    parser.add_argument("--precision", default=defaults.precision, choices=PRECISIONS,
                        help="what the runtime computes in, as the server's --precision (bf16: openvino only)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the baseline and prints its JSON line."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sizes = [int(size) for size in args.batch_sizes.split(",") if size]
    try:
        report = run(args.model_dir, args.backend, sizes, args.images, args.seconds, args.threads, args.device,
                     args.device_id, args.runtime, args.precision, args.pause_ms / 1000.0)
    except (OSError, ValueError, BackendError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
