"""Training configuration: validated dataclasses loaded from YAML, then `key=value` overrides.

`load_config(path, overrides)` reads a YAML file, applies command-line overrides such as
`train.epochs=3` or `model.extra=false` (values are parsed as YAML; a bare key like
`epochs=3` works when only one section has it) and returns a validated, frozen `Config`.
Unknown sections, keys and option values fail loudly and list the valid ones.
`save_config` writes the resolved configuration; loading that file gives the same `Config`.
"""
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from training.variants import CUSTOM_VARIANT, VARIANTS, resolve_flags


def _choice(default, choices):
    return field(default=default, metadata={"choices": tuple(choices)})


@dataclass(frozen=True)
class ModelConfig:
    """The network."""

    variant: str = _choice("theta_plus", (*VARIANTS, CUSTOM_VARIANT))
    """theta_minus (extra=False, mlp=False), theta (True, False), theta_plus (True, True), custom."""
    extra: Optional[bool] = None
    """Learned depthwise gather (GE-theta); filled from the variant, required for custom."""
    mlp: Optional[bool] = None
    """1x1 bottleneck MLP in the excite; filled from the variant, required for custom."""
    num_classes: int = 1000
    """Number of output classes; must equal the number of class folders of the data."""
    image_size: int = 224
    """Square input side; it sizes the depthwise gather kernels."""
    width_multiplier: float = 1.0
    """Scales every channel count (1.0 = the reference ResNet-50 widths)."""
    bn_momentum: Optional[float] = None
    """Weight of the old value in every BN's running statistics; None keeps the reference's
    (stem 0.95, blocks 0.997, gather 0.9). Short runs need less: after 600 steps at 0.997 the
    running statistics still hold 15% of their initial values, and evaluation suffers."""
    zero_init_residual: bool = False
    """Start the last BN scale of every bottleneck body at 0, so each block begins as its
    shortcut (Goyal et al. 2017); speeds up short runs. False keeps the reference's init (1)."""


@dataclass(frozen=True)
class DataConfig:
    """The data set: an ImageNet-layout folder <root>/<split>/<class>/<image>."""

    root: str = "data/imagenet"
    """Folder holding the train and val splits."""
    train_dir: str = "train"
    """Training split, relative to root."""
    val_dir: str = "val"
    """Validation split, relative to root."""
    num_workers: int = 2
    """Parallel workers of the data pipeline."""
    crop_scale_min: float = 0.08
    """Smallest area fraction of the training RandomCropDecodeResize (the reference's 0.08)."""
    train_images_per_epoch: int = 0
    """Train on this many images of the shuffled split per epoch (a new draw each epoch); 0 = all."""
    val_images: int = 0
    """Score this many validation images at the end of training, evenly spaced over the split in
    file order so each class keeps its share; 0 = all."""


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation recipe (REFERENCE.md section 3)."""

    epochs: int = 150
    """Number of training epochs."""
    batch_size: int = 256
    """Images per device and step (also the evaluation batch size)."""
    lr_init: float = 0.8
    """Learning rate at the start of the decay (the peak after warmup)."""
    lr_end: float = 0.0
    """Final learning rate of the linear schedule (the cosine schedule ignores it)."""
    lr_schedule: str = _choice("linear", ("linear", "cosine"))
    """Per-step decay: linear, or the reference's 'cosine' (theta-minus)."""
    warmup_epochs: float = 0.0
    """Linear warmup length in epochs (fractions allowed); 0 = the reference (no warmup)."""
    momentum: float = 0.9
    """Momentum of the SGD optimiser."""
    weight_decay: float = 1e-4
    """L2 weight decay on conv and dense weights only (not BN gamma/beta, not biases)."""
    label_smoothing: float = 0.1
    """Smoothing factor: target 1 - s on the true class, s / classes on the others."""
    loss_scale: float = 1024.0
    """Fixed loss scale (overflowing steps are not skipped)."""
    amp_level: str = _choice("O2", ("O0", "O1", "O2", "O3"))
    """Mixed precision level, applied on Ascend only (CPU and GPU train in float32)."""
    seed: int = 1
    """Global random seed."""
    device_target: str = _choice("Ascend", ("CPU", "Ascend", "GPU"))
    """MindSpore backend."""
    distributed: bool = False
    """Data-parallel training over all workers started by msrun (gradient mean)."""
    log_every_steps: int = 50
    """Progress line and log record every this many steps."""


@dataclass(frozen=True)
class CheckpointConfig:
    """Periodic checkpoints (rank 0 only); final.ckpt is always written."""

    every_epochs: int = 5
    """Save every this many epochs (and after the last one)."""
    keep: int = 5
    """Keep only the newest this many periodic checkpoints."""


@dataclass(frozen=True)
class RunConfig:
    """Where the run is written."""

    name: str = "genet"
    """Run name: the run directory is <output_dir>/<name>."""
    output_dir: str = "runs"
    """Folder holding all runs and the `latest` symlink."""
    resume: bool = False
    """Continue the run <output_dir>/<name> from its newest complete checkpoint."""


@dataclass(frozen=True)
class Config:
    """The whole configuration of a training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    run: RunConfig = field(default_factory=RunConfig)


SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(Config)}


def load_config(path=None, overrides=()):
    """Read the YAML file at `path` (or start from defaults), apply overrides, validate."""
    raw = {}
    if path is not None:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    for item in overrides:
        section, key, value = parse_override(item)
        raw.setdefault(section, {})
        if raw[section] is None:
            raw[section] = {}
        raw[section][key] = value
    return config_from_dict(raw)


def save_config(cfg, path):
    """Write the resolved configuration as YAML."""
    Path(path).write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))


def parse_override(item):
    """Split `section.key=value` (or an unambiguous bare `key=value`) into its parts."""
    if "=" not in item:
        raise ValueError(f"override {item!r} is not of the form key=value")
    dotted, text = item.split("=", 1)
    parts = dotted.strip().split(".")
    if len(parts) == 1:
        section = _section_of(parts[0])
    elif len(parts) == 2:
        section = parts[0]
        _check_name(section, SECTIONS, "section")
        _check_name(parts[1], _field_names(SECTIONS[section]), "key", f" in section {section!r}")
    else:
        raise ValueError(f"override key {dotted!r} must be <section>.<key>")
    return section, parts[-1], yaml.safe_load(text) if text.strip() else None


def config_from_dict(raw):
    """Build and validate a Config from nested dicts (as read from YAML)."""
    _check_keys(raw, SECTIONS, "section")
    sections = {}
    for name, cls in SECTIONS.items():
        values = raw.get(name) or {}
        if not isinstance(values, dict):
            raise ValueError(f"section {name!r} must be a mapping, got {values!r}")
        _check_keys(values, _field_names(cls), "key", f" in section {name!r}")
        sections[name] = cls(**{f.name: _coerce(f"{name}.{f.name}", values[f.name], f)
                                for f in dataclasses.fields(cls) if f.name in values})
    cfg = Config(**sections)
    _validate(cfg)
    extra, mlp = resolve_flags(cfg.model.variant, cfg.model.extra, cfg.model.mlp)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, extra=extra, mlp=mlp))


def describe_fields():
    """Map each `section.key` to its default (for --help listings)."""
    return {f"{s}.{f.name}": f.default
            for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}


def _section_of(key):
    owners = [s for s, cls in SECTIONS.items() if key in _field_names(cls)]
    if len(owners) == 1:
        return owners[0]
    if owners:
        raise ValueError(f"key {key!r} is ambiguous; write one of: {', '.join((f'{s}.{key}' for s in owners))}")
    raise ValueError(f"unknown key {key!r}; valid keys: {', '.join(describe_fields())}")


def _field_names(cls):
    return [f.name for f in dataclasses.fields(cls)]


def _check_name(name, valid, what, where=""):
    if name not in valid:
        raise ValueError(f"unknown {what} {name!r}{where}; valid: {', '.join(valid)}")


def _check_keys(mapping, valid, what, where=""):
    for name in mapping:
        _check_name(name, valid, what, where)


def _coerce(where, value, fld):
    """Check/convert one value against its field's annotated type and choices."""
    kind = fld.type
    optional = typing.get_origin(kind) is typing.Union and type(None) in typing.get_args(kind)
    if optional:
        if value is None:
            return None
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        value = _to_float(value)
        ok = value is not None
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ValueError(f"{where}: expected {kind.__name__}, got {value!r}")
    choices = fld.metadata.get("choices")
    if choices and value not in choices:
        raise ValueError(f"{where}: invalid value {value!r}; valid: {', '.join(choices)}")
    return value


def _to_float(value):
    # YAML 1.1 reads "1e-4" (no dot) as a string.
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _validate(cfg):
    """Range checks that the types alone do not express."""
    checks = [
        ("model.num_classes", cfg.model.num_classes >= 1, ">= 1"),
        ("model.image_size", cfg.model.image_size >= 8, ">= 8"),
        ("model.width_multiplier", cfg.model.width_multiplier > 0, "> 0"),
        ("model.bn_momentum", cfg.model.bn_momentum is None or 0 <= cfg.model.bn_momentum < 1,
         "in [0, 1) or null"),
        ("data.num_workers", cfg.data.num_workers >= 1, ">= 1"),
        ("data.crop_scale_min", 0 < cfg.data.crop_scale_min <= 1, "in (0, 1]"),
        ("data.train_images_per_epoch", cfg.data.train_images_per_epoch >= 0, ">= 0"),
        ("data.val_images", cfg.data.val_images >= 0, ">= 0"),
        ("train.epochs", cfg.train.epochs >= 1, ">= 1"),
        ("train.batch_size", cfg.train.batch_size >= 1, ">= 1"),
        ("train.lr_init", cfg.train.lr_init > 0, "> 0"),
        ("train.lr_end", 0 <= cfg.train.lr_end <= cfg.train.lr_init, "in [0, lr_init]"),
        ("train.warmup_epochs", 0 <= cfg.train.warmup_epochs < cfg.train.epochs, "in [0, epochs)"),
        ("train.weight_decay", cfg.train.weight_decay >= 0, ">= 0"),
        ("train.label_smoothing", 0 <= cfg.train.label_smoothing < 1, "in [0, 1)"),
        ("train.loss_scale", cfg.train.loss_scale >= 1, ">= 1"),
        ("train.log_every_steps", cfg.train.log_every_steps >= 1, ">= 1"),
        ("checkpoint.every_epochs", cfg.checkpoint.every_epochs >= 1, ">= 1"),
        ("checkpoint.keep", cfg.checkpoint.keep >= 1, ">= 1"),
        ("run.name", bool(cfg.run.name) and "/" not in cfg.run.name, "a name without '/'"),
    ]
    for name, ok, rule in checks:
        if not ok:
            raise ValueError(f"{name} must be {rule}")
