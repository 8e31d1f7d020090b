"""The network to export: built from the training config, with checkpoint or seeded random weights."""
import logging
import os
from contextlib import contextmanager

import mindspore as ms
import numpy as np

from export.errors import ExportError
from export.modelzoo import to_project_names
from training.model import build_model

log = logging.getLogger(__name__)

_LISTED = 8  # parameters named per category in a mismatch message


def random_network(model_cfg, seed, calibration_images=None):
    """Build the network with weights drawn from MindSpore's initialisers under `seed`.

    With `calibration_images` (NCHW float32, preprocessed) the BatchNorm statistics are
    calibrated on them (calibrate_batchnorm), so activations and logits have realistic
    magnitudes; otherwise they keep their initial values (mean 0, variance 1).
    """
    ms.set_seed(seed)
    network = build_model(model_cfg, for_export=True)
    network.set_train(False)
    if calibration_images is not None:
        calibrate_batchnorm(network, calibration_images)
    return network


def calibrate_batchnorm(network, images):
    """Set every BatchNorm's moving mean/variance to the statistics of its own input, in eval mode.

    One inference pass of `images` as one batch; just before each BN runs, a forward pre-hook
    stores the per-channel mean and (biased) variance of the input it is about to normalise,
    so each BN sees inputs already shaped by the calibrated BNs before it. A train-mode pass
    with momentum 0 does not give that: its BNs normalise with batch statistics while the
    moving variance is the unbiased one, and with the 1x1 gather outputs (7 samples per
    channel) the eval-mode inputs of the last stage drift by up to 3 standard deviations.
    """
    def calibrate(cell, inputs):
        data = inputs[0].asnumpy().astype(np.float64)
        cell.moving_mean.set_data(ms.Tensor(data.mean(axis=(0, 2, 3)), ms.float32))
        cell.moving_variance.set_data(ms.Tensor(data.var(axis=(0, 2, 3)), ms.float32))

    norms = [cell for _, cell in network.cells_and_names() if isinstance(cell, ms.nn.BatchNorm2d)]
    handles = [cell.register_forward_pre_hook(calibrate) for cell in norms]
    try:
        network(ms.Tensor(images))
    finally:
        for handle in handles:
            handle.remove()
    log.info("calibrated %d BatchNorm layers on %d images", len(norms), len(images))


def load_network(model_cfg, params, ckpt_path):
    """Build the network and load checkpoint `params` into it, refusing any mismatch.

    `params` comes from read_checkpoint(ckpt_path), in this project's naming or the MindSpore
    ModelZoo's (renamed first); the path only names it in messages.
    """
    params = to_project_names(params, ckpt_path)
    network = build_model(model_cfg, for_export=True)
    problems = checkpoint_mismatches(network.parameters_dict(), params)
    if problems:
        raise ExportError(f"checkpoint {ckpt_path} does not match the model config "
                          f"({_describe(model_cfg)}): " + "; ".join(problems))
    broken = nonfinite_parameters(params, network.parameters_dict())
    if broken:
        shown = ", ".join(broken[:_LISTED])
        more = f" and {len(broken) - _LISTED} more" if len(broken) > _LISTED else ""
        raise ExportError(f"checkpoint {ckpt_path} holds NaN or inf in {len(broken)} parameters "
                          f"({shown}{more}): training diverged; export an earlier checkpoint")
    not_loaded, _ = ms.load_param_into_net(network, params, strict_load=True)
    if not_loaded:
        raise ExportError(f"checkpoint {ckpt_path} left parameters unset: {', '.join(not_loaded)}")
    network.set_train(False)
    log.info("loaded %d parameters from %s", len(network.parameters_dict()), ckpt_path)
    return network


def read_checkpoint(ckpt_path):
    """Read a MindSpore checkpoint into {name: Parameter}; ExportError when missing or unreadable."""
    if not os.path.isfile(ckpt_path):
        raise ExportError(f"checkpoint not found: {ckpt_path}")
    try:
        return ms.load_checkpoint(str(ckpt_path))
    except (ValueError, RuntimeError, OSError) as exc:
        raise ExportError(f"{ckpt_path} is not a readable MindSpore checkpoint ({exc})") from None


def nonfinite_parameters(params, expected):
    """Names of the network's parameters (those in `expected`) holding NaN or inf in `params`."""
    return [name for name in expected
            if not np.all(np.isfinite(params[name].asnumpy().astype(np.float64)))]


@contextmanager
def nonfinite_watch(network):
    """Within the block, the yielded list receives the name of the first layer (in execution order)
    whose output holds NaN or inf.

    Forward hooks, which run in PyNative mode (the export's mode). Checking the logits alone is
    not enough: MindSpore's ReLU turns NaN into 0, so broken layers can still give finite logits
    that other runtimes do not reproduce.
    """
    found = []

    def hook_for(name):
        def hook(_cell, _inputs, output):
            if not found and isinstance(output, ms.Tensor) \
                    and not np.all(np.isfinite(output.asnumpy())):
                found.append(name)
        return hook

    handles = [cell.register_forward_hook(hook_for(name))
               for name, cell in network.cells_and_names() if name]
    try:
        yield found
    finally:
        for handle in handles:
            handle.remove()


def checkpoint_mismatches(expected, found):
    """Describe how checkpoint `found` differs from the network's `expected` parameters.

    Training state saved with the weights (optimiser slots such as `moments.<param>`, and
    undotted scalars such as `global_step`, `epoch_num`) is ignored.
    """
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found
                  if name not in expected and not _is_training_state(name, expected, found)]
    wrong_shape = [f"{name} {list(found[name].shape)} (model needs {list(param.shape)})"
                   for name, param in expected.items()
                   if name in found and tuple(found[name].shape) != tuple(param.shape)]
    problems = []
    for label, names in (("shape mismatch", wrong_shape), ("missing", missing),
                         ("unexpected", unexpected)):
        if names:
            shown = ", ".join(names[:_LISTED])
            more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
            problems.append(f"{len(names)} {label}: {shown}{more}")
    return problems


def _is_training_state(name, expected, found):
    """An undotted scalar, or an optimiser slot `<slot>.<parameter>` of a known parameter."""
    if "." not in name:
        return True
    parameter = name.split(".", 1)[1]
    return parameter in expected or parameter in found


def _describe(model_cfg):
    return (f"variant {model_cfg.variant}, extra={model_cfg.extra}, mlp={model_cfg.mlp}, "
            f"{model_cfg.num_classes} classes, image size {model_cfg.image_size}, "
            f"width {model_cfg.width_multiplier}")
