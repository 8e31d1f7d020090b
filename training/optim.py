"""Optimiser of the reference recipe: Momentum with weight decay on conv and dense weights only."""
from mindspore import nn


def split_decay_params(network):
    """Split trainable parameters into (decayed, not decayed).

    Conv and dense weights (rank >= 2) decay; BN gamma/beta and biases (rank 1) do not.
    """
    decay, no_decay = [], []
    for param in network.trainable_params():
        (decay if len(param.shape) > 1 else no_decay).append(param)
    return decay, no_decay


def build_optimizer(network, learning_rate, *, momentum, weight_decay, loss_scale=1.0):
    """Momentum over two parameter groups; `learning_rate` may be a per-step array."""
    decay, no_decay = split_decay_params(network)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
        {"order_params": network.trainable_params()},
    ]
    return nn.Momentum(groups, learning_rate, momentum, loss_scale=loss_scale)
