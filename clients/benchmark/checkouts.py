"""Checkouts of this repository side by side under one load: did a change make the server faster?

    python -m clients.benchmark.checkouts --checkout ../before --checkout . \\
        --model-repository models --images data/fmnist/val --rounds 3

Each round starts the server of every checkout in turn (`python -m serving` run from that checkout, with
this interpreter and the same options: the bench's, 2 workers of 1 thread at max batch 16, and yours)
and measures one closed-loop level on it (default: h2load, concurrency 16, one image per request, 2 s of
warm-up, 6 s measured), so that the machine's drift between rounds falls on every checkout alike: on a
shared or virtual machine only ratios within a round mean much. Logs each run as it ends, then prints a
table: every run, per checkout its medians, and img/s over the first checkout's in the same round. Each
checkout needs its generated gRPC stubs (`make protos` there); the Lite worker runs with
$GENET_LITE_PYTHON, else with this checkout's .venv-lite.
"""
import argparse
import dataclasses
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

from clients.benchmark import h2load
from clients.benchmark.accuracy import IMAGE_SUFFIXES
from clients.benchmark.cli import load_images
from clients.benchmark.progress import ProgressLine
from clients.benchmark.report import cell, cpu_ms_per_image, text_table
from clients.benchmark.runner import LoadPlan, run_levels
from clients.benchmark.servers import ServerProcess
from clients.client import ClassifierClient
from runtime_env import LITE_PYTHON_ENV, lite_python

BENCH_SERVER_ARGS = ("--threads", "1", "--instances", "2", "--max-batch-size", "16", "--max-queue-size", "512")
STUBS = ("genet/v1/classifier_pb2_grpc.py", "inference/grpc_predict_v2_pb2_grpc.py")
COLUMNS = (("img/s", 1, lambda run: run["throughput_ips"]), ("p50 ms", 1, lambda run: run["latency_ms"]["p50"]),
           ("busy", 2, lambda run: run["machine_busy"]), ("batch", 2, lambda run: run.get("mean_batch_size")),
           ("flight", 2, lambda run: run.get("mean_batches_in_flight")),
           ("front ms", 2, lambda run: cpu_ms_per_image(run, "server")))
"""The table's columns: name, decimals, and its value in a run of clients.benchmark.runner (front ms: the
front process's CPU ms per image)."""


def missing_stubs(checkout: Path) -> List[str]:
    """The generated gRPC stubs `checkout` lacks (a server cannot start there without them)."""
    return [stub for stub in STUBS if not (checkout / stub).is_file()]


def measure(checkout: Path, server_args: Sequence[str], images: Sequence[Path], plan: LoadPlan,
            load_generator: str, log_path: Path, progress: ProgressLine) -> dict:
    """Start the server of `checkout` and measure the plan's one level on it; that level's run."""
    with ServerProcess(server_args, log_path, checkout=checkout) as server:
        with ClassifierClient(server.address) as client:
            info = client.model_info()
            if load_generator == "h2load":
                plan = dataclasses.replace(plan, h2load_target=h2load.H2loadTarget(server.address, "genet", info.name))
            [run] = run_levels(client, images, plan, str(checkout), info.batching.max_batch_size or None,
                               server.metrics_url, progress)
    return run


def run_values(run: dict) -> List[Optional[float]]:
    """One server run's value in each column."""
    return [pick(run) for _, _, pick in COLUMNS]


def format_table(checkouts: Sequence[Path], runs: Sequence[Sequence[dict]], summary: Sequence[dict]) -> List[str]:
    """A row per server run, then per checkout its medians; the last column is img/s over the first
    checkout's in the same round (in a median row: the median of those)."""
    rows = []
    for index, (checkout, own, result) in enumerate(zip(checkouts, runs, summary)):
        ratios = result["throughput_over_first"]
        for round_index, (run, ratio) in enumerate(zip(own, ratios)):
            rows.append(_row(f"{index + 1} {checkout} ({round_index + 1})", run_values(run), ratio))
        rows.append(_row(f"{index + 1} {checkout} (median)", list(result["medians"].values()), _median(ratios)))
    return text_table(("checkout (round)", *(name for name, _, _ in COLUMNS), "x first"), rows)


def _row(label: str, values: Sequence[Optional[float]], ratio: Optional[float]) -> tuple:
    return (label, *(cell(value, digits) for value, (_, digits, _) in zip(values, COLUMNS)), cell(ratio, 2))


def summarise(runs: Sequence[Sequence[dict]]) -> List[dict]:
    """Per checkout (its runs, one per round, in --checkout order): the median of each column and its
    throughput over the first checkout's, round by round (the pairs measured back to back)."""
    summary = []
    for own in runs:
        columns = zip(*(run_values(run) for run in own))
        medians = {name: _median(values) for (name, _, _), values in zip(COLUMNS, columns)}
        ratios = [round(run["throughput_ips"] / base["throughput_ips"], 3) if base["throughput_ips"] else None
                  for run, base in zip(own, runs[0])]  # None: the first checkout's server answered nothing
        summary.append({"medians": medians, "throughput_over_first": ratios})
    return summary


def _median(values: Sequence[Optional[float]]) -> Optional[float]:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--checkout", type=Path, action="append", required=True,
                        help="a checkout of this repository; give two or more (the first is the reference; "
                             "the same one twice shows the machine's noise)")
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--images", type=Path, nargs="+", required=True,
                        help=f"load images: files or folders (searched for {', '.join(sorted(IMAGE_SUFFIXES))})")
    parser.add_argument("--backend", default="mslite")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--images-per-request", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring (default 2)")
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds (default 6)")
    parser.add_argument("--load-generator", choices=("h2load", "python"), default="h2load")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help=f"server option, repeatable, after the bench's (which it may override): "
                             f"{' '.join(BENCH_SERVER_ARGS)}")
    parser.add_argument("--log-dir", type=Path, default=None, help="server logs (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write every run and the summary here")
    args = parser.parse_args(argv)
    if len(args.checkout) < 2:
        parser.error("give at least two --checkout")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    checkouts = [checkout.resolve() for checkout in args.checkout]
    for checkout in checkouts:
        missing = missing_stubs(checkout)
        if missing:
            print(f"{checkout}: no {', '.join(missing)}: run `make protos` there (or copy genet/ and inference/ from "
                  "here if its protos/ are the same)", file=sys.stderr)
            return 2
    if args.load_generator == "h2load" and shutil.which("h2load") is None:
        print(f"h2load is not on PATH: {h2load.INSTALL_HINT} (or --load-generator python)", file=sys.stderr)
        return 2
    os.environ.setdefault(LITE_PYTHON_ENV, lite_python())  # the checkouts' servers share this checkout's Lite
    server_args = ["--model-repository", str(args.model_repository.resolve()), "--backend", args.backend,
                   *BENCH_SERVER_ARGS, *args.server_arg]
    plan = LoadPlan(concurrency=[args.concurrency], rates=[], images_per_request=[args.images_per_request],
                    warmup_s=args.warmup, duration_s=args.duration, timeout_s=30.0)
    images = load_images(argparse.Namespace(images=args.images, data=None))
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="genet-checkouts-"))
    progress = ProgressLine()
    runs: List[List[dict]] = [[] for _ in checkouts]
    for round_index in range(args.rounds):
        for index, checkout in enumerate(checkouts):
            log_path = log_dir / f"server-{index + 1}-round-{round_index + 1}.log"
            runs[index].append(measure(checkout, server_args, images, plan, args.load_generator, log_path, progress))
    summary = summarise(runs)
    print("\n".join(format_table(checkouts, runs, summary)))
    if args.json:
        args.json.write_text(json.dumps({"checkouts": [str(checkout) for checkout in checkouts],
                                         "server_args": server_args, "load": dataclasses.asdict(plan),
                                         "load_generator": args.load_generator, "runs": runs,
                                         "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
