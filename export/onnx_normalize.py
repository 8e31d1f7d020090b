"""Rewrite MindSpore's ONNX export into the form MindSpore Lite 2.0's converter accepts.

`mindspore.onnx.export` writes `auto_pad` padding, may leave Conv strides/dilations implicit,
puts `dilations` on MaxPool (which the converter rejects) and declares the output batch as 1
even with a dynamic input batch. `normalize_onnx` fixes all four, keeping the graph's function.
"""
import logging
import math

import onnx
from onnx import helper, shape_inference

log = logging.getLogger(__name__)

_PADDED_OPS = ("Conv", "MaxPool", "AveragePool")


def normalize_onnx(path, *, batch_name="batch"):
    """Normalise the ONNX model at `path` in place and check it with onnx.checker."""
    model = onnx.load(path)
    spatial = _spatial_input_shapes(model)
    for node in model.graph.node:
        if node.op_type == "Conv":
            _make_conv_attributes_explicit(node, model.graph)
        if node.op_type == "MaxPool":
            _drop_unit_dilations(node)
        if node.op_type in _PADDED_OPS:
            _make_pads_explicit(node, spatial.get(node.input[0]))
    for output in model.graph.output:
        output.type.tensor_type.shape.dim[0].dim_param = batch_name
    # Shapes inferred at export time carry the example batch of 1: drop them.
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    onnx.save(model, path)
    log.info("normalised ONNX graph %s (%d nodes)", path, len(model.graph.node))


def _spatial_input_shapes(model):
    """Map each tensor name to its spatial dims (H, W) where shape inference knows them."""
    inferred = shape_inference.infer_shapes(model)
    graph = inferred.graph
    shapes = {}
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        dims = info.type.tensor_type.shape.dim
        if len(dims) == 4 and all(d.HasField("dim_value") for d in dims[2:]):
            shapes[info.name] = [d.dim_value for d in dims[2:]]
    return shapes


def _attributes(node):
    return {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}


def _set_attribute(node, name, value):
    _remove_attribute(node, name)
    node.attribute.append(helper.make_attribute(name, value))


def _remove_attribute(node, name):
    for attr in list(node.attribute):
        if attr.name == name:
            node.attribute.remove(attr)


def _make_conv_attributes_explicit(node, graph):
    """Give a Conv explicit kernel_shape, strides and dilations (ONNX defaults: 1)."""
    attrs = _attributes(node)
    if "kernel_shape" not in attrs:
        weight = next(init for init in graph.initializer if init.name == node.input[1])
        _set_attribute(node, "kernel_shape", list(weight.dims[2:]))
        attrs = _attributes(node)
    rank = len(attrs["kernel_shape"])
    for name in ("strides", "dilations"):
        if name not in attrs:
            _set_attribute(node, name, [1] * rank)


def _drop_unit_dilations(node):
    """Remove MaxPool dilations, which must all be 1 (the converter rejects the attribute)."""
    dilations = _attributes(node).get("dilations")
    if dilations is None:
        return
    if any(d != 1 for d in dilations):
        raise ValueError(f"MaxPool {node.name!r} has dilations {dilations}; only 1 is supported")
    _remove_attribute(node, "dilations")


def _make_pads_explicit(node, input_spatial):
    """Replace auto_pad SAME_UPPER / SAME_LOWER / VALID with the equivalent explicit pads."""
    attrs = _attributes(node)
    mode = attrs.get("auto_pad", b"NOTSET")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode == "NOTSET":
        return
    kernel = attrs["kernel_shape"]
    rank = len(kernel)
    if mode == "VALID":
        pads = [0] * (2 * rank)
    elif mode in ("SAME_UPPER", "SAME_LOWER"):
        if input_spatial is None:
            raise ValueError(f"{node.op_type} {node.name!r}: input spatial shape unknown, "
                             f"cannot replace auto_pad {mode}")
        strides = attrs.get("strides", [1] * rank)
        dilations = attrs.get("dilations", [1] * rank)
        pads = _same_pads(input_spatial, kernel, strides, dilations, upper=mode == "SAME_UPPER")
    else:
        raise ValueError(f"{node.op_type} {node.name!r}: unknown auto_pad {mode!r}")
    _remove_attribute(node, "auto_pad")
    _set_attribute(node, "pads", pads)


def _same_pads(sizes, kernel, strides, dilations, *, upper):
    """ONNX SAME padding as [begin..., end...]; the odd pixel goes at the end for SAME_UPPER."""
    begins, ends = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if upper else large)
        ends.append(large if upper else small)
    return begins + ends
