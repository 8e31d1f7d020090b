"""The network: checkpoint loading (missing, corrupt, mismatching, broken weights fail with clear
messages) and BatchNorm calibration of a random-initialised network."""
import mindspore as ms
import numpy as np
import pytest

from export.errors import ExportError
from export.network import load_network, random_network, read_checkpoint
from export.samples import preprocessed_images
from training.config import load_config


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_run_dir):
    """The tiny network's checkpoint, saved with training state beside the weights."""
    return tiny_run_dir / "final.ckpt"


def _model(tiny_config, *overrides):
    return load_config(tiny_config, overrides).model


def test_matching_checkpoint_loads_its_weights(tiny_config, tiny_checkpoint):
    network = load_network(_model(tiny_config), read_checkpoint(tiny_checkpoint), tiny_checkpoint)
    saved = ms.load_checkpoint(str(tiny_checkpoint))
    assert (network.fc.weight.asnumpy() == saved["fc.weight"].asnumpy()).all()


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(ExportError, match="checkpoint not found: .*nothing.ckpt"):
        read_checkpoint(tmp_path / "nothing.ckpt")


def test_corrupt_checkpoint_is_named(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ExportError, match="bad.ckpt is not a readable MindSpore checkpoint"):
        read_checkpoint(bad)


def test_class_count_mismatch_names_parameters_and_shapes(tiny_config, tiny_checkpoint):
    params = read_checkpoint(tiny_checkpoint)
    with pytest.raises(ExportError) as error:
        load_network(_model(tiny_config, "model.num_classes=5"), params, tiny_checkpoint)
    message = str(error.value)
    assert "does not match the model config" in message and "5 classes" in message
    assert "2 shape mismatch" in message
    assert "fc.weight [10, 256] (model needs [5, 256])" in message
    assert "fc.bias [10] (model needs [5])" in message


def test_variant_mismatch_lists_missing_and_unexpected_parameters(tiny_config, tiny_checkpoint):
    params = read_checkpoint(tiny_checkpoint)
    with pytest.raises(ExportError) as error:
        load_network(_model(tiny_config, "model.variant=theta_minus"), params, tiny_checkpoint)
    message = str(error.value)
    assert "unexpected: layer1.0." in message
    assert "missing" not in message  # theta-minus is theta without the learned gather weights
    assert "epoch_num" not in message and "moments" not in message


def test_checkpoint_with_nan_weights_is_refused_naming_them(tiny_config, tiny_checkpoint):
    params = read_checkpoint(tiny_checkpoint)
    weight = params["fc.weight"].asnumpy().copy()
    weight[0, 0] = np.nan
    params["fc.weight"].set_data(ms.Tensor(weight))
    with pytest.raises(ExportError, match=r"final.ckpt holds NaN or inf in 1 parameters "
                                          r"\(fc.weight\): training diverged"):
        load_network(_model(tiny_config), params, tiny_checkpoint)


def test_calibrated_batchnorm_holds_the_statistics_of_its_inputs(tiny_config, export_seed):
    model = _model(tiny_config)
    images, _ = preprocessed_images(model.image_size)
    network = random_network(model, export_seed, images)
    norms = [(name, cell) for name, cell in network.cells_and_names()
             if isinstance(cell, ms.nn.BatchNorm2d)]
    seen = {}
    for name, cell in norms:
        cell.register_forward_hook(lambda _c, inputs, _o, name=name:
                                   seen.__setitem__(name, inputs[0].asnumpy()))
    network(ms.Tensor(images))  # eval mode: each BN normalises with its moving statistics
    assert len(seen) == len(norms) > 50
    for name, cell in norms:
        mean, var = seen[name].mean(axis=(0, 2, 3)), seen[name].var(axis=(0, 2, 3))
        std = np.sqrt(var + cell.eps)
        assert np.max(np.abs(cell.moving_mean.asnumpy() - mean) / std) < 1e-4, name
        assert np.allclose(cell.moving_variance.asnumpy(), var, rtol=1e-3, atol=1e-6), name
