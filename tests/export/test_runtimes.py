"""The exported files, loaded in their own runtimes, reproduce the network at batch 1 and 7."""
import numpy as np
import onnx
import pytest

from export.errors import ExportError
from export.network import random_network
from export.samples import verification_batches
from export.verify import RUNNERS, TOLERANCE, reference_logits, verify_files
from training.config import load_config

BATCH_SIZES = (1, 7)


@pytest.fixture(scope="module")
def photo_batches(tiny_model):
    """Real photographs through the eval preset, at batch 1 and 7."""
    batches, _ = verification_batches(tiny_model["image_size"], BATCH_SIZES)
    return batches


@pytest.fixture(scope="module")
def expected_logits(tiny_network, photo_batches):
    """The logits of the network rebuilt in this process from the export's seed."""
    return reference_logits(tiny_network, photo_batches)


@pytest.mark.parametrize("fmt", ["mindir", "onnx", "mslite"])
def test_file_reproduces_network_logits_at_batch_1_and_7(fmt, exported, photo_batches,
                                                        expected_logits):
    path = exported["dir"] / exported["manifest"]["files"][fmt]["path"]
    outputs = RUNNERS[fmt](path, photo_batches)
    for key, expected in expected_logits.items():
        assert outputs[key].shape == expected.shape, key
        assert np.max(np.abs(outputs[key] - expected)) <= TOLERANCE, key
        assert np.array_equal(outputs[key].argmax(axis=1), expected.argmax(axis=1)), key


def test_photos_give_distinct_logits(expected_logits):
    logits = expected_logits["batch7"]
    assert len({row.tobytes() for row in logits}) == 7


def test_onnx_is_normalised_for_the_lite_converter(exported):
    model = onnx.load(str(exported["dir"] / "model.onnx"))
    for node in model.graph.node:
        names = {attr.name for attr in node.attribute}
        assert "auto_pad" not in names, node.name
        if node.op_type == "Conv":
            assert {"strides", "dilations", "kernel_shape", "pads"} <= names, node.name
        if node.op_type == "MaxPool":
            assert "dilations" not in names, node.name
    for value in list(model.graph.input) + list(model.graph.output):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch", value.name


def test_verification_fails_with_the_numbers_for_other_weights(exported, tiny_config,
                                                               export_seed, photo_batches):
    other = random_network(load_config(tiny_config).model, export_seed + 1)
    with pytest.raises(ExportError, match=r"verification failed \(tolerance 0.0001\): "
                                          r"mindir: max abs diff \d"):
        verify_files(other, {"mindir": exported["dir"] / "model.mindir"}, photo_batches)
