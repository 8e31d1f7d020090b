"""The server's own cost per single-image call: CPU of the server's processes minus the offline baseline's.

    python -m clients.benchmark.overhead --model-repository models --image photo.jpg [--rounds 3]

Starts a server (front and its workers, `--threads 1`, max batch 16), sends single-image Classify
calls one at a time, and reads the CPU time of the front and of its worker processes (psutil) over
`--calls` calls; the offline baseline (serving.offline: the same preprocessing and backend
in-process, batch 1, 1 thread) gives the CPU an image costs without serving. The difference is
what gRPC, the data plane, the batcher, the worker pipe and the metrics cost per call. Rounds
alternate server and offline measurements; the medians are printed as JSON.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import List

import psutil

from clients.benchmark.baseline import run_offline
from clients.benchmark.servers import ServerProcess
from clients.client import ClassifierClient

SERVER_ARGS = ("--threads", "1", "--max-batch-size", "16", "--instances", "1")


def server_cpu_ms(server: ServerProcess, image: Path, calls: int) -> dict:
    """CPU ms per call of the front and of its workers over `calls` sequential single-image calls."""
    front = psutil.Process(server.process.pid)
    with ClassifierClient(server.address) as client:
        for _ in range(50):  # warm the connection and the caches
            client.classify([image])
        workers = front.children()
        before = [_cpu(front)] + [_cpu(worker) for worker in workers]
        started = time.monotonic()
        for _ in range(calls):
            client.classify([image])
        wall = time.monotonic() - started
        after = [_cpu(front)] + [_cpu(worker) for worker in workers]
    spent = [1000.0 * (a - b) / calls for a, b in zip(after, before)]
    return {"front_ms": spent[0], "workers_ms": sum(spent[1:]), "total_ms": sum(spent),
            "latency_ms": 1000.0 * wall / calls}


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def measure(repository: Path, image: Path, backend: str, calls: int, rounds: int) -> dict:
    """Alternating server and offline rounds; the medians and every round."""
    server_rounds: List[dict] = []
    offline_rounds: List[float] = []
    args = ["--model-repository", str(repository), "--backend", backend, "--port", "0", *SERVER_ARGS]
    for round_index in range(rounds):
        with ServerProcess(args, Path("/tmp") / f"overhead-server-{round_index}.log") as server:
            server_rounds.append(server_cpu_ms(server, image, calls))
            with ClassifierClient(server.address) as client:
                info = client.model_info()
        model_dir = repository / info.name / info.version
        (offline,) = run_offline(model_dir, backend, [1], [image], 5.0, threads=1)
        offline_rounds.append(offline["cpu_ms_per_image"])
    total = statistics.median(r["total_ms"] for r in server_rounds)
    offline_ms = statistics.median(offline_rounds)
    return {"server_cpu_ms_per_call": total, "front_cpu_ms_per_call": statistics.median(
                r["front_ms"] for r in server_rounds),
            "offline_cpu_ms_per_image": offline_ms, "overhead_ms_per_call": total - offline_ms,
            "rounds": {"server": server_rounds, "offline": offline_rounds}}


def main(argv=None) -> int:
    """Parse the options, measure, print the JSON."""
    parser = argparse.ArgumentParser(prog="python -m clients.benchmark.overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--backend", default="mslite")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    print(json.dumps(measure(args.model_repository, args.image, args.backend, args.calls, args.rounds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
