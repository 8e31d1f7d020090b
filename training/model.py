"""GENet_Res50: ResNet-50 with gather-excite blocks (variants theta-minus, theta, theta-plus)."""
from mindspore import nn, ops
from mindspore.common.initializer import TruncatedNormal

from training.blocks import GEBottleneck, bn_settings, conv_bn, downsampled_side
from training.variants import resolve_flags, variant_flags

__all__ = ["GENetResNet50", "build_model", "count_trainable_parameters", "stage_sides",
           "variant_flags"]

STAGE_BLOCKS = (3, 4, 6, 3)
STAGE_OUT_CHANNELS = (256, 512, 1024, 2048)
STEM_CHANNELS = 64
EXPANSION = 4
STEM_BN = {"eps": 1e-4, "momentum": 0.95}


def stage_sides(image_size):
    """Spatial sides of the four stage outputs (56/28/14/7 at 224)."""
    side = downsampled_side(downsampled_side(image_size))  # stem conv /2, max pool /2
    sides = [side]
    for _ in STAGE_BLOCKS[1:]:
        sides.append(downsampled_side(sides[-1]))
    return sides


def scale_channels(channels, width_multiplier):
    """Channel count scaled by the width multiplier (at least 1)."""
    return max(1, int(round(channels * width_multiplier)))


class GENetResNet50(nn.Cell):
    """ResNet-50 layout (stages [3, 4, 6, 3]) whose bottlenecks carry gather-excite gates."""

    def __init__(self, *, num_classes=1000, image_size=224, extra=True, mlp=True,
                 width_multiplier=1.0, gather_as_conv=False, bn_momentum=None,
                 zero_init_residual=False):
        super().__init__()
        stem_channels = scale_channels(STEM_CHANNELS, width_multiplier)
        self.stem = conv_bn(3, stem_channels, 7, stride=2, bn=bn_settings(STEM_BN, bn_momentum))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="same")
        in_channels = stem_channels
        stages = []
        for index, (blocks, out, side) in enumerate(
                zip(STAGE_BLOCKS, STAGE_OUT_CHANNELS, stage_sides(image_size))):
            out = scale_channels(out, width_multiplier)
            stride = 1 if index == 0 else 2
            stages.append(self._make_stage(in_channels, out, blocks, stride, side,
                                           extra=extra, mlp=mlp, gather_as_conv=gather_as_conv,
                                           bn_momentum=bn_momentum,
                                           zero_init_residual=zero_init_residual))
            in_channels = out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Dense(in_channels, num_classes, weight_init=TruncatedNormal(), has_bias=True)

    @staticmethod
    def _make_stage(in_channels, out_channels, blocks, stride, side, **ge):
        """One stage: the first block changes channels (and stride), the rest keep them."""
        mid = max(1, out_channels // EXPANSION)
        layers = [GEBottleneck(in_channels, mid, out_channels, stride, side, **ge)]
        layers += [GEBottleneck(out_channels, mid, out_channels, 1, side, **ge)
                   for _ in range(blocks - 1)]
        return nn.SequentialCell(layers)

    def construct(self, x):
        x = self.maxpool(self.stem(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(ops.mean(x, (2, 3)))


def build_model(model_cfg, *, for_export=False):
    """Build the network described by a `ModelConfig` (variant, flags, classes, size, width).

    `for_export` builds the full-map depthwise gathers as real depthwise convolutions: the same
    parameters and function, in the form inference runtimes (ONNX, Lite, Ascend) optimise and
    MindSpore Lite's converter accepts; training uses the faster multiply + sum form.
    """
    extra, mlp = resolve_flags(model_cfg.variant, model_cfg.extra, model_cfg.mlp)
    return GENetResNet50(num_classes=model_cfg.num_classes, image_size=model_cfg.image_size,
                         extra=extra, mlp=mlp, width_multiplier=model_cfg.width_multiplier,
                         gather_as_conv=for_export, bn_momentum=model_cfg.bn_momentum,
                         zero_init_residual=model_cfg.zero_init_residual)


def count_trainable_parameters(network):
    """Number of trainable scalars (BN moving statistics are not trainable)."""
    total = 0
    for param in network.trainable_params():
        size = 1
        for dim in param.shape:
            size *= dim
        total += size
    return total
