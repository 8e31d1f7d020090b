"""The benchmark report: a terminal summary, and JSON, CSV and a PNG plot written to a folder."""
import csv
import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)
from matplotlib import ticker  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from clients.benchmark.runner import offline_throughput  # noqa: E402

LATENCY_KEYS = ("p50", "p90", "p95", "p99", "max")
CSV_FIELDS = ("source", "backend", "max_batch_size", "mode", "level", "images_per_request", "throughput_ips",
              "throughput_rps") + tuple(f"latency_{k}_ms" for k in LATENCY_KEYS) + (
              "mean_batch_size", "mean_batches_in_flight", "offline_batch_size", "efficiency", "errors",
              "server_cpu_ms_per_image", "client_cpu_ms_per_image", "machine_busy", "load_generator")


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
    level = f"c={run['concurrency']}" if "concurrency" in run else f"r={run['rate']:g}/s"
    return f"{level} h2load" if run.get("load_generator") == "h2load" else level


def csv_rows(report: dict) -> List[dict]:
    """One row per server run and per offline batch size (of each backend, then of each compared runtime)."""
    rows = []
    for run in report["runs"]:
        rows.append(dict(
            source=run["server"], backend=run.get("backend"), max_batch_size=run.get("max_batch_size"),
            mode=run["mode"], level=run.get("concurrency", run.get("rate")),
            images_per_request=run["images_per_request"],
            throughput_ips=run["throughput_ips"], throughput_rps=run["throughput_rps"],
            mean_batch_size=run.get("mean_batch_size"), mean_batches_in_flight=run.get("mean_batches_in_flight"),
            offline_batch_size=run.get("offline_batch_size"),
            efficiency=run.get("efficiency"), errors=sum(run["errors"].values()),
            server_cpu_ms_per_image=cpu_ms_per_image(run, "server"), client_cpu_ms_per_image=cpu_ms_per_image(run, "client"),
            machine_busy=run.get("machine_busy"), load_generator=run.get("load_generator"),
            **{f"latency_{k}_ms": run["latency_ms"][k] for k in LATENCY_KEYS}))
    for entry in report["offline"] + report.get("runtimes", []):
        rows.append(dict(
            source=" ".join(["offline", *_source(entry)]), backend=entry.get("backend"), mode="offline",
            level=entry["batch_size"], images_per_request=entry["batch_size"],
            throughput_ips=entry["throughput_ips"], throughput_rps=entry["throughput_ips"] / entry["batch_size"],
            server_cpu_ms_per_image=entry.get("cpu_ms_per_image"),
            **{f"latency_{k}_ms": entry["latency_ms"][k] for k in LATENCY_KEYS}))
    return rows


def _source(entry: dict) -> List[str]:
    """[runtime, precision] of a --compare-runtimes row, [backend label] for a served backend's own baseline."""
    return [entry["runtime"], entry["precision"]] if "runtime" in entry else [entry.get("backend") or "server"]


def cpu_ms_per_image(run: dict, side: str):
    """A run's CPU ms per image of the "server" or the "client" (the load generator), None if not measured."""
    return run.get("cpu_ms_per_image", {}).get(side)


def write_csv(report: dict, path: Path) -> None:
    """The CSV rows of the report."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(csv_rows(report))


def plot(report: dict, path: Path) -> None:
    """The report's figure (draw) as a PNG at `path`; nothing when no run has a latency."""
    figure = draw(report)
    if figure is not None:
        figure.savefig(path, dpi=110)
        plt.close(figure)


def draw(report: dict) -> Optional[Figure]:
    """One column per (load mode, images per request); rows: throughput, p50 and p99 latency, efficiency.

    One series per server and protocol: a colour per server (a colour family per backend, a shade per
    max batch size), a marker per protocol. Each server's throughput is drawn beside its own backend's
    offline baseline at the batch size it could form at each level (dotted, same colour).
    """
    panels = panel_series(report["runs"])
    if not panels:
        return None
    styles = series_styles(report["runs"])
    offline = offline_throughput(report["offline"])
    figure, axes = plt.subplots(len(ROWS), len(panels), figsize=(5.5 * len(panels) + 1, 14), squeeze=False,
                                sharex="col")
    for column, ((mode, images_per_request), by_series) in enumerate(panels.items()):
        drawn_offline = set()
        for series, runs in by_series.items():
            colour, marker = styles[series]
            _plot_series(axes[:, column], runs, mode, colour, marker)
            if _server(runs[0]) not in drawn_offline:  # once per server: its protocols share the offline points
                drawn_offline.add(_server(runs[0]))
                _plot_offline(axes[0, column], runs, mode, colour, offline)
        axes[0, column].set_title(f"{images_per_request} image{'' if images_per_request == 1 else 's'} per request")
        _style_column(axes[:, column], [run[mode] for runs in by_series.values() for run in runs], mode)
    server = report.get("server", {})
    backends = ", ".join(report.get("backends", [])) or server.get("backend", "?")
    generators = " and ".join(sorted({run.get("load_generator", "python") for run in report["runs"]}))
    figure.suptitle(f"{server.get('name', '?')} v{server.get('version', '?')}: {backends} (load: {generators})",
                    y=0.995, fontsize=13)
    handles = _legend(report["runs"], styles, bool(offline))
    columns = _legend_columns(handles, len(panels))
    figure.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.975), ncol=columns,
                  fontsize=9, frameon=False)
    skipped = "; ".join(f"{entry['backend']}: {entry['reason']}" for entry in report.get("skipped", []))
    if skipped:
        figure.text(0.5, 0.005, f"skipped {skipped}", ha="center", va="bottom", fontsize=8, wrap=True)
    figure.tight_layout(rect=(0, 0.02 if skipped else 0, 1, 0.975 - 0.018 * -(-len(handles) // columns)))
    return figure


ROWS = ("throughput (images/s)", "p50 latency (ms)", "p99 latency (ms)", "efficiency (server / offline)")
BACKEND_COLOURS = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys")
PROTOCOL_MARKERS = ("o", "s", "^", "D", "v")


def panel_series(runs: List[dict]) -> Dict[tuple, Dict[str, List[dict]]]:
    """Runs with a latency by (mode, images per request), then by server, in load order: a column, a series."""
    panels: Dict[tuple, Dict[str, List[dict]]] = {}
    for run in runs:
        if run["latency_ms"]["p50"] is not None:
            key = (run["mode"], run["images_per_request"])
            panels.setdefault(key, {}).setdefault(run["server"], []).append(run)
    return dict(sorted(panels.items(), key=lambda item: (item[0][0] != "concurrency", item[0][1])))


def _server(run: dict) -> Tuple[Optional[str], Optional[int]]:
    """The server a run measured: (backend label, max batch size)."""
    return run.get("backend"), run.get("max_batch_size")


def _server_name(server: Tuple[Optional[str], Optional[int]]) -> str:
    backend, max_batch_size = server
    return " ".join(part for part in (backend or "server", max_batch_size and f"mbs{max_batch_size}") if part)


def series_styles(runs: List[dict]) -> Dict[str, Tuple[tuple, str]]:
    """(colour, marker) per series: a colour map per backend shaded by max batch size, a marker per protocol."""
    servers = list(dict.fromkeys(map(_server, runs)))
    backends = list(dict.fromkeys(backend for backend, _ in servers))
    protocols = list(dict.fromkeys(run.get("protocol") for run in runs))
    colours = {}
    for index, backend in enumerate(backends):
        own = [server for server in servers if server[0] == backend]
        shades = [0.75] if len(own) == 1 else [0.5 + 0.45 * i / (len(own) - 1) for i in range(len(own))]
        cmap = plt.get_cmap(BACKEND_COLOURS[index % len(BACKEND_COLOURS)])
        colours.update({server: cmap(shade) for server, shade in zip(own, shades)})
    return {run["server"]: (colours[_server(run)], PROTOCOL_MARKERS[protocols.index(run.get("protocol"))
                                                                   % len(PROTOCOL_MARKERS)]) for run in runs}


def _plot_series(axes, runs: List[dict], mode: str, colour, marker: str) -> None:
    """A series in one column: img/s, p50, p99 and efficiency against the load level."""
    throughput, p50, p99, efficiency = axes
    levels = [run[mode] for run in runs]
    throughput.plot(levels, [run["throughput_ips"] for run in runs], "-", marker=marker, color=colour)
    p50.plot(levels, [run["latency_ms"]["p50"] for run in runs], "-", marker=marker, color=colour)
    p99.plot(levels, [run["latency_ms"]["p99"] for run in runs], "-", marker=marker, color=colour)
    rated = [(run[mode], run["efficiency"]) for run in runs if run.get("efficiency") is not None]
    if rated:
        efficiency.plot(*zip(*rated), "-", marker=marker, color=colour)


def _plot_offline(throughput, runs: List[dict], mode: str, colour, offline: dict) -> None:
    """The offline img/s of the runs' own backend at the batch size each level could form: stars, dotted."""
    matched = [(run[mode], offline[(run.get("backend"), run.get("offline_batch_size"))]) for run in runs
               if (run.get("backend"), run.get("offline_batch_size")) in offline]
    if matched:
        throughput.plot(*zip(*matched), "*:", color=colour, markersize=11, linewidth=1.5)


def _style_column(axes, levels: List[float], mode: str) -> None:
    """Log-2 load axis ticked at the measured levels; labelled rows; log latency; a line at efficiency 1."""
    for row, label in zip(axes, ROWS):
        row.set_ylabel(label)
        row.set_xscale("log", base=2)
        row.grid(True, alpha=0.3)
    throughput, p50, p99, efficiency = axes
    for latency in (p50, p99):  # log scale ticked at 1, 2, 5 x 10^n, plain numbers
        latency.set_yscale("log")
        latency.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        latency.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        latency.yaxis.set_minor_locator(ticker.NullLocator())
    throughput.set_ylim(bottom=0)
    efficiency.set_ylim(bottom=0)
    efficiency.axhline(1.0, color="grey", linewidth=0.8)
    efficiency.set_xlabel("concurrency (requests in flight)" if mode == "concurrency" else "offered load (requests/s)")
    ticks = sorted(set(levels))
    efficiency.set_xticks(ticks)
    efficiency.set_xticklabels([f"{tick:g}" for tick in ticks])
    efficiency.xaxis.set_minor_locator(ticker.NullLocator())


def _legend(runs: List[dict], styles: Dict[str, Tuple[tuple, str]], with_offline: bool) -> list:
    """Legend entries: a colour per server, a marker per protocol (when several), the offline style."""
    colours = {_server(run): styles[run["server"]][0] for run in runs}
    handles = [Line2D([], [], color=colour, linewidth=3, label=_server_name(server))
               for server, colour in colours.items()]
    markers = {run.get("protocol"): styles[run["server"]][1] for run in runs}
    if len(markers) > 1:
        handles += [Line2D([], [], color="black", marker=marker, linestyle="none", label=protocol)
                    for protocol, marker in markers.items()]
    if with_offline:
        handles.append(Line2D([], [], color="black", linestyle=":", marker="*", markersize=10,
                              label="offline, own backend, same batch size"))
    return handles


def _legend_columns(handles: list, panels: int) -> int:
    """Legend entries per row: five across two panels or more, two over a single (narrow) one."""
    return min(len(handles), 5 if panels > 1 else 2)


def cell(value, digits: int = 1) -> str:
    """A table cell: floats with `digits` decimals, None as "-", anything else as text."""
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_summary(report: dict) -> str:
    """The report as aligned text tables: server runs, offline baselines, runtimes, skipped backends, accuracy."""
    header = ("server", "mbs", "load", "img/req", "img/s", "req/s", "p50", "p90", "p95", "p99", "max",
              "batch", "flight", "eff", "cpu srv", "cpu cli", "busy", "errors")
    rows = [(run["server"], cell(run.get("max_batch_size")), _level(run), str(run["images_per_request"]),
             cell(run["throughput_ips"]), cell(run["throughput_rps"]),
             *(cell(run["latency_ms"][k]) for k in LATENCY_KEYS), cell(run.get("mean_batch_size")),
             cell(run.get("mean_batches_in_flight"), 2), cell(run.get("efficiency"), 2),
             cell(cpu_ms_per_image(run, "server"), 2), cell(cpu_ms_per_image(run, "client"), 2), cell(run.get("machine_busy"), 2),
             _errors(run["errors"])) for run in report["runs"]]
    lines = ["server runs (latency in ms; batch = mean server batch; flight = mean batches computing as one "
             "starts; eff = img/s / offline img/s of the same backend at the same batch size; cpu = CPU ms per "
             "image of the server and of the load generator (this process, or h2load where the load says so); "
             "busy = share of the machine's cores not idle)"]
    lines += text_table(header, rows)
    if report["offline"]:
        lines += ["", "offline baseline of each backend (same model and backend in-process, no gRPC: "
                  "preprocess + infer)"]
        lines += text_table(("backend", "runtime", "batch", "threads", "img/s", "p50", "p99", "max", "preprocess", "infer",
                         "cpu"), [
            (e.get("backend", "-"), e.get("runtime_version", "-"), str(e["batch_size"]), cell(e.get("threads")),
             cell(e["throughput_ips"]), cell(e["latency_ms"]["p50"]), cell(e["latency_ms"]["p99"]),
             cell(e["latency_ms"]["max"]), cell(e.get("preprocess_ms")), cell(e.get("infer_ms")),
             cell(e.get("cpu_ms_per_image"), 2)) for e in report["offline"]])
    if report.get("runtimes"):
        lines += ["", "runtimes side by side (in-process, same images and preprocessing; served backends first)"]
        lines += text_table(("runtime", "precision", "batch", "threads", "img/s", "p50", "p99", "infer", "cpu"), [
            (e.get("runtime_version", "-") + ("" if "runtime" in e else f" (served: {e.get('backend')})"),
             e.get("precision", "f32"), str(e["batch_size"]), cell(e.get("threads")), cell(e["throughput_ips"]),
             cell(e["latency_ms"]["p50"]), cell(e["latency_ms"]["p99"]), cell(e.get("infer_ms")),
             cell(e.get("cpu_ms_per_image"), 2)) for e in report["offline"] + report["runtimes"]])
    for entry in report.get("skipped", []):
        lines += ["", f"skipped backend {entry['backend']}: {entry['reason']}"]
    cpu = report.get("cpu")
    if cpu:
        lines += ["", f"CPU: {cpu['model']}, {cpu['usable_cores']} usable cores, flags: "
                      f"{', '.join(cpu['flags']) or 'none of interest'}"]
    accuracy = report.get("accuracy_by_server") or {}
    if accuracy:
        first = next(iter(accuracy.values()))
        scored = first["images"]
        if scored < first.get("images_in_data", scored):
            scored = f"{scored} evenly spaced of its {first['images_in_data']}"
        lines += ["", f"accuracy through the server over {first['data']} ({scored} images; failed "
                      "requests count as wrong):"]
        lines += text_table(("server", "top-1", "top-5", "failed"), [
            (series, f"{entry['top1']:.2%} ({entry['top1_correct']})", f"{entry['top5']:.2%} ({entry['top5_correct']})",
             str(entry["failed"])) for series, entry in accuracy.items()])
    return "\n".join(lines)


def _errors(errors: dict) -> str:
    return ", ".join(f"{code} {count}" for code, count in errors.items()) or "0"


def text_table(header, rows) -> List[str]:
    """Rows of cells as aligned lines under the header: the first column left-aligned, the others right."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
            for row in [header, *rows]]
