"""The floor under a Python gRPC server's cost per call: a grpc.aio Classify servicer that answers at once.

    python -m clients.benchmark.grpc_floor --image photo.jpg [--concurrency 1,16] [--seconds 3] [--rounds 3]

Starts that servicer in a process of its own (the front's grpcio and asyncio event loop, without a data
plane, batcher or worker; its answer is a fixed top-5), drives it with the benchmark's closed loop, and
prints as JSON, per concurrency level, the medians over the rounds of calls per second and of the CPU
milliseconds per call spent by the servicer's process and by this client. The front's CPU per call (the
benchmark's server column, or clients.benchmark.overhead) minus this floor is what the project's own
code costs per call.
"""
import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import grpc
import psutil

from clients.benchmark.load import run_closed_loop
from clients.benchmark.runner import build_requests
from clients.client import ClassifierClient
from genet.v1 import classifier_pb2, classifier_pb2_grpc

WARMUP_S = 0.5
CALL_TIMEOUT_S = 30.0


class FixedAnswer(classifier_pb2_grpc.ClassifierServicer):
    """Answers every Classify call at once with the same five predictions."""

    async def Classify(self, request, context):
        response = classifier_pb2.ClassifyResponse(model_name="floor", model_version="1")
        response.results.add().predictions.extend(
            classifier_pb2.Prediction(class_id=index, label=f"class_{index}", score=0.2) for index in range(5))
        return response


async def serve() -> None:
    """Serve FixedAnswer on a free loopback port, print the port on stdout, serve until killed."""
    server = grpc.aio.server()
    classifier_pb2_grpc.add_ClassifierServicer_to_server(FixedAnswer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


def measure(image: Path, levels: Sequence[int], seconds: float, rounds: int) -> Dict[str, dict]:
    """Per concurrency level: the medians of calls/s, servicer and client CPU ms per call, and failed calls."""
    requests = build_requests([image], 1)
    samples: Dict[int, List[dict]] = {level: [] for level in levels}
    servicer = subprocess.Popen([sys.executable, "-m", "clients.benchmark.grpc_floor", "--serve"],
                                stdout=subprocess.PIPE, text=True)
    try:
        port = int(servicer.stdout.readline())
        process = psutil.Process(servicer.pid)
        with ClassifierClient(f"127.0.0.1:{port}") as client:
            for _ in range(rounds):
                for level in levels:
                    samples[level].append(_one_level(client, requests, level, seconds, process))
    finally:
        servicer.kill()
        servicer.wait()
    return {f"c={level}": {key: statistics.median(sample[key] for sample in samples[level])
                           for key in samples[level][0]} for level in levels}


def _one_level(client: ClassifierClient, requests, concurrency: int, seconds: float,
               servicer: psutil.Process) -> dict:
    run_closed_loop(client, requests, concurrency, 0.0, WARMUP_S, CALL_TIMEOUT_S)
    servicer_cpu, client_cpu, started = _cpu(servicer), time.process_time(), time.monotonic()
    records = run_closed_loop(client, requests, concurrency, 0.0, seconds, CALL_TIMEOUT_S).records
    wall = time.monotonic() - started
    calls = len(records)
    return {"calls_per_s": round(calls / wall, 1),
            "servicer_cpu_ms_per_call": round(1000.0 * (_cpu(servicer) - servicer_cpu) / calls, 3),
            "client_cpu_ms_per_call": round(1000.0 * (time.process_time() - client_cpu) / calls, 3),
            "failed_calls": sum(record.code != "OK" for record in records)}


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def main(argv=None) -> int:
    """Parse the options; serve (--serve) or measure and print the JSON."""
    parser = argparse.ArgumentParser(prog="python -m clients.benchmark.grpc_floor", description=__doc__.split("\n")[0])
    parser.add_argument("--image", type=Path, help="the image each request carries (its bytes are never decoded)")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated closed-loop levels")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per level and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.serve:
        asyncio.run(serve())
        return 0
    if args.image is None:
        parser.error("--image is required")
    levels = [int(level) for level in args.concurrency.split(",") if level]
    print(json.dumps(measure(args.image, levels, args.seconds, args.rounds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
