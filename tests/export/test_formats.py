"""Format planning and the Ascend (atc / AIPP) command lines."""
import shutil

import pytest

from export.ascend import aipp_config, atc_command
from export.errors import ExportError
from export.formats import ALL_FORMATS, plan

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


@pytest.mark.skipif(shutil.which("atc") is not None, reason="CANN atc is installed here")
def test_om_is_skipped_by_default_and_an_error_when_requested():
    planned, skipped = plan(ALL_FORMATS, explicit=False)
    assert "om" not in planned and "atc" in skipped["om"]
    assert {"mindir", "onnx"} <= set(planned)
    with pytest.raises(ExportError, match="format om was requested .* CANN atc not found"):
        plan(("mindir", "om"), explicit=True)


def test_unknown_format_lists_the_valid_ones():
    with pytest.raises(ExportError, match="unknown format tflite; valid: mindir, onnx, mslite"):
        plan(("mindir", "tflite"), explicit=True)


def test_atc_command_has_dynamic_batch_input_shape_and_aipp():
    command = atc_command("m.onnx", "out/model.om", 48, input_name="x", soc_version="Ascend310P3",
                          batch_sizes=(1, 8), aipp_path="aipp.cfg")
    assert command[0] == "atc"
    assert {"--framework=5", "--model=m.onnx", "--output=out/model", "--input_format=NCHW",
            "--input_shape=x:-1,3,48,48", "--dynamic_batch_size=1,8",
            "--soc_version=Ascend310P3", "--insert_op_conf=aipp.cfg"} == set(command[1:])


def test_aipp_config_folds_mean_and_std_for_uint8_rgb():
    text = aipp_config(48, MEAN, STD)
    values = dict(line.strip().split(" : ") for line in text.splitlines() if " : " in line)
    assert values["input_format"] == "RGB888_U8" and values["aipp_mode"] == "static"
    assert values["src_image_size_w"] == values["src_image_size_h"] == "48"
    for channel in range(3):
        # AIPP: (pixel - mean_chn - min_chn) * var_reci_chn == (pixel - mean) / std
        assert float(values[f"mean_chn_{channel}"]) == 0
        assert float(values[f"min_chn_{channel}"]) == MEAN[channel]
        assert abs(float(values[f"var_reci_chn_{channel}"]) * STD[channel] - 1) < 1e-9
