"""Config loading: YAML, overrides, type parsing, unknown keys and values, round trip."""
from pathlib import Path

import pytest

from training.config import Config, load_config, save_config

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


@pytest.mark.parametrize("name", ["theta_minus", "theta", "theta_plus", "demo", "theta_plus_fmnist224"])
def test_shipped_configs_load_and_round_trip(name, tmp_path):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_reference_recipes():
    minus = load_config(CONFIGS / "theta_minus.yaml")
    plus = load_config(CONFIGS / "theta_plus.yaml")
    assert (minus.train.epochs, minus.train.lr_schedule) == (220, "cosine")
    assert (plus.train.epochs, plus.train.lr_schedule) == (150, "linear")
    for cfg in (minus, plus, load_config(CONFIGS / "theta.yaml")):
        t = cfg.train
        assert (t.batch_size, t.lr_init, t.lr_end, t.weight_decay) == (256, 0.8, 0.0, 1e-4)
        assert (t.label_smoothing, t.loss_scale, t.amp_level, t.seed) == (0.1, 1024, "O2", 1)
        assert (cfg.checkpoint.every_epochs, cfg.checkpoint.keep) == (5, 5)


@pytest.mark.parametrize("variant, flags", [
    ("theta_minus", (False, False)), ("theta", (True, False)), ("theta_plus", (True, True))])
def test_variant_fills_flags(variant, flags):
    model = load_config(overrides=[f"model.variant={variant}"]).model
    assert (model.extra, model.mlp) == flags


def test_overrides_parse_types():
    cfg = load_config(CONFIGS / "demo.yaml", [
        "train.epochs=3", "train.lr_init=1e-2", "model.variant=custom", "model.extra=false",
        "model.mlp=True", "distributed=yes", "run.name=abc"])
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.train.lr_init == pytest.approx(0.01)
    assert (cfg.model.extra, cfg.model.mlp) == (False, True)
    assert cfg.train.distributed is True
    assert cfg.run.name == "abc"


def test_bool_string_is_not_truthy():
    assert load_config(overrides=["train.distributed=False"]).train.distributed is False


@pytest.mark.parametrize("override, message", [
    ("train.epoch=3", "valid: epochs, batch_size"),
    ("trainer.epochs=3", "unknown section 'trainer'"),
    ("nonsense=1", "unknown key 'nonsense'"),
    ("train.lr_schedule=step", "valid: linear, cosine"),
    ("model.variant=theta_max", "valid: theta_minus, theta, theta_plus, custom"),
    ("train.device_target=TPU", "valid: CPU, Ascend, GPU"),
    ("train.epochs=three", "expected int"),
    ("train.epochs=2.5", "expected int"),
    ("train.distributed=maybe", "expected bool"),
    ("train.epochs", "key=value"),
    ("train.batch_size=0", "train.batch_size must be >= 1"),
    ("data.val_images=-1", "data.val_images must be >= 0"),
])
def test_bad_overrides_fail_loudly(override, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        load_config(overrides=[override])


def test_unknown_yaml_key_is_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 3\n  warmup: 1\n")
    with pytest.raises(ValueError, match="unknown key 'warmup' in section 'train'; valid: epochs"):
        load_config(path)


def test_flags_conflicting_with_variant_are_rejected():
    with pytest.raises(ValueError, match="conflicts with variant 'theta_plus'"):
        load_config(overrides=["model.variant=theta_plus", "model.mlp=false"])
    with pytest.raises(ValueError, match="needs both"):
        load_config(overrides=["model.variant=custom", "model.mlp=false"])


def test_defaults_are_the_reference_model():
    cfg = load_config()
    assert cfg == load_config(overrides=[]) and isinstance(cfg, Config)
    model = cfg.model
    assert (model.num_classes, model.image_size, model.width_multiplier) == (1000, 224, 1.0)
