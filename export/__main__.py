"""Command line: export a checkpoint (or a random-initialised network) to a new model version.

    python -m export --ckpt runs/demo/final.ckpt [--name genet_res50] [--repository models]
    python -m export --random-init --config training/configs/demo.yaml [model.width_multiplier=0.125]
    python -m export --random-init --calibrate-bn --config training/configs/theta_plus.yaml

The last line printed is the new version directory; errors print one line and exit 1.
"""
import argparse
import logging
import sys
from pathlib import Path

from export import ascend
from export.errors import ExportError
from export.formats import ALL_FORMATS
from export.pipeline import ExportRequest, run_export
from export.verify import TOLERANCE


def build_parser():
    """The argument parser of `python -m export`."""
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", type=Path, help="checkpoint to export")
    source.add_argument("--random-init", action="store_true",
                        help="export a seeded random-initialised network (needs --config)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --random-init (default 0)")
    parser.add_argument("--calibrate-bn", nargs="?", const=True, type=Path, metavar="FOLDER",
                        help="with --random-init: set every BatchNorm's statistics to those of its "
                             "input on the images of FOLDER (default: the bundled photographs "
                             "verification uses), so activations and logits are realistic; write "
                             "--calibrate-bn=FOLDER or put it before another option")
    parser.add_argument("--config", type=Path,
                        help="training config (default: config.yaml beside the checkpoint)")
    parser.add_argument("--labels", type=Path,
                        help="class names, one per line (default: labels.txt beside the "
                             "checkpoint; class_0.. for --random-init)")
    parser.add_argument("--name", default="genet_res50", help="model name (default genet_res50)")
    parser.add_argument("--repository", type=Path, default=Path("models"),
                        help="model repository root (default models)")
    parser.add_argument("--formats", help=f"comma-separated subset of {','.join(ALL_FORMATS)} "
                                          "(default: all; unavailable ones are skipped)")
    parser.add_argument("--aipp", action="store_true",
                        help="OM: fold mean/std into the model for uint8 RGB NHWC input")
    parser.add_argument("--soc-version", default=ascend.DEFAULT_SOC_VERSION,
                        help=f"OM: Ascend SoC for atc (default {ascend.DEFAULT_SOC_VERSION})")
    parser.add_argument("--om-batch-sizes", default=",".join(map(str, ascend.DEFAULT_OM_BATCH_SIZES)),
                        help="OM: batch sizes compiled in (default %(default)s)")
    parser.add_argument("--verify-images", type=Path,
                        help="folder of images to verify with (default: scikit-image's photos)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help="largest accepted logit difference per file, RELATIVE to the largest "
                             "|logit| of the checkpoint network on the verification images: "
                             "max |diff| / max |logit| (default %(default)g); the top-1 class "
                             "must agree too")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser


def request_from_args(args, parser):
    """Turn parsed arguments into an ExportRequest (defaults beside the checkpoint)."""
    if args.random_init and args.config is None:
        parser.error("--random-init needs --config")
    if args.calibrate_bn is not None and not args.random_init:
        parser.error("--calibrate-bn applies to --random-init only (a checkpoint has its statistics)")
    if args.tolerance <= 0:
        parser.error(f"--tolerance must be positive, got {args.tolerance}")
    config, labels = args.config, args.labels
    if args.ckpt is not None:
        config = config or args.ckpt.parent / "config.yaml"
        labels = labels or args.ckpt.parent / "labels.txt"
    try:
        om_batch_sizes = tuple(int(b) for b in args.om_batch_sizes.split(","))
    except ValueError:
        parser.error(f"--om-batch-sizes must be integers, got {args.om_batch_sizes!r}")
    formats = tuple(f.strip() for f in args.formats.split(",")) if args.formats else ALL_FORMATS
    calibration_images = args.calibrate_bn if isinstance(args.calibrate_bn, Path) else None
    return ExportRequest(config=config, labels=labels, ckpt=args.ckpt, seed=args.seed,
                         calibrate_bn=args.calibrate_bn is not None,
                         calibration_images=calibration_images,
                         overrides=tuple(args.overrides), name=args.name,
                         repository=args.repository, formats=formats,
                         formats_explicit=args.formats is not None, aipp=args.aipp,
                         soc_version=args.soc_version, om_batch_sizes=om_batch_sizes,
                         verify_images=args.verify_images, tolerance=args.tolerance)


def main(argv=None):
    """Run the export; prints the version directory last, or one error line (exit 1)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    request = request_from_args(args, parser)
    try:
        version_dir = run_export(request)
    except ExportError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    print(version_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
