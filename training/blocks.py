"""Building blocks of GENet_Res50: conv + BN units, the gather-excite operator, the bottleneck.

Batch-norm settings follow the reference (REFERENCE.md section 1); MindSpore's `momentum` is
the weight of the old running value, and its default changed after 2.9, so it is always passed.
"""
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import HeUniform, initializer

# Bottleneck and shortcut BNs (the reference's Conv2dBnAct defaults).
BODY_BN = {"eps": 1e-5, "momentum": 0.997}
# Gather BNs: plain nn.BatchNorm2d with the MindSpore 1.x defaults.
GATHER_BN = {"eps": 1e-5, "momentum": 0.9}
# Hidden width of the excite MLP is channels // MLP_REDUCTION.
MLP_REDUCTION = 16
# The reference halves maps this large with a dense 3x3/2 conv before the depthwise gather
# (a workaround for very large depthwise kernels); at 224 input only stage 1 (side 56) has one.
GATHER_DOWNSAMPLE_MIN_SIDE = 56


def conv2d(in_channels, out_channels, kernel_size, stride=1, group=1, pad_mode="same"):
    """Bias-free convolution with HeUniform weights."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, pad_mode=pad_mode,
                     group=group, has_bias=False, weight_init=HeUniform())


def bn_settings(reference, momentum=None):
    """A BN's settings: the reference's, with the momentum replaced when one is given."""
    return reference if momentum is None else dict(reference, momentum=momentum)


def conv_bn(in_channels, out_channels, kernel_size, stride=1, relu=True, bn=None,
            gamma_init="ones"):
    """Convolution + BatchNorm (+ ReLU), the reference's Conv2dBnAct unit."""
    bn = bn or BODY_BN
    layers = [conv2d(in_channels, out_channels, kernel_size, stride),
              nn.BatchNorm2d(out_channels, eps=bn["eps"], momentum=bn["momentum"],
                             gamma_init=gamma_init)]
    if relu:
        layers.append(nn.ReLU())
    return nn.SequentialCell(layers)


class Gather(nn.Cell):
    """Gather operator: parameter-free global mean, or (extra) learned depthwise full-map convs.

    With `extra`, maps of side >= 56 first go through a dense 3x3 stride-2 conv + BN, then a
    depthwise conv whose kernel covers the whole remaining map reduces it to 1x1 (`side` is
    the input map's size). There is no ReLU inside the gather. `as_conv` builds the depthwise
    step as nn.Conv2d instead of FullMapDepthwise (same parameters and function).
    """

    def __init__(self, channels, side, extra, as_conv=False, bn_momentum=None):
        super().__init__()
        self.extra = extra
        if not extra:
            return
        layers = []
        if side >= GATHER_DOWNSAMPLE_MIN_SIDE:
            layers += [conv2d(channels, channels, 3, stride=2), _gather_bn(channels, bn_momentum)]
            side = downsampled_side(side)
        if as_conv:
            depthwise = conv2d(channels, channels, side, group=channels, pad_mode="valid")
        else:
            depthwise = FullMapDepthwise(channels, side)
        layers += [depthwise, _gather_bn(channels, bn_momentum)]
        self.body = nn.SequentialCell(layers)

    def construct(self, x):
        if self.extra:
            return self.body(x)
        return ops.mean(x, (2, 3), keep_dims=True)


class FullMapDepthwise(nn.Cell):
    """Depthwise conv whose kernel covers the whole map (valid padding), as multiply + sum.

    Same function and parameter layout ([C, 1, side, side], named `weight`) as
    nn.Conv2d(C, C, side, group=C, pad_mode="valid", has_bias=False), so checkpoints stay
    compatible with the reference; MindSpore's CPU depthwise kernels are several times slower.
    """

    def __init__(self, channels, side):
        super().__init__()
        self.weight = Parameter(initializer(HeUniform(), [channels, 1, side, side]), name="weight")

    def construct(self, x):
        weight = ops.reshape(self.weight, (1, -1) + self.weight.shape[2:])
        return ops.sum(x * weight, (2, 3), keepdim=True)


class Excite(nn.Cell):
    """Excite operator: optional 1x1 bottleneck MLP (C -> C/16 -> C), then a sigmoid gate."""

    def __init__(self, channels, mlp):
        super().__init__()
        self.mlp = mlp
        if mlp:
            hidden = channels // MLP_REDUCTION
            if hidden < 1:
                raise ValueError(f"excite MLP needs >= {MLP_REDUCTION} channels, got {channels}")
            self.fc = nn.SequentialCell([conv2d(channels, hidden, 1), nn.ReLU(),
                                         conv2d(hidden, channels, 1)])
        self.sigmoid = nn.Sigmoid()

    def construct(self, x):
        if self.mlp:
            x = self.fc(x)
        return self.sigmoid(x)


class GEBottleneck(nn.Cell):
    """ResNet bottleneck whose residual branch is gated by gather-excite.

    out = relu(body * sigmoid(excite(gather(body))) + shortcut), where `side` is the spatial
    size of the block's output map (it sizes the depthwise gather kernel). With
    `zero_init_residual` the body's last BN scale starts at 0 (the block starts as its shortcut).
    """

    def __init__(self, in_channels, mid_channels, out_channels, stride, side, *, extra, mlp,
                 gather_as_conv=False, bn_momentum=None, zero_init_residual=False):
        super().__init__()
        bn = bn_settings(BODY_BN, bn_momentum)
        self.body = nn.SequentialCell([
            conv_bn(in_channels, mid_channels, 1, bn=bn),
            conv_bn(mid_channels, mid_channels, 3, stride=stride, bn=bn),
            conv_bn(mid_channels, out_channels, 1, relu=False, bn=bn,
                    gamma_init="zeros" if zero_init_residual else "ones"),
        ])
        self.gather = Gather(out_channels, side, extra, as_conv=gather_as_conv,
                             bn_momentum=bn_momentum)
        self.excite = Excite(out_channels, mlp)
        self.has_shortcut = stride != 1 or in_channels != out_channels
        if self.has_shortcut:
            self.shortcut = conv_bn(in_channels, out_channels, 1, stride=stride, relu=False, bn=bn)
        self.relu = nn.ReLU()

    def construct(self, x):
        identity = self.shortcut(x) if self.has_shortcut else x
        out = self.body(x)
        out = out * self.excite(self.gather(out))
        return self.relu(out + identity)


def downsampled_side(side):
    """Spatial size after a stride-2 'same'-padded conv or pool."""
    return (side + 1) // 2


def _gather_bn(channels, momentum=None):
    bn = bn_settings(GATHER_BN, momentum)
    return nn.BatchNorm2d(channels, eps=bn["eps"], momentum=bn["momentum"])
