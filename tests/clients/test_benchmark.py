"""The benchmark end to end: servers it starts itself, a running server, the report files."""
import csv
import json
import logging
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import psutil
import pytest

from clients.benchmark import checkouts
from clients.benchmark.cli import load_images, main, parse_args
from clients.benchmark.report import draw, format_summary, panel_series, series_styles
from clients.benchmark.runner import busy_fraction
from clients.benchmark.runtimes import BackendChoice, measurable, native_bf16, parse_backend
from runtime_env import REPO_ROOT

LATENCY_KEYS = ("p50", "p90", "p95", "p99", "max")


def _check_latency(latency):
    values = [latency[key] for key in LATENCY_KEYS]
    assert all(value > 0 for value in values)
    assert values == sorted(values)


@pytest.fixture
def labelled_folder(tmp_path, images, labels):
    """An ImageNet-layout folder: two classes named by the model's labels, two images each, one broken file."""
    root = tmp_path / "val"
    for class_index, label in enumerate(labels[:2]):
        (root / label).mkdir(parents=True)
        for image_index in range(2):
            source = images[2 * class_index + image_index]
            (root / label / f"img{image_index}.jpg").write_bytes(open(source, "rb").read())
    (root / labels[0] / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return root


def test_sweep_over_started_servers_with_offline_baseline_and_accuracy(model_repository, images,
                                                                       labelled_folder, tmp_path):
    out = tmp_path / "report"
    status = main(["--start-server", "--model-repository", str(model_repository), "--max-batch-size", "1,4",
                   "--server-arg=--instances=2", "--server-arg=--threads=1",
                   "--concurrency", "1,4", "--images-per-request", "1,2", "--warmup", "0.3", "--duration", "1",
                   "--images", *images,
                   "--data", str(labelled_folder), "--offline-seconds", "0.3", "--out", str(out)])
    assert status == 0
    report = json.loads((out / "benchmark.json").read_text())
    assert {"runs", "offline", "accuracy", "server"} <= set(report)

    runs = report["runs"]
    assert [(r["server"], r["max_batch_size"], r["images_per_request"], r["concurrency"]) for r in runs] == [
        ("mslite mbs1", 1, 1, 1), ("mslite mbs1", 1, 1, 4), ("mslite mbs1", 1, 2, 1), ("mslite mbs1", 1, 2, 4),
        ("mslite mbs4", 4, 1, 1), ("mslite mbs4", 4, 1, 4), ("mslite mbs4", 4, 2, 1), ("mslite mbs4", 4, 2, 4)]
    for run in runs:
        assert run["errors"] == {} and run["successful"] == run["requests"] > 0
        assert run["throughput_ips"] > 0
        assert run["throughput_ips"] == pytest.approx(run["throughput_rps"] * run["images_per_request"])
        _check_latency(run["latency_ms"])
        assert run["offline_batch_size"] == min(run["concurrency"] * run["images_per_request"],
                                                run["max_batch_size"])
        assert run["efficiency"] > 0
        assert run["cpu_ms_per_image"]["server"] > 0 and run["cpu_ms_per_image"]["client"] > 0
        assert 0 < run["machine_busy"] <= 1
    assert {r["mean_batch_size"] for r in runs if r["server"] == "mslite mbs1"} == {1.0}
    assert [r["mean_batch_size"] for r in runs if r["server"] == "mslite mbs4" and r["concurrency"] == 1] == [1.0, 2.0]
    # Two workers: a lone image's batch starts alone; a lone 2-image request at max batch 1 starts its second
    # batch beside its first; 4 single-image requests at max batch 1 keep both workers busy.
    in_flight = {(r["server"], r["concurrency"], r["images_per_request"]): r["mean_batches_in_flight"] for r in runs}
    assert in_flight[("mslite mbs1", 1, 1)] == in_flight[("mslite mbs4", 1, 1)] == in_flight[("mslite mbs4", 1, 2)] == 1
    assert in_flight[("mslite mbs1", 1, 2)] == 1.5
    assert in_flight[("mslite mbs1", 4, 1)] > 1.2

    assert [entry["batch_size"] for entry in report["offline"]] == [1, 2, 4]
    for entry in report["offline"]:
        assert entry["throughput_ips"] > 0 and entry["iterations"] >= 3 and entry["cpu_ms_per_image"] > 0
        assert entry["threads"] == 2  # the serving default
        _check_latency(entry["latency_ms"])

    accuracy = report["accuracy"]
    assert (accuracy["images"], accuracy["failed"], accuracy["classes"]) == (5, 1, 2)
    assert accuracy["top1_correct"] <= accuracy["top5_correct"] <= 4
    assert accuracy["top5"] == accuracy["top5_correct"] / 5

    assert report["server"]["num_classes"] == len(report["server"]["labels"]) > 0
    assert [s["batching"]["max_batch_size"] for s in report["servers"]] == [1, 4]
    assert [s["options"][-2:] for s in report["servers"]] == [["--max-batch-size", "1"], ["--max-batch-size", "4"]]
    assert (out / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "benchmark.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["source"] for row in rows] == ["mslite mbs1"] * 4 + ["mslite mbs4"] * 4 + ["offline mslite"] * 3
    assert all(float(row["server_cpu_ms_per_image"]) > 0 for row in rows)


def test_lite_and_openvino_servers_side_by_side_each_against_its_own_offline_baseline(
        model_repository, images, labelled_folder, tmp_path):
    out = tmp_path / "report"
    status = main(["--start-server", "--model-repository", str(model_repository),
                   "--backend", "mslite,openvino:f32,openvino:bf16", "--max-batch-size", "4", "--concurrency", "2",
                   "--warmup", "0.2", "--duration", "0.5", "--images", *images, "--data", str(labelled_folder),
                   "--data-images", "3", "--offline-seconds", "0.2", "--out", str(out)])
    assert status == 0
    report = json.loads((out / "benchmark.json").read_text())
    bf16 = native_bf16(report["cpu"]["flags"])
    measured = ["mslite", "openvino-f32"] + (["openvino-bf16"] if bf16 else [])
    assert report["backends"] == measured
    assert [entry["backend"] for entry in report["skipped"]] == ([] if bf16 else ["openvino-bf16"])
    assert all("no native bf16" in entry["reason"] for entry in report["skipped"])
    assert [(s["label"], s["backend"]) for s in report["servers"]] == [(f"{b} mbs4", b) for b in measured]
    openvino_server = report["servers"][1]
    assert openvino_server["runtime_version"].startswith("openvino ")
    assert openvino_server["runtime_version"].endswith(" f32")
    assert openvino_server["options"][-4:] == ["--precision", "f32", "--max-batch-size", "4"]

    assert [(r["backend"], r["concurrency"]) for r in report["runs"]] == [(b, 2) for b in measured]
    assert [(e["backend"], e["batch_size"]) for e in report["offline"]] == [(b, 2) for b in measured]
    offline = {(e["backend"], e["batch_size"]): e for e in report["offline"]}
    assert offline[("mslite", 2)]["precision"] == offline[("openvino-f32", 2)]["precision"] == "f32"
    assert offline[("openvino-f32", 2)]["runtime_version"].startswith("openvino")
    assert not offline[("mslite", 2)]["runtime_version"].startswith("openvino")
    if bf16:
        assert offline[("openvino-bf16", 2)]["precision"] == "bf16"
    for run in report["runs"]:  # each run against its own backend's offline baseline
        own = offline[(run["backend"], run["offline_batch_size"])]["throughput_ips"]
        assert run["efficiency"] == round(run["throughput_ips"] / own, 3)
    assert list(report["accuracy_by_server"]) == [f"{b} mbs4" for b in measured]
    # --data-images: the same 3 of the 5 images on every backend.
    assert {(a["images"], a["images_in_data"]) for a in report["accuracy_by_server"].values()} == {(3, 5)}

    with open(out / "benchmark.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["source"], row["backend"]) for row in rows] == (
        [(f"{b} mbs4", b) for b in measured] + [(f"offline {b}", b) for b in measured])
    summary = format_summary(report)
    lines = summary.splitlines()
    for backend in measured:  # its runs, and its offline row named by backend and runtime
        assert any(line.startswith(f"{backend} mbs4 ") for line in lines)
        runtime = offline[(backend, 2)]["runtime_version"]
        assert any(line.startswith(f"{backend} ") and runtime in line for line in lines)
    assert ("skipped backend openvino-bf16" in summary) != bf16
    assert "(3 evenly spaced of its 5 images;" in summary
    assert (out / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_backend_entries_name_a_precision_and_bf16_needs_a_cpu_that_has_it():
    assert parse_backend("openvino") == BackendChoice("openvino", "auto")
    assert [parse_backend(text).label for text in ("mslite", "openvino", "openvino:f32", "openvino:bf16")] == [
        "mslite", "openvino", "openvino-f32", "openvino-bf16"]
    for text, message in (("mslite:bf16", "f32 only"), ("openvino:fp16", "unknown precision"),
                          ("tf", "unknown backend")):
        with pytest.raises(ValueError, match=message):
            parse_backend(text)
    choices = [parse_backend(text) for text in ("mslite", "openvino", "openvino:bf16")]
    avx2 = {"model": "an AVX2 CPU", "flags": ["avx2", "fma"]}
    measured, skipped = measurable(choices, avx2)  # auto stays: the server computes in f32 there
    assert [choice.label for choice in measured] == ["mslite", "openvino"]
    assert [entry["backend"] for entry in skipped] == ["openvino-bf16"] and "no native bf16" in skipped[0]["reason"]
    assert measurable(choices, {"model": "a CPU with AMX", "flags": ["amx_bf16"]}) == (choices, [])
    with pytest.raises(ValueError, match="no --backend left"):
        measurable(choices[2:], avx2)


def test_open_loop_against_a_running_server_sends_on_schedule(server, images, tmp_path):
    out = tmp_path / "report"
    status = main(["--target", server.address, "--label", "shared", "--metrics-url", server.metrics_url,
                   "--rate", "20", "--warmup", "0.2", "--duration", "1", "--images", *images[:2],
                   "--images-per-request", "2", "--no-offline", "--out", str(out)])
    assert status == 0
    report = json.loads((out / "benchmark.json").read_text())
    (run,) = report["runs"]
    assert (run["server"], run["mode"], run["rate"], run["images_per_request"]) == ("shared", "rate", 20.0, 2)
    assert run["requests"] == 20 and run["errors"] == {}
    _check_latency(run["latency_ms"])
    assert run["cpu_ms_per_image"]["server"] > 0
    assert run["efficiency"] is None and report["offline"] == [] and report["accuracy"] is None


needs_h2load = pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load is not installed (make h2load)")


@needs_h2load
def test_h2load_sends_the_closed_loop_levels_of_every_protocol_and_its_cpu_counts_as_the_client(
        model_repository, images, tmp_path):
    out = tmp_path / "report"
    status = main(["--start-server", "--model-repository", str(model_repository), "--max-batch-size", "4",
                   "--protocol", "genet,kserve-grpc,kserve-http", "--load-generator", "h2load",
                   "--concurrency", "1,4", "--rate", "20", "--warmup", "0.3", "--duration", "1",
                   "--images", *images, "--no-offline", "--out", str(out)])
    assert status == 0
    runs = json.loads((out / "benchmark.json").read_text())["runs"]
    assert [(r["protocol"], r["mode"], r["load_generator"]) for r in runs] == [
        (protocol, mode, generator) for protocol in ("genet", "kserve-grpc", "kserve-http")
        for mode, generator in (("concurrency", "h2load"), ("concurrency", "h2load"), ("rate", "python"))]
    for run in runs:
        # The calls h2load leaves in flight when it stops are cancelled by the server: not errors.
        assert run["errors"] == {} and run["successful"] == run["requests"] > 0
        assert run["throughput_ips"] > 0 and run["cpu_ms_per_image"]["client"] > 0
        _check_latency(run["latency_ms"])
    assert all(run["requests"] == 20 for run in runs if run["mode"] == "rate")
    assert "c=4 h2load" in format_summary(json.loads((out / "benchmark.json").read_text()))


@needs_h2load
def test_h2load_levels_take_failed_grpc_calls_from_the_server_metrics(model_repository, images, tmp_path):
    """Every call has two images where the server takes one: gRPC fails them with HTTP 200, HTTP with 400."""
    out = tmp_path / "report"
    status = main(["--start-server", "--model-repository", str(model_repository), "--max-batch-size", "4",
                   "--server-arg=--max-images-per-request=1", "--images-per-request", "2",
                   "--protocol", "genet,kserve-http", "--load-generator", "h2load", "--concurrency", "2",
                   "--warmup", "0.2", "--duration", "0.5", "--images", *images, "--no-offline", "--out", str(out)])
    assert status == 0
    for run in json.loads((out / "benchmark.json").read_text())["runs"]:
        assert set(run["errors"]) == {"INVALID_ARGUMENT"} and run["errors"]["INVALID_ARGUMENT"] >= run["requests"]
        assert run["successful"] == 0 and run["throughput_ips"] == 0


@pytest.mark.parametrize("options, message", [
    (["--protocol", "genet-stream"], "not genet-stream"),
    (["--tls"], "plaintext only"),
    (["--target", "127.0.0.1:1"], "needs --metrics-url"),
])
def test_h2load_refuses_what_it_cannot_measure(options, message, capsys):
    target = [] if "--target" in options else ["--target", "127.0.0.1:1", "--metrics-url", "http://127.0.0.1:2/m"]
    with pytest.raises(SystemExit):
        parse_args([*target, *options, "--load-generator", "h2load", "--images", "x.jpg"])
    assert message in capsys.readouterr().err


def test_machine_busy_is_the_non_idle_share_of_all_cores_without_counting_guest_time_twice():
    times = type(psutil.cpu_times())
    fields = times._fields
    before = times._make([0.0] * len(fields))
    after = dict.fromkeys(fields, 0.0)
    after.update(user=3.0, system=1.0, idle=3.0)
    after.update({name: 1.0 for name in ("iowait", "guest") if name in fields})  # guest is inside user on Linux
    idle = 3.0 + (1.0 if "iowait" in fields else 0.0)
    assert busy_fraction(before, times(**after)) == pytest.approx(round(4.0 / (4.0 + idle), 3))
    assert busy_fraction(before, before) is None


def test_unreachable_target_fails_with_one_message(free_port, images, tmp_path, capsys):
    status = main(["--target", f"127.0.0.1:{free_port}", "--retries", "0", "--images", images[0],
                   "--out", str(tmp_path)])
    assert status == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_images_folders_give_only_image_files_and_the_skipped_count_is_logged(images, tmp_path, caplog):
    folder = tmp_path / "photos"
    folder.mkdir()
    for source in images[:3]:
        (folder / Path(source).name).write_bytes(Path(source).read_bytes())
    (folder / "labels.json").write_text("{}")
    (folder / "README").write_text("notes")
    args = parse_args(["--target", "127.0.0.1:1", "--images", str(folder)])
    with caplog.at_level(logging.WARNING):
        loaded = load_images(args)
    assert sorted(path.name for path in loaded) == sorted(Path(source).name for source in images[:3])
    assert "skipped 2 file(s)" in caplog.text and "labels.json" in caplog.text


def _run(server, images_per_request, concurrency):
    return {"server": server, "mode": "concurrency", "concurrency": concurrency,
            "images_per_request": images_per_request, "latency_ms": {"p50": 1.0}}


def test_the_plot_draws_one_series_per_server_and_images_per_request_value():
    runs = [_run(server, ipr, c) for server in ("mbs1", "mbs16") for ipr in (1, 16) for c in (1, 16)]
    panels = panel_series(runs)
    assert list(panels) == [("concurrency", 1), ("concurrency", 16)]
    for (_, images_per_request), by_server in panels.items():
        assert list(by_server) == ["mbs1", "mbs16"]
        for server, series in by_server.items():
            assert [(r["server"], r["images_per_request"], r["concurrency"]) for r in series] == [
                (server, images_per_request, 1), (server, images_per_request, 16)]


def test_the_plot_colours_each_server_and_marks_each_protocol():
    runs = [dict(_run(f"{backend} mbs{mbs} {protocol}", 1, 1), backend=backend, max_batch_size=mbs, protocol=protocol)
            for backend in ("mslite", "openvino-f32") for mbs in (1, 16) for protocol in ("genet", "kserve-http")]
    styles = series_styles(runs)
    assert len(styles) == 8
    assert len({colour for colour, _ in styles.values()}) == 4  # a colour per (backend, max batch size)
    assert styles["mslite mbs1 genet"][0] == styles["mslite mbs1 kserve-http"][0]
    assert {marker for _, marker in styles.values()} == {styles["mslite mbs1 genet"][1],
                                                          styles["mslite mbs1 kserve-http"][1]}


def test_the_legend_fits_a_single_column_figure():
    """One images-per-request value gives one narrow column: the legend wraps instead of running off."""
    backends = ("mslite", "openvino-f32", "openvino-bf16-unverified")
    runs = [dict(_run(f"{backend} mbs8 genet", 1, level), backend=backend, max_batch_size=8, protocol="genet",
                 throughput_ips=10.0, efficiency=0.9, offline_batch_size=min(level, 8),
                 latency_ms={"p50": 10.0 * level, "p99": 20.0 * level})
            for backend in backends for level in (1, 4, 16)]
    offline = [{"backend": backend, "batch_size": size, "throughput_ips": 11.0}
               for backend in backends for size in (1, 4, 8)]
    figure = draw({"runs": runs, "offline": offline, "server": {"name": "genet_reference", "version": "1"},
                   "backends": list(backends)})
    legend = figure.legends[0].get_window_extent(figure.canvas.get_renderer())
    plt.close(figure)
    assert figure.bbox.x0 <= legend.x0 and legend.x1 <= figure.bbox.x1
    assert len(figure.axes) == 4


@needs_h2load
def test_checkouts_measures_every_checkout_in_alternating_rounds(model_repository, images, tmp_path, capsys):
    """This checkout twice (an A/A comparison): each round starts both servers in turn and loads each with
    h2load; the ratios are each round's pair, the first checkout's are 1."""
    report_path, logs = tmp_path / "checkouts.json", tmp_path / "logs"
    status = checkouts.main(["--checkout", str(REPO_ROOT), "--checkout", str(REPO_ROOT),
                             "--model-repository", str(model_repository), "--images", *map(str, images),
                             "--rounds", "2", "--concurrency", "2", "--warmup", "0.3", "--duration", "1",
                             "--server-arg=--instances=1", "--log-dir", str(logs), "--json", str(report_path)])
    assert status == 0
    report = json.loads(report_path.read_text())
    assert report["checkouts"] == [str(REPO_ROOT)] * 2 and "--instances=1" in report["server_args"]
    for runs in report["runs"]:
        assert [(run["concurrency"], run["load_generator"]) for run in runs] == [(2, "h2load")] * 2
        for run in runs:
            assert run["errors"] == {} and run["throughput_ips"] > 0 and run["mean_batch_size"] >= 1
    first, second = report["runs"]
    assert report["summary"][0]["throughput_over_first"] == [1.0, 1.0]
    assert report["summary"][1]["throughput_over_first"] == [
        round(b["throughput_ips"] / a["throughput_ips"], 3) for a, b in zip(first, second)]
    assert sorted(path.name for path in logs.iterdir()) == [
        "server-1-round-1.log", "server-1-round-2.log", "server-2-round-1.log", "server-2-round-2.log"]
    assert capsys.readouterr().out.count("(median)") == 2


def test_checkouts_refuses_a_checkout_without_its_grpc_stubs_before_starting_any_server(model_repository, images,
                                                                                       tmp_path, capsys):
    status = checkouts.main(["--checkout", str(REPO_ROOT), "--checkout", str(tmp_path),
                             "--model-repository", str(model_repository), "--images", *map(str, images)])
    assert status == 2
    assert f"{tmp_path}: no genet/v1/classifier_pb2_grpc.py" in capsys.readouterr().err


def test_checkouts_summary_medians_skip_missing_values_and_a_round_the_first_checkout_lost_has_no_ratio():
    def run(images_per_s, batch=None):
        return {"throughput_ips": images_per_s, "latency_ms": {"p50": 2.0}, "machine_busy": 0.5,
                "mean_batch_size": batch, "mean_batches_in_flight": None, "cpu_ms_per_image": {"server": 0.7}}

    first, second = checkouts.summarise([[run(0.0), run(100.0, 4.0), run(200.0, 6.0)],
                                         [run(50.0), run(150.0, 5.0), run(100.0)]])
    assert first["throughput_over_first"] == [None, 1.0, 1.0]
    assert second["throughput_over_first"] == [None, 1.5, 0.5]
    assert first["medians"] == {"img/s": 100.0, "p50 ms": 2.0, "busy": 0.5, "batch": 5.0, "flight": None,
                                "front ms": 0.7}
    assert second["medians"]["img/s"] == 100.0 and second["medians"]["batch"] == 5.0
