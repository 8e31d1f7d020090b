"""Weight decay applies to conv and dense weights only."""
from mindspore import nn

from training.blocks import FullMapDepthwise
from training.model import GENetResNet50
from training.optim import build_optimizer, split_decay_params


def test_decay_only_on_conv_and_dense_weights():
    network = GENetResNet50(extra=True, mlp=True, width_multiplier=0.125, num_classes=10)
    decay, no_decay = split_decay_params(network)
    assert {p.name for p in decay} | {p.name for p in no_decay} == \
        {p.name for p in network.trainable_params()}
    assert all(p.name.endswith(".weight") for p in decay)
    assert all(p.name.endswith((".gamma", ".beta", ".bias")) for p in no_decay)
    convs_and_dense = [cell for _, cell in network.cells_and_names()
                       if isinstance(cell, (nn.Conv2d, nn.Dense, FullMapDepthwise))]
    assert len(decay) == len(convs_and_dense)
    assert "fc.bias" in {p.name for p in no_decay}


def test_optimizer_groups_carry_the_decay():
    network = GENetResNet50(extra=False, mlp=False, width_multiplier=0.125, num_classes=10)
    optimizer = build_optimizer(network, 0.1, momentum=0.9, weight_decay=1e-4, loss_scale=1024)
    decays = dict(zip((p.name for p in optimizer.parameters), optimizer.decay_flags))
    assert decays["fc.weight"] and not decays["fc.bias"] and not decays["stem.1.gamma"]
