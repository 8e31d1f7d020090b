"""Writers of the MindSpore-produced files: MINDIR, ONNX (normalised for Lite) and AIR."""
import logging
import os

import mindspore as ms
import numpy as np

from export.errors import ExportError
from export.onnx_normalize import normalize_onnx

log = logging.getLogger(__name__)

INPUT_NAME = "x"
OUTPUT_NAME = "logits"


def dynamic_input(image_size):
    """The symbolic NCHW float32 input with a dynamic batch dimension."""
    return ms.Tensor(shape=[None, 3, image_size, image_size], dtype=ms.float32)


def example_input(image_size):
    """A concrete zero NCHW batch of one (for exporters that need a fixed example)."""
    return ms.Tensor(np.zeros((1, 3, image_size, image_size), np.float32))


def write_mindir(network, image_size, path):
    """Export a MINDIR whose batch dimension is dynamic."""
    _export(network, dynamic_input(image_size), path, "MINDIR")


def write_air(network, image_size, path):
    """Export an AIR for Ascend (needs MindSpore's Ascend backend); the batch is fixed at 1."""
    _export(network, example_input(image_size), path, "AIR")


def write_onnx(network, image_size, path):
    """Export ONNX with a dynamic batch (mindspore.onnx.export), then normalise it for Lite.

    Only `mindspore.onnx.export` is used: calling `mindspore.export(..., 'ONNX')` on the same
    network in the same process breaks the second exporter.
    """
    try:
        ms.onnx.export(network, example_input(image_size), file_name=str(path), input_names=[INPUT_NAME],
                       output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "batch"}})
        normalize_onnx(str(path))
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ExportError(f"ONNX export failed: {exc}") from None


def _export(network, example, path, file_format):
    base, suffix = os.path.splitext(str(path))
    if suffix.upper() != f".{file_format}":
        raise ValueError(f"{path}: a {file_format} file must end in .{file_format.lower()}")
    try:
        ms.export(network, example, file_name=base, file_format=file_format)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ExportError(f"{file_format} export failed: {exc}") from None
    if not os.path.isfile(path):
        raise ExportError(f"{file_format} export wrote no {path}")
    log.info("wrote %s", path)
