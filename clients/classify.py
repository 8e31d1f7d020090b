"""Command line: classify image files against a server and print each image's top-k.

    python -m clients.classify --target 127.0.0.1:8500 cat.jpg dog.png [--top-k 3] [--json]
"""
import argparse
import json
import sys
from typing import List, Optional, Sequence

from clients.client import ClassifierClient, ClientError
from clients.options import add_connection_arguments, client_from_args


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line options."""
    parser = argparse.ArgumentParser(prog="python -m clients.classify", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, BMP, ...)")
    parser.add_argument("--top-k", type=int, default=5, help="predictions per image (default 5)")
    parser.add_argument("--model-version", default="", help="model version to use (default: the latest)")
    parser.add_argument("--images-per-request", type=int, default=16, help="images sent per call (default 16)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--wait-ready", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to SECONDS for the server to report SERVING (default: don't wait)")
    add_connection_arguments(parser)
    return parser.parse_args(argv)


def classify_files(client: ClassifierClient, args: argparse.Namespace) -> dict:
    """Every image's predictions, requested in chunks of --images-per-request, as a JSON-ready dict."""
    results, model = [], {}
    step = max(args.images_per_request, 1)
    for start in range(0, len(args.images), step):
        chunk = args.images[start:start + step]
        try:
            result = client.classify(chunk, args.top_k, args.model_version)
        except ClientError as error:
            raise ClientError(error.code, f"{error.details} (request of {_describe(chunk)})") from None
        model = {"model_name": result.model_name, "model_version": result.model_version}
        results.extend(
            {"image": image, "predictions": [vars(p) for p in predictions]}
            for image, predictions in zip(chunk, result.predictions)
        )
    return dict(model, results=results)


def _describe(chunk: List[str]) -> str:
    return ", ".join(chunk) if len(chunk) <= 3 else f"{chunk[0]} ... {chunk[-1]}, {len(chunk)} images"


def format_table(report: dict) -> str:
    """The predictions as an aligned text table, one row per (image, rank)."""
    header = ("image", "rank", "class_id", "label", "score")
    rows = []
    for entry in report["results"]:
        for rank, prediction in enumerate(entry["predictions"], 1):
            image = entry["image"] if rank == 1 else ""
            score = f"{prediction['score']:.4f}"
            rows.append((image, str(rank), str(prediction["class_id"]), prediction["label"], score))
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    right_aligned = {1, 2, 4}

    def line(row):
        cells = [c.rjust(w) if i in right_aligned else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    title = f"model {report['model_name']} version {report['model_version']}"
    return "\n".join([title, line(header)] + [line(row) for row in rows])


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit status (0 ok, 1 a failed call or unreadable input)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        with client_from_args(args) as client:
            if args.wait_ready > 0:
                client.wait_until_serving(args.wait_ready)
            report = classify_files(client, args)
    except ClientError as error:
        print(f"error: {', '.join(args.target)}: {error}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
