"""The network to export: built from the training config, with checkpoint or seeded random weights."""
import logging
import os

import mindspore as ms

from export.errors import ExportError
from export.modelzoo import to_project_names
from training.model import build_model

log = logging.getLogger(__name__)

_LISTED = 8  # parameters named per category in a mismatch message


def random_network(model_cfg, seed):
    """Build the network with weights drawn from MindSpore's initialisers under `seed`."""
    ms.set_seed(seed)
    network = build_model(model_cfg, for_export=True)
    network.set_train(False)
    return network


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
