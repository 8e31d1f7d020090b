"""Checkpoints written by the MindSpore ModelZoo's GENet_Res50 training load and export.

The ModelZoo's names and shapes are written here from its network definition
(research/cv/GENet_Res50 src/GENet.py, src/GEBlock.py), independently of export/modelzoo.py.
"""
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from export.errors import ExportError
from export.modelzoo import to_project_names
from export.network import load_network, random_network
from tests.export.conftest import REPO_ROOT, write_config
from training.config import load_config
from training.model import build_model

# Our cell names -> the ModelZoo's: top-level cells by prefix, cells inside a block by fragment.
TOP_LEVEL = (("stem.0.", "conv1."), ("stem.1.", "bn1."), ("fc.", "end_point."))
IN_BLOCK = (
    (".body.0.0.", ".conv1.conv."), (".body.0.1.", ".conv1.batchnorm."),
    (".body.1.0.", ".conv2.conv."), (".body.1.1.", ".conv2.batchnorm."),
    (".body.2.0.", ".conv3.conv."), (".body.2.1.", ".conv3.batchnorm."),
    (".shortcut.0.", ".down_layer.conv."), (".shortcut.1.", ".down_layer.batchnorm."),
    (".gather.body.", ".downop."), (".excite.fc.", ".mlpLayer."),
)
# GE_resnet50(class_num, extra, mlp) flags of the ModelZoo -> our config and overrides: the three
# variants its README trains, and its eval.py default (extra False, mlp True).
MODELZOO_FLAGS = {
    (False, False): ("theta_minus", ()),
    (True, False): ("theta", ()),
    (True, True): ("theta_plus", ()),
    (False, True): ("theta_minus", ("model.variant=custom", "model.extra=false", "model.mlp=true")),
}
BN_LEAVES = ("gamma", "beta", "moving_mean", "moving_variance")
# Trainable parameters of the reference at 1000 classes (REFERENCE.md section 1, README).
TRAINABLE = {(False, False): 25_557_032, (True, False): 31_071_272, (True, True): 33_586_216,
             (False, True): 28_071_976}


def modelzoo_name(ours):
    """The ModelZoo's name of our parameter `ours`, by the explicit lists above."""
    for prefix, theirs in TOP_LEVEL:
        if ours.startswith(prefix):
            return theirs + ours[len(prefix):]
    for fragment, theirs in IN_BLOCK:
        if fragment in ours:
            return ours.replace(fragment, theirs, 1)
    raise AssertionError(f"no ModelZoo name for {ours}")


def modelzoo_parameters(extra, mlp, num_classes=1000):
    """{name: shape} of the ModelZoo's GE_resnet50 (224 px: spatial 56/28/14/7 is built in)."""
    params = {"conv1.weight": (64, 3, 7, 7), **_bn("bn1", 64)}
    in_channels = 64
    stages = zip((3, 4, 6, 3), (256, 512, 1024, 2048), (56, 28, 14, 7))
    for stage, (blocks, out, spatial) in enumerate(stages, 1):
        for block in range(blocks):
            prefix, mid = f"layer{stage}.{block}.", out // 4
            for k, (cin, cout, size) in enumerate(((in_channels, mid, 1), (mid, mid, 3),
                                                   (mid, out, 1)), 1):
                params[f"{prefix}conv{k}.conv.weight"] = (cout, cin, size, size)
                params.update(_bn(f"{prefix}conv{k}.batchnorm", cout))
            if block == 0:  # stride 2 or a change of channels
                params[f"{prefix}down_layer.conv.weight"] = (out, in_channels, 1, 1)
                params.update(_bn(f"{prefix}down_layer.batchnorm", out))
            if extra:
                params.update(_downop(prefix, out, spatial))
            if mlp:
                params[f"{prefix}mlpLayer.0.weight"] = (out // 16, out, 1, 1)
                params[f"{prefix}mlpLayer.2.weight"] = (out, out // 16, 1, 1)
            in_channels = out
    params.update({"end_point.weight": (num_classes, 2048), "end_point.bias": (num_classes,)})
    return params


def _downop(prefix, channels, spatial):
    """The gather's cells: [dense 3x3/2 conv, BN,] full-map depthwise conv, BN."""
    cells, index = {}, 0
    if spatial >= 56:
        cells[f"{prefix}downop.0.weight"] = (channels, channels, 3, 3)
        cells.update(_bn(f"{prefix}downop.1", channels))
        spatial, index = spatial // 2, 2
    cells[f"{prefix}downop.{index}.weight"] = (channels, 1, spatial, spatial)
    cells.update(_bn(f"{prefix}downop.{index + 1}", channels))
    return cells


def _bn(cell, channels):
    return {f"{cell}.{leaf}": (channels,) for leaf in BN_LEAVES}


def _shapes(params):
    return {name: tuple(param.shape) for name, param in params.items()}


@pytest.mark.parametrize("extra, mlp", sorted(MODELZOO_FLAGS))
def test_every_modelzoo_parameter_maps_onto_ours_at_the_reference_size(extra, mlp):
    reference = modelzoo_parameters(extra, mlp)
    config, overrides = MODELZOO_FLAGS[extra, mlp]
    model_cfg = load_config(REPO_ROOT / "training" / "configs" / f"{config}.yaml", overrides).model
    ours = _shapes(build_model(model_cfg, for_export=True).parameters_dict())
    assert {modelzoo_name(name): shape for name, shape in ours.items()} == reference
    renamed = to_project_names({name: np.zeros(shape) for name, shape in reference.items()}, "zoo")
    assert _shapes(renamed) == ours
    trainable = sum(int(np.prod(shape)) for name, shape in reference.items()
                    if "moving_" not in name)
    assert trainable == TRAINABLE[extra, mlp]
    if extra:
        assert reference["layer1.0.downop.0.weight"] == (256, 256, 3, 3)
        assert reference["layer1.0.downop.2.weight"] == (256, 1, 28, 28)
        assert reference["layer4.2.downop.0.weight"] == (2048, 1, 7, 7)
    if mlp:
        assert reference["layer1.0.mlpLayer.0.weight"] == (16, 256, 1, 1)


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory):
    """A ModelZoo-named checkpoint of a small theta-plus at 224 px (stage 1 has the dense gather
    conv), with distinct random BN statistics, and the same network under our names."""
    folder = tmp_path_factory.mktemp("zoo")
    config = write_config(folder / "zoo.yaml", variant="theta_plus", image_size=224)
    network = random_network(load_config(config).model, seed=5)
    rng = np.random.default_rng(0)
    for name, param in network.parameters_dict().items():
        if not name.endswith(".weight"):  # BN and bias values would all be alike otherwise
            low = 0.5 if name.endswith("moving_variance") else -0.5
            param.set_data(ms.Tensor(rng.uniform(low, 1.5, param.shape).astype(np.float32)))
    ckpt = folder / "GENet-150_625.ckpt"
    ms.save_checkpoint(_modelzoo_entries(network), str(ckpt))
    return {"config": config, "ckpt": ckpt, "network": network}


def _modelzoo_entries(network, steps=625 * 150):
    """The network under ModelZoo names plus what its train.py's ModelCheckpoint saves besides."""
    params = network.parameters_dict()
    weights = [{"name": modelzoo_name(name), "data": ms.Tensor(param.asnumpy())}
               for name, param in params.items()]
    moments = [{"name": f"moments.{modelzoo_name(name)}",
                "data": ms.Tensor(np.full(param.shape, 0.01, np.float32))}
               for name, param in params.items() if param.requires_grad]
    learning_rate = np.linspace(0.8, 0, steps, dtype=np.float32)
    return (weights + [{"name": "learning_rate", "data": ms.Tensor(learning_rate)},
                       {"name": "momentum", "data": ms.Tensor(np.float32(0.9))}]
            + moments + [{"name": "global_step", "data": ms.Tensor(np.array([steps], np.int32))}])


def test_modelzoo_checkpoint_exports_with_its_weights(zoo_run, tmp_path, export_cli):
    labels = tmp_path / "labels.txt"  # a ModelZoo run has none beside its checkpoint
    labels.write_text("".join(f"class {i}\n" for i in range(10)))
    result = export_cli("--ckpt", zoo_run["ckpt"], "--config", zoo_run["config"], "--labels",
                        labels, "--repository", tmp_path, "--name", "zoo", "--formats", "mindir")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "uses the ModelZoo GENet_Res50 naming" in result.stderr
    model = Path(result.stdout.strip().splitlines()[-1]) / "model.mindir"
    images = np.random.default_rng(1).normal(size=(2, 3, 224, 224)).astype(np.float32)
    exported = ms.nn.GraphCell(ms.load(str(model)))(ms.Tensor(images)).asnumpy()
    expected = zoo_run["network"](ms.Tensor(images)).asnumpy()
    np.testing.assert_allclose(exported, expected, rtol=0, atol=1e-5)


def test_modelzoo_checkpoint_of_another_variant_names_what_is_missing(zoo_run):
    params = ms.load_checkpoint(str(zoo_run["ckpt"]))
    theta_minus = load_config(zoo_run["config"], ["model.variant=theta_minus"]).model
    with pytest.raises(ExportError) as error:
        load_network(theta_minus, params, zoo_run["ckpt"])
    message = str(error.value)
    assert "does not match the model config" in message and "theta_minus" in message
    assert "unexpected: layer1.0.gather.body.0.weight" in message
    assert "learning_rate" not in message and "moments" not in message


def test_checkpoint_of_unknown_naming_is_refused_clearly(tmp_path, zoo_run):
    ckpt = tmp_path / "resnet50.ckpt"  # the ModelZoo's plain ResNet-50 naming
    ms.save_checkpoint([{"name": name, "data": ms.Tensor(np.zeros(2, np.float32))}
                        for name in ("conv1.weight", "bn1.gamma", "layer1.0.conv1.weight",
                                     "end_point.weight")], str(ckpt))
    with pytest.raises(ExportError) as error:
        load_network(load_config(zoo_run["config"]).model, ms.load_checkpoint(str(ckpt)), ckpt)
    message = str(error.value)
    assert "is neither a checkpoint of this project's training (no stem.0.weight)" in message
    assert "nor of the MindSpore ModelZoo's GENet_Res50" in message
    assert "its first parameters: conv1.weight, bn1.gamma" in message
