"""GENet_Res50 structure: parameter counts, gather kernels, BN settings and forward shapes."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from training.blocks import FullMapDepthwise
from training.config import ModelConfig
from training.model import GENetResNet50, build_model, count_trainable_parameters, stage_sides, \
    variant_flags


@pytest.fixture(autouse=True, scope="module")
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)  # the device is the default CPU (fixed once the runtime starts)


@pytest.mark.parametrize("extra, mlp, expected", [
    (False, False, 25_557_032),   # theta-minus (MindSpore-counted reference)
    (False, True, 28_071_976),    # extra False + mlp True: 28.072M analytic
    (True, False, 31_071_272),    # theta: 31.071M analytic
    (True, True, 33_586_216),     # theta-plus (MindSpore-counted reference)
])
def test_trainable_parameters_match_reference(extra, mlp, expected):
    count = count_trainable_parameters(GENetResNet50(extra=extra, mlp=mlp))
    assert count == expected


@pytest.mark.parametrize("variant, flags", [
    ("theta_minus", (False, False)), ("theta", (True, False)), ("theta_plus", (True, True))])
def test_variant_flags(variant, flags):
    assert variant_flags(variant) == flags


def test_unknown_variant_lists_valid_ones():
    with pytest.raises(ValueError, match="valid: theta_minus, theta, theta_plus"):
        variant_flags("theta_max")


def test_stage_sides_follow_image_size():
    assert stage_sides(224) == [56, 28, 14, 7]
    assert stage_sides(64) == [16, 8, 4, 2]
    assert stage_sides(50) == [13, 7, 4, 2]


def _gather_kernels(network):
    """(cell name, kernel (h, w), depthwise?) of every conv inside a gather."""
    kernels = []
    for name, cell in network.cells_and_names():
        if ".gather." not in f".{name}":
            continue
        if isinstance(cell, nn.Conv2d):
            kernels.append((name, tuple(cell.kernel_size), cell.group > 1))
        elif isinstance(cell, FullMapDepthwise):
            kernels.append((name, tuple(cell.weight.shape[2:]), True))
    return kernels


def test_full_map_depthwise_equals_the_depthwise_conv_it_replaces():
    gather = FullMapDepthwise(8, 5)
    conv = nn.Conv2d(8, 8, 5, group=8, pad_mode="valid", has_bias=False)
    conv.weight.set_data(gather.weight.value())
    x = ms.Tensor(np.random.default_rng(0).standard_normal((3, 8, 5, 5)), ms.float32)
    np.testing.assert_allclose(gather(x).asnumpy(), conv(x).asnumpy(), atol=1e-5)
    assert gather.weight.shape == conv.weight.shape


def test_gather_kernels_cover_the_map_at_224():
    network = GENetResNet50(extra=True, mlp=False, width_multiplier=0.125, num_classes=10)
    kernels = {}
    for name, kernel, depthwise in _gather_kernels(network):
        kernels.setdefault(name.split(".")[0], set()).add((kernel, depthwise))
    # stage 1: dense 3x3/2 (56 -> 28) then depthwise 28x28; later stages depthwise only.
    assert kernels == {"layer1": {((3, 3), False), ((28, 28), True)}, "layer2": {((28, 28), True)},
                       "layer3": {((14, 14), True)}, "layer4": {((7, 7), True)}}


def test_gather_kernels_derived_from_small_image_size():
    network = GENetResNet50(extra=True, mlp=True, width_multiplier=0.25, image_size=64,
                            num_classes=10)
    sizes = sorted({kernel[0] for _, kernel, _ in _gather_kernels(network)})
    assert sizes == [2, 4, 8, 16]  # maps below 56 need no dense downsampling conv


def test_batch_norm_settings_follow_reference():
    network = GENetResNet50(extra=True, mlp=True, width_multiplier=0.125, num_classes=10)
    bns = dict((name, cell) for name, cell in network.cells_and_names()
               if isinstance(cell, nn.BatchNorm2d))

    def settings(name):  # MindSpore stores 1 - momentum (momentum = weight of the old value)
        return round(bns[name].eps, 6), round(1.0 - float(bns[name].momentum), 6)
    assert settings("stem.1") == (1e-4, 0.95)
    assert settings("layer1.0.body.0.1") == (1e-5, 0.997)
    assert settings("layer2.0.shortcut.1") == (1e-5, 0.997)
    assert settings("layer1.0.gather.body.1") == (1e-5, 0.9)


def test_forward_shape_at_224():
    network = build_model(ModelConfig(variant="theta_plus", num_classes=7, width_multiplier=0.125))
    network.set_train(False)
    logits = network(ms.Tensor(np.random.rand(2, 3, 224, 224).astype(np.float32)))
    assert logits.shape == (2, 7)
    assert np.isfinite(logits.asnumpy()).all()


@pytest.mark.parametrize("variant, image_size", [("theta_plus", 48), ("theta_minus", 50),
                                                 ("theta", 64)])
def test_forward_shape_at_small_sizes(variant, image_size):
    network = build_model(ModelConfig(variant=variant, num_classes=10, image_size=image_size,
                                      width_multiplier=0.25))
    network.set_train(False)
    logits = network(ms.Tensor(np.random.rand(3, 3, image_size, image_size).astype(np.float32)))
    assert logits.shape == (3, 10)


def test_width_multiplier_scales_channels():
    network = GENetResNet50(extra=False, mlp=False, width_multiplier=0.25, num_classes=10)
    assert network.fc.in_channels == 512
    assert network.stem[0].out_channels == 16


def test_zero_init_residual_starts_every_block_as_its_shortcut():
    network = build_model(ModelConfig(num_classes=10, image_size=48, width_multiplier=0.25,
                                      zero_init_residual=True))
    gammas = {param.name: param.asnumpy() for param in network.get_parameters()
              if param.name.endswith(".gamma")}
    last_body = {name for name in gammas if ".body.2.1." in name}
    assert len(last_body) == 16  # one per bottleneck
    assert all(not gammas[name].any() for name in last_body)
    assert all((gammas[name] == 1).all() for name in set(gammas) - last_body)

    block = network.layer1[1]  # an identity-shortcut block: relu(x) = x for x >= 0
    block.set_train(False)
    x = np.random.rand(2, 64, 12, 12).astype(np.float32)
    np.testing.assert_array_equal(block(ms.Tensor(x)).asnumpy(), x)
