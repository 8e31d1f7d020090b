"""What a worker round trip adds to a batch: inline pipe transfer vs shared memory, against a no-op worker.

    python -m serving.workers.bench_transfer [--rounds 300] [--python .venv-lite/bin/python]

Starts an echo worker (this module with --echo, in the Lite interpreter by default: the real
3.11 -> 3.7 pairing) that answers every batch with zero logits of shape (N, --classes) without
computing, so a round trip is pure transfer cost. Modes, interleaved round by round so that load
drifts hit them alike; each uses serving.workers.protocol.Channel as the worker and proxy do:
  pipe    the batch inline in the message (the protocol as built);
  shm     the batch copied into a reused /dev/shm region sized for the largest batch, its name in the header;
  header  the header alone: the floor of any transport (a batch assembled in place in shared memory).
Prints a Markdown table of median and p90 milliseconds per round trip.
"""
import argparse
import mmap
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from runtime_env import REPO_ROOT, backend_python
from serving.workers.protocol import Channel, Header, enlarge_pipe

SHAPES = ((1, 3, 40, 40), (16, 3, 40, 40), (1, 3, 224, 224), (8, 3, 224, 224))
MODES = ("pipe", "shm", "header")


def echo(classes: int) -> None:
    """The echo worker: zero logits for every batch, read inline or from the named shared-memory file."""
    channel = Channel(sys.stdin.fileno(), sys.stdout.fileno())
    regions: Dict[str, mmap.mmap] = {}
    while True:
        try:
            header, tensor = channel.receive()
        except EOFError:
            return
        if "shm" in header:
            tensor = np.frombuffer(_region(regions, header["shm"]), np.float32,
                                   count=int(np.prod(header["batch_shape"]))).reshape(header["batch_shape"])
        rows = tensor.shape[0] if tensor is not None else header["batch_shape"][0]
        channel.send({"ok": True}, np.zeros((rows, classes), np.float32))


def _region(regions: Dict[str, mmap.mmap], path: str) -> mmap.mmap:
    if path not in regions:
        with open(path, "r+b") as handle:
            regions[path] = mmap.mmap(handle.fileno(), 0)
    return regions[path]


class EchoClient:
    """The front's side: one echo worker, its pipes and a shared-memory region for the largest batch."""

    def __init__(self, python: str, classes: int, region_bytes: int) -> None:
        self.process = subprocess.Popen([python, "-m", "serving.workers.bench_transfer", "--echo",
                                         "--classes", str(classes)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
        for pipe in (self.process.stdin, self.process.stdout):
            enlarge_pipe(pipe.fileno())
        self.channel = Channel(self.process.stdout.fileno(), self.process.stdin.fileno())
        shm_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.region_file = tempfile.NamedTemporaryFile(prefix="genet-worker-", dir=shm_dir)
        self.region_file.truncate(region_bytes)
        self.region = mmap.mmap(self.region_file.fileno(), region_bytes)

    def round_trip(self, mode: str, batch: np.ndarray) -> float:
        """Seconds for one request and its reply in `mode`."""
        started = time.perf_counter()
        header: Header = {"op": "predict", "batch_shape": list(batch.shape)}
        if mode == "pipe":
            self.channel.send(header, batch)
        else:
            if mode == "shm":
                np.frombuffer(self.region, np.float32, count=batch.size)[:] = batch.ravel()
            self.channel.send(dict(header, shm=self.region_file.name))
        self.channel.receive()
        return time.perf_counter() - started

    def close(self) -> None:
        """Stop the echo worker and drop the region."""
        self.process.stdin.close()
        self.process.wait()
        self.region.close()
        self.region_file.close()


def measure(client: EchoClient, shape: Tuple[int, ...], rounds: int) -> Dict[str, List[float]]:
    """Round-trip seconds per mode for `rounds` rounds at `shape`, after a few warm-up rounds."""
    batch = np.random.RandomState(0).normal(0, 1, shape).astype(np.float32)
    times: Dict[str, List[float]] = {mode: [] for mode in MODES}
    for round_index in range(rounds + 5):
        for mode in MODES:
            elapsed = client.round_trip(mode, batch)
            if round_index >= 5:
                times[mode].append(elapsed)
    return times


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Measure every shape and mode; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=300, help="round trips per shape and mode")
    parser.add_argument("--python", default=backend_python("mslite"), help="interpreter of the echo worker")
    parser.add_argument("--classes", type=int, default=1000, help="logits per image in the reply")
    parser.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.echo:
        echo(args.classes)
        return
    client = EchoClient(args.python, args.classes, max(4 * int(np.prod(shape)) for shape in SHAPES))
    print(f"| batch | MB | {' | '.join((f'{mode} median / p90 ms' for mode in MODES))} |")
    print(f"|---|---|{'---|' * len(MODES)}")
    try:
        for shape in SHAPES:
            times = measure(client, shape, args.rounds)
            cells = [f"{1000 * np.median(times[m]):.3f} / {1000 * np.percentile(times[m], 90):.3f}"
                     for m in MODES]
            print(f"| {'x'.join(map(str, shape))} | {4e-06 * np.prod(shape):.2f} | {' | '.join(cells)} |")
    finally:
        client.close()


if __name__ == "__main__":
    main()
