"""Command line of the benchmark: parse the options, run every part, write and print the report."""
import argparse
import contextlib
import dataclasses
import logging
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from google.protobuf import json_format

from clients.benchmark import h2load
from clients.benchmark.accuracy import IMAGE_SUFFIXES, list_images, measure_accuracy
from clients.benchmark.baseline import run_offline
from clients.benchmark.progress import ProgressLine
from clients.benchmark.report import format_summary, write_report
from clients.benchmark.runner import LoadPlan, add_efficiency, offline_batch_size, run_levels
from clients.benchmark.runtimes import (BACKENDS, RUNTIMES, BackendChoice, cpu_description, measurable, native_bf16,
                                       parse_backend)
from clients.benchmark.servers import ServerSpec
from clients.channel import join_targets
from clients.client import ClientError
from clients.kserve import PROTOCOLS, create_client
from clients.options import add_connection_arguments, client_from_args, tls_from_args, token_from_args

logger = logging.getLogger("clients.benchmark")
LOAD_IMAGES = 16
LOAD_GENERATORS = ("python", "h2load")


def _ints(text: str) -> List[int]:
    return [int(part) for part in text.split(",") if part]


def _floats(text: str) -> List[float]:
    return [float(part) for part in text.split(",") if part]


def _names(text: str) -> List[str]:
    names = [part for part in text.split(",") if part]
    unknown = sorted(set(names) - set(RUNTIMES))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown runtime {', '.join(unknown)}; valid: {', '.join(RUNTIMES)}")
    return names


def _backends(text: str) -> List[BackendChoice]:
    try:
        choices = [parse_backend(part) for part in text.split(",") if part]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not choices:
        raise argparse.ArgumentTypeError(f"give a backend: {', '.join(BACKENDS)}")
    return list(dict.fromkeys(choices))


def _protocols(text: str) -> List[str]:
    names = [part for part in text.split(",") if part]
    unknown = sorted(set(names) - set(PROTOCOLS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown protocol {', '.join(unknown)}; valid: {', '.join(PROTOCOLS)}")
    return list(dict.fromkeys(names))


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line options."""
    parser = argparse.ArgumentParser(
        prog="python -m clients.benchmark",
        description="Throughput, latency and accuracy of a GENet server, against an offline baseline. "
        "Benchmark a running server (--target) or start one per --max-batch-size value (--start-server).")
    load = parser.add_argument_group("load")
    load.add_argument("--concurrency", type=_ints, help="closed-loop levels, e.g. 1,2,4,8,16 (the default "
                      "unless --rate is given)")
    load.add_argument("--rate", type=_floats, default=[], help="open-loop levels in requests/s, e.g. 20,40")
    load.add_argument("--images-per-request", type=_ints, default=[1], metavar="N[,N...]",
                      help="images in each request (perf_analyzer's -b); several values sweep each (default 1)")
    load.add_argument("--warmup", type=float, default=2.0, metavar="S", help="seconds before measuring (default 2)")
    load.add_argument("--duration", type=float, default=10.0, metavar="S", help="measured seconds per level (default 10)")
    load.add_argument("--images", nargs="+", type=Path, default=[], metavar="PATH",
                      help=f"images (files, or folders searched for {', '.join(sorted(IMAGE_SUFFIXES))}) for the load "
                           f"(default: {LOAD_IMAGES} images of --data)")
    load.add_argument("--protocol", type=_protocols, default=["genet"], metavar="P[,P...]",
                      help="protocols measured side by side on each server: genet (genet.v1), genet-stream "
                           "(genet.v1 ClassifyStream: every request of the level on one stream), kserve-grpc, "
                           "kserve-http (KServe v2; images as BYTES, top-k by the classification extension); "
                           "default genet")
    load.add_argument("--http-target", metavar="HOST:PORT", help="HTTP port of a --target server (kserve-http)")
    load.add_argument("--load-generator", choices=LOAD_GENERATORS, default="python",
                      help="what sends the closed-loop levels: python (this process, grpcio and requests) or h2load "
                           "(nghttp2's load generator in C: about a fifth of the CPU per call, which a server "
                           "sharing the cores keeps; gRPC status codes from the server's metrics); open-loop levels "
                           "always run here (default python)")
    parser.add_argument("--data", type=Path, help="ImageNet-layout folder: top-1/top-5 over every image")
    parser.add_argument("--data-images", type=int, default=0, metavar="N",
                        help="score N images of --data, evenly spaced so each class keeps its share (default: all)")
    servers = parser.add_argument_group("servers started by the benchmark, and the offline baseline")
    servers.add_argument("--start-server", action="store_true",
                         help="start `python -m serving` per backend and max batch size")
    servers.add_argument("--model-repository", type=Path, help="models served (and measured offline)")
    servers.add_argument("--backend", type=_backends, default=[BackendChoice("mslite")], metavar="B[:P][,B[:P]...]",
                         help=f"the servers' backends ({', '.join(BACKENDS)}), each at an optional precision "
                              "(auto, f32, bf16; default auto), side by side with --start-server, e.g. "
                              "mslite,openvino:f32,openvino:bf16; each gets its own offline baseline. bf16 on a "
                              "CPU without native bf16 is skipped and reported so (default mslite)")
    servers.add_argument("--server-python", help="interpreter of the servers and the offline baseline (default: "
                         "this one for the servers' front, the backend's environment for the offline baseline: "
                         ".venv-lite/bin/python for mslite)")
    servers.add_argument("--max-batch-size", type=_ints, default=[], help="e.g. 1,16: one server each")
    servers.add_argument("--threads", type=int, help="inference threads of the servers and the baseline")
    servers.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                         help="extra server option, e.g. --server-arg=--max-queue-delay-ms=2 (repeatable)")
    servers.add_argument("--label", default="server", help="name of a --target server in the report")
    servers.add_argument("--metrics-url", help="/metrics URL of a --target server (mean batch sizes)")
    servers.add_argument("--offline-batch-sizes", type=_ints, help="default: the batch sizes of the runs")
    servers.add_argument("--offline-seconds", type=float, default=5.0, help="measured seconds per batch size")
    servers.add_argument("--no-offline", action="store_true", help="skip the offline baseline")
    servers.add_argument("--compare-runtimes", type=_names, default=[], metavar="NAME[,NAME...]",
                         help=f"also measure {' and '.join(RUNTIMES)} in-process on the served version's model.onnx, "
                              "like the offline baseline (f32; OpenVINO bf16 too where the CPU has it)")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="report folder (default reports/)")
    add_connection_arguments(parser, target_required=False)
    args = parser.parse_args(argv)
    if bool(args.start_server) == bool(args.target):
        parser.error("give exactly one of --target and --start-server")
    if args.start_server and not args.model_repository:
        parser.error("--start-server needs --model-repository")
    if not args.images and not args.data:
        parser.error("give --images or --data: the load needs images")
    if args.data_images < 0:
        parser.error("--data-images must be >= 0")
    if args.target and "kserve-http" in args.protocol and not args.http_target:
        parser.error("--protocol kserve-http with --target needs --http-target")
    if args.target and len(args.backend) > 1:
        parser.error("--target measures one server: give one --backend (its offline baseline)")
    if args.load_generator == "h2load":
        _check_h2load_options(parser, args)
    if args.concurrency is None:
        args.concurrency = [] if args.rate else [1, 2, 4, 8, 16]
    return args


def _check_h2load_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse what h2load cannot do here: other protocols, TLS, several addresses, unknown gRPC status codes."""
    unsupported = [protocol for protocol in args.protocol if protocol not in h2load.PROTOCOLS]
    if unsupported:
        parser.error(f"--load-generator h2load sends {', '.join(h2load.PROTOCOLS)} calls, not {', '.join(unsupported)}")
    if tls_from_args(args) is not None:
        parser.error("--load-generator h2load speaks plaintext only: drop the TLS options or use the python generator")
    if args.target and (len(args.target) > 1 or "," in args.target[0] or ":///" in args.target[0]):
        parser.error("--load-generator h2load needs one HOST:PORT --target")
    if args.target and not args.metrics_url:
        parser.error("--load-generator h2load with --target needs --metrics-url: gRPC status codes come from the "
                     "server's metrics")
    try:
        h2load.h2load_path()
    except RuntimeError as error:
        parser.error(str(error))


def load_images(args: argparse.Namespace) -> List[Path]:
    """The images the load requests are made of: --images (folders searched), or spread over --data."""
    if not args.images:
        found = [path for path, _ in list_images(args.data)]
        step = max(1, len(found) // LOAD_IMAGES)
        return found[::step][:LOAD_IMAGES]
    files = []
    for path in args.images:
        files.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    paths = [path for path in files if path.suffix.lower() in IMAGE_SUFFIXES]
    skipped = [path.name for path in files if path.suffix.lower() not in IMAGE_SUFFIXES]
    if skipped:
        logger.warning("--images: skipped %d file(s) not named as an image (%s): %s", len(skipped),
                       ", ".join(sorted(IMAGE_SUFFIXES)), ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else ""))
    if not paths:
        raise ValueError(f"--images: no image files among {len(files)} given")
    return paths


def server_specs(args: argparse.Namespace, choice: BackendChoice) -> List[ServerSpec]:
    """One ServerSpec of `choice` per --max-batch-size value (one with the server's default when none is given)."""
    common = list(args.server_arg) + (["--threads", str(args.threads)] if args.threads else [])
    if choice.precision != "auto":
        common += ["--precision", choice.precision]
    if "kserve-http" in args.protocol:
        common += ["--http-port", "0"]
    sizes = args.max_batch_size or [None]
    return [ServerSpec(label=f"{choice.label} mbs{size}" if size else choice.label,
                       model_repository=args.model_repository, backend=choice.name, python=args.server_python,
                       options=tuple(common + (["--max-batch-size", str(size)] if size else [])))
            for size in sizes]


def target_backend(args: argparse.Namespace, info) -> BackendChoice:
    """The backend of a --target server: its own (GetModelInfo), at the precision --backend names for it."""
    (given,) = args.backend
    return given if given.name == info.backend or not info.backend else BackendChoice(info.backend)


def message_dict(message) -> dict:
    """A protobuf message as a JSON-ready dict with the .proto's field names, default values included."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


@contextlib.contextmanager
def endpoint(args: argparse.Namespace, spec: Optional[ServerSpec]):
    """(label, target addresses, metrics URL, HTTP address) of the server to measure, started first when spec
    is given."""
    if spec is None:
        yield args.label, args.target, args.metrics_url, args.http_target
        return
    with spec.process(args.out / f"server-{spec.label.replace(' ', '-')}.log") as server:
        yield spec.label, [server.address], server.metrics_url, server.http_url


def measure_servers(args, backends: Sequence[BackendChoice], images, progress) -> dict:
    """Runs the load levels on every server. Accuracy through the last server of each backend: over every
    protocol for the first backend, over the first protocol for the others (the protocols are compared
    once, the backends each once).

    Each backend's offline baseline is measured right after its servers, so that the efficiency of a level
    divides two rates taken minutes apart, not the whole run apart (a shared machine's speed drifts).

    Returns runs, servers, accuracy by series, offline rows and, by backend label, (backend, model info).
    """
    plan = LoadPlan(args.concurrency, args.rate, args.images_per_request, args.warmup, args.duration, args.timeout)
    measured = {"runs": [], "servers": [], "accuracy": {}, "backends": {}, "offline": []}
    with_offline = offline_wanted(args)
    if not args.start_server:
        label = measure_server(args, None, None, images, plan, progress, measured,
                               args.protocol if args.data else [])
        measured["offline"] += measure_offline(args, measured, label, images) if with_offline else []
        return measured
    for number, choice in enumerate(backends):
        specs = server_specs(args, choice)
        accuracy = (args.protocol if number == 0 else args.protocol[:1]) if args.data else []
        for index, spec in enumerate(specs):
            measure_server(args, choice, spec, images, plan, progress, measured,
                           accuracy if index == len(specs) - 1 else [])
        measured["offline"] += measure_offline(args, measured, choice.label, images) if with_offline else []
    return measured


def measure_server(args, choice: Optional[BackendChoice], spec: Optional[ServerSpec], images, plan: LoadPlan,
                   progress, measured: dict, accuracy_protocols: Sequence[str]) -> str:
    """One server (started from spec, or --target): every protocol's load levels, then accuracy over --data
    through each of accuracy_protocols. Returns its backend's label."""
    with endpoint(args, spec) as (label, target, metrics_url, http_target):
        with client_from_args(args, target) as client:
            info = client.model_info()
        choice = choice or target_backend(args, info)
        measured["backends"][choice.label] = (choice, info)
        measured["servers"].append({"label": label, "backend": choice.label, "runtime_version": info.runtime_version,
                                    "target": ",".join(target), "metrics_url": metrics_url,
                                    "batching": message_dict(info.batching),
                                    "options": list(spec.options) if spec else None})
        for protocol in args.protocol:
            # Several protocols: one series each ("mslite mbs16 kserve-grpc"); genet alone keeps the server's label.
            series = label if args.protocol == ["genet"] else f"{label} {protocol}"
            if args.load_generator == "h2load":
                address = http_target if protocol == "kserve-http" else target[0]
                plan = dataclasses.replace(plan, h2load_target=h2load.H2loadTarget(
                    address.split("://")[-1], protocol, info.name, token_from_args(args)))
            with protocol_client(args, protocol, target, http_target, info.name) as client:
                runs = run_levels(client, images, plan, series, info.batching.max_batch_size or None,
                                  metrics_url, progress)
                measured["runs"] += [dict(run, backend=choice.label, protocol=protocol) for run in runs]
                if protocol in accuracy_protocols:
                    chunk = min(16, info.limits.max_images_per_request or 16)
                    measured["accuracy"][series] = measure_accuracy(client, args.data, list(info.labels), chunk, 4,
                                                                    progress.count(f"{series} accuracy"),
                                                                    args.data_images)
                    progress.done()
    return choice.label


def protocol_client(args: argparse.Namespace, protocol: str, target: Sequence[str], http_target: Optional[str],
                    model_name: str):
    """The client of `protocol` configured by the connection options (retries: genet.v1 only)."""
    if protocol == "genet":
        return client_from_args(args, target)
    address = http_target if protocol == "kserve-http" else join_targets(target)
    return create_client(protocol, address, model_name=model_name, timeout_s=args.timeout, tls=tls_from_args(args),
                         token=token_from_args(args))


def offline_sizes(args, runs) -> List[int]:
    """--offline-batch-sizes, else the batch sizes the runs could form."""
    return args.offline_batch_sizes or sorted({b for b in map(offline_batch_size, runs) if b}) or [1]


def offline_wanted(args) -> bool:
    """Whether offline baselines are measured (--model-repository given, no --no-offline); says why not."""
    if args.no_offline or not args.model_repository:
        logger.warning("offline baseline skipped (%s)", "--no-offline" if args.no_offline else "no --model-repository")
        return False
    return True


def measure_offline(args, measured: dict, label: str, images) -> List[dict]:
    """The offline baseline of the measured backend `label` at the batch sizes its runs formed, its rows
    labelled with the backend; none when it fails (its runs are kept, reported without one)."""
    choice, info = measured["backends"][label]
    runs = [run for run in measured["runs"] if run["backend"] == label]
    model_dir = args.model_repository / info.name / info.version
    try:
        results = run_offline(model_dir, choice.name, offline_sizes(args, runs), images, args.offline_seconds,
                              args.threads, info.device or "cpu", info.device_id, args.server_python,
                              info.model_sha256, precision=choice.precision)
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as error:
        logger.error("%s offline baseline failed, reported without it: %s", label, error)
        return []
    return [dict(result, backend=label) for result in results]


def measure_runtimes(args, measured: dict, images, cpu: dict) -> List[dict]:
    """The --compare-runtimes baselines at the offline batch sizes, one row per runtime, precision and size."""
    if not args.compare_runtimes or not args.model_repository:
        return []
    sizes = offline_sizes(args, measured["runs"])
    choice, info = next(iter(measured["backends"].values()))
    model_dir = args.model_repository / info.name / info.version
    rows = []
    for runtime in args.compare_runtimes:
        for precision in ("f32", "bf16") if runtime == "openvino" and native_bf16(cpu["flags"]) else ("f32",):
            try:
                results = run_offline(model_dir, choice.name, sizes, images, args.offline_seconds, args.threads,
                                      python=sys.executable, runtime=runtime, precision=precision)
            except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as error:
                logger.error("%s %s baseline failed, reported without it: %s", runtime, precision, error)
                continue
            rows += [dict(result, runtime=runtime) for result in results]
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the benchmark; returns the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    progress = ProgressLine()
    cpu = cpu_description()
    try:
        backends, skipped = measurable(args.backend, cpu) if args.start_server else (args.backend, [])
        images = load_images(args)
        measured = measure_servers(args, backends, images, progress)
        offline = measured["offline"]
        runtimes = measure_runtimes(args, measured, images, cpu)
    except (ClientError, OSError, RuntimeError, ValueError) as error:
        progress.done()
        print(f"error: {error}", file=sys.stderr)
        return 1
    add_efficiency(measured["runs"], offline)
    _, info = next(iter(measured["backends"].values()))
    accuracy = measured["accuracy"]
    report = {"runs": measured["runs"], "offline": offline, "accuracy": next(iter(accuracy.values()), None),
              "accuracy_by_server": accuracy, "server": message_dict(info), "servers": measured["servers"],
              "backends": list(measured["backends"]), "skipped": skipped, "images": [str(p) for p in images],
              "runtimes": runtimes, "cpu": cpu}
    paths = write_report(report, args.out)
    print(format_summary(report))
    print(f"\nreport: {', '.join((str(p) for p in paths.values()))}")
    return 0
