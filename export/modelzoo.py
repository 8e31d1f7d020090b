"""Checkpoints of the MindSpore ModelZoo's GENet_Res50 (research/cv/GENet_Res50): detect and rename.

The ModelZoo network (src/GENet.py, src/GEBlock.py) holds the same parameters, in the same
shapes, as ours; only the cell names differ:

    ModelZoo                              this project
    conv1. / bn1.                         stem.0. / stem.1.
    end_point.                            fc.
    layerS.B.convK.conv. / .batchnorm.    layerS.B.body.(K-1).0. / .1.     (K = 1, 2, 3)
    layerS.B.down_layer.conv. / .batchnorm.   layerS.B.shortcut.0. / .1.
    layerS.B.downop.I.                    layerS.B.gather.body.I.          (same cell order)
    layerS.B.mlpLayer.I.                  layerS.B.excite.fc.I.

Leaf names (weight, bias, gamma, beta, moving_mean, moving_variance) are MindSpore's in both.
Optimiser slots (`moments.<name>`) are renamed with their parameter; the training state that
the ModelZoo's train.py saves besides (learning_rate, momentum, global_step) has no dot and is
ignored when the checkpoint is loaded.
"""
import logging
import re

from export.errors import ExportError

log = logging.getLogger(__name__)

# A parameter every checkpoint of each naming holds (whatever the variant, size or width).
PROJECT_MARKER = "stem.0.weight"
MODELZOO_MARKER = "layer1.0.conv1.conv.weight"

_CONV_BN = ("conv", "batchnorm")  # the ModelZoo's nn.Conv2dBnAct cells; ours: indices 0, 1
_TOP_LEVEL = {"conv1.": "stem.0.", "bn1.": "stem.1.", "end_point.": "fc."}
_IN_BLOCK = {
    **{f"conv{k}.{cell}.": f"body.{k - 1}.{index}."
       for k in (1, 2, 3) for index, cell in enumerate(_CONV_BN)},
    **{f"down_layer.{cell}.": f"shortcut.{index}." for index, cell in enumerate(_CONV_BN)},
    "downop.": "gather.body.",
    "mlpLayer.": "excite.fc.",
}
_BLOCK = re.compile(r"(layer[1-4]\.\d+\.)(.+)")
_SHOWN = 5  # names quoted from a checkpoint of unknown naming


def project_name(name):
    """This project's name of ModelZoo parameter `name`; None when it is no GENet_Res50 cell's."""
    block = _BLOCK.fullmatch(name)
    prefix, rest, table = (block[1], block[2], _IN_BLOCK) if block else ("", name, _TOP_LEVEL)
    for theirs, ours in table.items():
        if rest.startswith(theirs):
            return prefix + ours + rest[len(theirs):]
    return None


def to_project_names(params, ckpt_path):
    """Checkpoint `params` under this project's names, whichever of the two namings it uses.

    A ModelZoo checkpoint is renamed (names without a counterpart are kept, so the network's
    mismatch check reports them); ExportError when the checkpoint uses neither naming.
    """
    if PROJECT_MARKER in params:
        return params
    if MODELZOO_MARKER not in params:
        shown = ", ".join(list(params)[:_SHOWN]) or "none"
        raise ExportError(
            f"{ckpt_path} is neither a checkpoint of this project's training (no {PROJECT_MARKER}) "
            f"nor of the MindSpore ModelZoo's GENet_Res50 (no {MODELZOO_MARKER}); "
            f"its first parameters: {shown}")
    names = {name: _renamed(name) for name in params}
    log.info("%s uses the ModelZoo GENet_Res50 naming: renamed %d of %d entries", ckpt_path,
             sum(new != old for old, new in names.items()), len(names))
    return {new: params[old] for old, new in names.items()}


def _renamed(name):
    """`name` renamed, optimiser slots (`<slot>.<parameter>`) included; unknown names unchanged."""
    new = project_name(name)
    if new is None and "." in name:
        slot, parameter = name.split(".", 1)
        new = project_name(parameter)
        new = new and f"{slot}.{new}"
    return new or name
