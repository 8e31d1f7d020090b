"""One export: network -> model files -> verification -> labels + manifest -> published version."""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from export import ascend, formats, manifest, repository
from export.errors import ExportError
from export.network import load_network, random_network, read_checkpoint
from export.samples import preprocessed_images, verification_batches
from export.verify import BATCH_SIZES, TOLERANCE, logit_scale, reference_logits, verify_files
from modelrepo.checksums import sha256_of
from modelrepo.manifest import write_labels, write_manifest
from training.config import load_config
from training.presets import EvalPreset

CALIBRATION_IMAGES = 32
"""Most images BatchNorm calibration uses (they run as one batch)."""


@dataclass(frozen=True)
class ExportRequest:
    """What to export and where; `ckpt=None` means a random-initialised network."""

    config: Path
    """Training config (YAML) describing the network."""
    labels: Optional[Path]
    """Class names, one per line; None: class_0 .. class_{n-1} (random init only)."""
    ckpt: Optional[Path] = None
    """Checkpoint to export; None exports random weights drawn with `seed`."""
    seed: int = 0
    """Seed of the random initialisation."""
    calibrate_bn: bool = False
    """Random init only: set BatchNorm statistics from real images (`calibration_images`)."""
    calibration_images: Optional[Path] = None
    """Folder of images for `calibrate_bn`; None: the bundled photographs verification uses."""
    overrides: Tuple[str, ...] = ()
    """`key=value` config overrides."""
    name: str = "genet_res50"
    """Model name: the folder under the repository."""
    repository: Path = Path("models")
    """Model repository root."""
    formats: Tuple[str, ...] = formats.ALL_FORMATS
    """Formats to write, in any order."""
    formats_explicit: bool = False
    """True when the user chose the formats: an unavailable one is then an error."""
    aipp: bool = False
    """Fold mean/std into the OM model for uint8 RGB input (Ascend AIPP)."""
    soc_version: str = ascend.DEFAULT_SOC_VERSION
    """Ascend SoC passed to atc."""
    om_batch_sizes: Tuple[int, ...] = ascend.DEFAULT_OM_BATCH_SIZES
    """Batch sizes compiled into the OM model."""
    verify_images: Optional[Path] = None
    """Folder of images for verification; None: scikit-image's bundled photographs."""
    tolerance: float = TOLERANCE
    """Largest accepted max |logit difference| / max |logit| between a file and the network."""


def run_export(request):
    """Export, verify and publish; returns the new version directory."""
    params = read_checkpoint(request.ckpt) if request.ckpt is not None else None
    model_cfg = _load_model_config(request)
    plan, skipped = formats.plan(request.formats, explicit=request.formats_explicit)
    staging = repository.create_staging(request.repository, request.name)
    try:
        network, source = _network(request, model_cfg, params)
        labels = read_labels(request.labels, model_cfg.num_classes)
        batches, inputs = verification_batches(model_cfg.image_size, BATCH_SIZES,
                                               request.verify_images)
        reference = reference_logits(network, batches)  # refuses NaN/inf before writing anything
        preprocessing = EvalPreset(image_size=model_cfg.image_size).to_manifest()
        produced = formats.produce(network, model_cfg, plan, staging, request, preprocessing)
        results = verify_files(reference, produced.verifiable(staging), batches, request.tolerance)
        write_labels(staging, labels)
        verification = {"inputs": inputs, "batch_sizes": list(BATCH_SIZES),
                        "tolerance": request.tolerance, "tolerance_kind": "relative",
                        "reference_max_abs_logit": logit_scale(reference), "results": results}

        def prepare(version):
            write_manifest(staging, manifest.build_manifest(
                name=request.name, version=version, model_cfg=model_cfg,
                preprocessing=preprocessing, files=produced.entries(staging),
                skipped=skipped, source=source, runtime_versions=produced.versions,
                verification=verification))

        return repository.publish(staging, prepare)
    finally:
        if staging.exists():
            repository.discard(staging)


def read_labels(path, num_classes):
    """Class names from `path` (one per line), or class_0..class_{n-1}; must match num_classes."""
    if path is None:
        return [f"class_{i}" for i in range(num_classes)]
    try:
        labels = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ExportError(f"cannot read labels {path}: {exc}") from None
    labels = [line.strip() for line in labels if line.strip()]
    if len(labels) != num_classes:
        raise ExportError(f"{path} has {len(labels)} labels but the model has {num_classes} classes")
    return labels


def _load_model_config(request):
    """The model section of the training config, overrides applied."""
    try:
        return load_config(request.config, request.overrides).model
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot load config {request.config}: {exc}") from None


def _network(request, model_cfg, params):
    """The network and its `source_checkpoint` manifest entry."""
    if request.ckpt is None:
        source = {"path": None, "sha256": "random-init", "seed": request.seed}
        if not request.calibrate_bn:
            return random_network(model_cfg, request.seed), source
        images, described = preprocessed_images(model_cfg.image_size, request.calibration_images,
                                                limit=CALIBRATION_IMAGES)
        source["bn_calibration"] = described
        return random_network(model_cfg, request.seed, images), source
    network = load_network(model_cfg, params, request.ckpt)
    source = {"path": os.fspath(request.ckpt), "sha256": sha256_of(request.ckpt)}
    return network, source
