"""The benchmark report: a terminal summary, and JSON, CSV and a PNG plot written to a folder."""
import csv
import json
from pathlib import Path
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)
from matplotlib.lines import Line2D  # noqa: E402

LATENCY_KEYS = ("p50", "p90", "p95", "p99", "max")
CSV_FIELDS = ("source", "max_batch_size", "mode", "level", "images_per_request", "throughput_ips",
              "throughput_rps") + tuple(f"latency_{k}_ms" for k in LATENCY_KEYS) + (
              "mean_batch_size", "offline_batch_size", "efficiency", "errors", "server_cpu_ms_per_image",
              "client_cpu_ms_per_image")


def write_report(report: dict, out_dir: Path, stem: str = "benchmark") -> Dict[str, Path]:
    """Writes <stem>.json, <stem>.csv and <stem>.png under out_dir; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: out_dir / f"{stem}.{kind}" for kind in ("json", "csv", "png")}
    paths["json"].write_text(f"{json.dumps(report, indent=2)}\n")
    write_csv(report, paths["csv"])
    plot(report, paths["png"])
    return paths


def _level(run: dict) -> str:
    return f"c={run['concurrency']}" if "concurrency" in run else f"r={run['rate']:g}/s"


def csv_rows(report: dict) -> List[dict]:
    """One row per server run and per offline batch size."""
    rows = []
    for run in report["runs"]:
        rows.append(dict(
            source=run["server"], max_batch_size=run.get("max_batch_size"), mode=run["mode"],
            level=run.get("concurrency", run.get("rate")), images_per_request=run["images_per_request"],
            throughput_ips=run["throughput_ips"], throughput_rps=run["throughput_rps"],
            mean_batch_size=run.get("mean_batch_size"), offline_batch_size=run.get("offline_batch_size"),
            efficiency=run.get("efficiency"), errors=sum(run["errors"].values()),
            server_cpu_ms_per_image=_cpu(run, "server"), client_cpu_ms_per_image=_cpu(run, "client"),
            **{f"latency_{k}_ms": run["latency_ms"][k] for k in LATENCY_KEYS}))
    for entry in report["offline"] + report.get("runtimes", []):
        rows.append(dict(
            source=" ".join(["offline", *_runtime(entry)]), mode="offline", level=entry["batch_size"],
            images_per_request=entry["batch_size"],
            throughput_ips=entry["throughput_ips"], throughput_rps=entry["throughput_ips"] / entry["batch_size"],
            server_cpu_ms_per_image=entry.get("cpu_ms_per_image"),
            **{f"latency_{k}_ms": entry["latency_ms"][k] for k in LATENCY_KEYS}))
    return rows


def _runtime(entry: dict) -> List[str]:
    """[runtime, precision] of a --compare-runtimes row, [] for the served backend's own baseline."""
    return [entry["runtime"], entry["precision"]] if "runtime" in entry else []


def _cpu(run: dict, side: str):
    return run.get("cpu_ms_per_image", {}).get(side)


def write_csv(report: dict, path: Path) -> None:
    """The CSV rows of the report."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(csv_rows(report))


def plot(report: dict, path: Path) -> None:
    """One column per (load mode, images per request); rows: throughput, latency and efficiency against load.

    Each server is one colour; its throughput is drawn beside the offline baseline at the batch size
    it could form at each level (dotted), latency as p50 (solid) and p99 (dashed).
    """
    panels = panel_series(report["runs"])
    if not panels:
        return
    servers = list(dict.fromkeys(run["server"] for run in report["runs"]))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour = {server: colours[index % len(colours)] for index, server in enumerate(servers)}
    offline = {entry["batch_size"]: entry["throughput_ips"] for entry in report["offline"]}
    figure, axes = plt.subplots(3, len(panels), figsize=(5 * len(panels) + 1, 10), squeeze=False, sharex="col")
    for column, ((mode, images_per_request), by_server) in enumerate(panels.items()):
        throughput, latency, efficiency = axes[:, column]
        for server, runs in by_server.items():
            _plot_server(throughput, latency, efficiency, runs, mode, colour[server], offline)
        throughput.set_title(f"{images_per_request} image{'' if images_per_request == 1 else 's'} per request")
        _style_column(axes[:, column], [run[mode] for runs in by_server.values() for run in runs], mode)
    server = report.get("server", {})
    figure.suptitle(f"{server.get('name', '?')} v{server.get('version', '?')} ({server.get('backend', '?')} backend)",
                    y=0.99, fontsize=12)
    figure.legend(handles=_legend(servers, colour, bool(offline)), loc="upper center", bbox_to_anchor=(0.5, 0.965),
                  ncol=min(6, len(servers) + 3), fontsize=9, frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 0.93))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def panel_series(runs: List[dict]) -> Dict[tuple, Dict[str, List[dict]]]:
    """Runs with a latency by (mode, images per request), then by server, in load order: a column, a series."""
    panels: Dict[tuple, Dict[str, List[dict]]] = {}
    for run in runs:
        if run["latency_ms"]["p50"] is not None:
            key = (run["mode"], run["images_per_request"])
            panels.setdefault(key, {}).setdefault(run["server"], []).append(run)
    return dict(sorted(panels.items(), key=lambda item: (item[0][0] != "concurrency", item[0][1])))


def _plot_server(throughput, latency, efficiency, runs: List[dict], mode: str, colour: str, offline: dict) -> None:
    """A server's series in one column: img/s with its offline counterpart, p50 and p99, efficiency."""
    levels = [run[mode] for run in runs]
    throughput.plot(levels, [run["throughput_ips"] for run in runs], "o-", color=colour)
    matched = [(run[mode], offline[run["offline_batch_size"]]) for run in runs
               if run.get("offline_batch_size") in offline]
    if matched:
        throughput.plot(*zip(*matched), "*:", color=colour, markersize=9)
    latency.plot(levels, [run["latency_ms"]["p50"] for run in runs], "o-", color=colour)
    latency.plot(levels, [run["latency_ms"]["p99"] for run in runs], "^--", color=colour, alpha=0.7)
    rated = [(run[mode], run["efficiency"]) for run in runs if run.get("efficiency") is not None]
    if rated:
        efficiency.plot(*zip(*rated), "o-", color=colour)


def _style_column(axes, levels: List[float], mode: str) -> None:
    """Log-2 load axis ticked at the measured levels; labelled rows; a line at efficiency 1."""
    throughput, latency, efficiency = axes
    throughput.set_ylabel("throughput (images/s)")
    latency.set_ylabel("latency (ms)")
    efficiency.set_ylabel("efficiency (server / offline)")
    efficiency.axhline(1.0, color="grey", linewidth=0.8)
    efficiency.set_xlabel("concurrency (requests in flight)" if mode == "concurrency" else "offered load (requests/s)")
    ticks = sorted(set(levels))
    for row in axes:
        row.set_xscale("log", base=2)
        row.set_xticks(ticks)
        row.set_xticklabels([f"{tick:g}" for tick in ticks])
        row.minorticks_off()
        row.set_ylim(bottom=0)
        row.grid(True, alpha=0.3)


def _legend(servers: List[str], colour: Dict[str, str], with_offline: bool) -> list:
    """Legend entries: a colour per server, then the line styles."""
    handles = [Line2D([], [], color=colour[server], marker="o", label=server) for server in servers]
    handles += [Line2D([], [], color="black", linestyle="-", label="p50"),
                Line2D([], [], color="black", linestyle="--", marker="^", label="p99")]
    if with_offline:
        handles.append(Line2D([], [], color="black", linestyle=":", marker="*", label="offline, same batch size"))
    return handles


def _cell(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_summary(report: dict) -> str:
    """The report as aligned text tables: server runs, offline baseline, accuracy."""
    header = ("server", "mbs", "load", "img/req", "img/s", "req/s", "p50", "p90", "p95", "p99", "max",
              "batch", "eff", "cpu srv", "cpu cli", "errors")
    rows = [(run["server"], _cell(run.get("max_batch_size")), _level(run), str(run["images_per_request"]),
             _cell(run["throughput_ips"]), _cell(run["throughput_rps"]),
             *(_cell(run["latency_ms"][k]) for k in LATENCY_KEYS), _cell(run.get("mean_batch_size")),
             _cell(run.get("efficiency"), 2), _cell(_cpu(run, "server"), 2), _cell(_cpu(run, "client"), 2),
             _errors(run["errors"])) for run in report["runs"]]
    lines = ["server runs (latency in ms; batch = mean server batch; eff = img/s / offline img/s at the "
             "same batch size; cpu = CPU ms per image of the server and of this client)"] + _table(header, rows)
    if report["offline"]:
        lines += ["", "offline baseline (same model and backend in-process, no gRPC: preprocess + infer)"]
        lines += _table(("batch", "threads", "img/s", "p50", "p99", "max", "preprocess", "infer", "cpu"), [
            (str(e["batch_size"]), _cell(e.get("threads")), _cell(e["throughput_ips"]), _cell(e["latency_ms"]["p50"]),
             _cell(e["latency_ms"]["p99"]), _cell(e["latency_ms"]["max"]), _cell(e.get("preprocess_ms")),
             _cell(e.get("infer_ms")), _cell(e.get("cpu_ms_per_image"), 2)) for e in report["offline"]])
    if report.get("runtimes"):
        lines += ["", "runtimes side by side (in-process, same images and preprocessing; served backend first)"]
        lines += _table(("runtime", "precision", "batch", "threads", "img/s", "p50", "p99", "infer", "cpu"), [
            (e.get("runtime_version", "-") + ("" if "runtime" in e else " (served)"), e.get("precision", "fp32"),
             str(e["batch_size"]), _cell(e.get("threads")), _cell(e["throughput_ips"]), _cell(e["latency_ms"]["p50"]),
             _cell(e["latency_ms"]["p99"]), _cell(e.get("infer_ms")), _cell(e.get("cpu_ms_per_image"), 2))
            for e in report["offline"] + report["runtimes"]])
    cpu = report.get("cpu")
    if cpu:
        lines += ["", f"CPU: {cpu['model']}, {cpu['usable_cores']} usable cores, flags: "
                      f"{', '.join(cpu['flags']) or 'none of interest'}"]
    accuracy = report.get("accuracy")
    if accuracy:
        lines += ["", f"accuracy through the server over {accuracy['data']}: top-1 {accuracy['top1']:.2%} "
                      f"({accuracy['top1_correct']}/{accuracy['images']}), top-5 {accuracy['top5']:.2%} "
                      f"({accuracy['top5_correct']}/{accuracy['images']}), {accuracy['failed']} failed"]
    return "\n".join(lines)


def _errors(errors: dict) -> str:
    return ", ".join(f"{code} {count}" for code, count in errors.items()) or "0"


def _table(header, rows) -> List[str]:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
            for row in [header, *rows]]
