"""Ascend formats: whether AIR/OM can be produced here, and OM conversion with CANN's `atc`."""
import logging
import os
import shutil
import subprocess

from export.errors import ExportError

log = logging.getLogger(__name__)

ATC_TIMEOUT_S = 1800
DEFAULT_SOC_VERSION = "Ascend310P3"
DEFAULT_OM_BATCH_SIZES = (1, 2, 4, 8, 16, 32)


def air_unavailable_reason():
    """Why AIR cannot be exported in this process, or None when MindSpore's Ascend backend loads."""
    from mindspore import device_context
    try:
        if device_context.ascend.is_available():
            return None
    except (RuntimeError, AttributeError):
        pass
    return "needs MindSpore's Ascend backend, which this MindSpore cannot load"


def om_unavailable_reason():
    """Why OM cannot be produced here, or None when CANN's `atc` is on PATH."""
    return None if shutil.which("atc") else "CANN atc not found on PATH"


def aipp_config(image_size, mean, std):
    """Static AIPP config: uint8 RGB NHWC in, `(pixel - mean) / std` folded into the model.

    AIPP computes (pixel - mean_chn - min_chn) * var_reci_chn per channel; the integer
    mean_chn stays 0 and the float mean goes into min_chn.
    """
    lines = ["aipp_op {", "    aipp_mode : static", "    input_format : RGB888_U8",
             f"    src_image_size_w : {image_size}", f"    src_image_size_h : {image_size}",
             "    csc_switch : false", "    rbuv_swap_switch : false"]
    for channel, (m, s) in enumerate(zip(mean, std)):
        lines += [f"    mean_chn_{channel} : 0", f"    min_chn_{channel} : {m}",
                  f"    var_reci_chn_{channel} : {1.0 / s:.12g}"]
    return "\n".join(lines + ["}"]) + "\n"


def atc_command(onnx_path, om_path, image_size, *, input_name, soc_version, batch_sizes,
                aipp_path=None):
    """The `atc` command line converting the ONNX model to OM with the given batch sizes."""
    base, suffix = os.path.splitext(str(om_path))
    if suffix != ".om":
        raise ValueError(f"{om_path}: an OM file must end in .om")
    command = ["atc", "--framework=5", f"--model={onnx_path}", f"--output={base}",
               f"--soc_version={soc_version}", "--input_format=NCHW",
               f"--input_shape={input_name}:-1,3,{image_size},{image_size}",
               f"--dynamic_batch_size={','.join(str(b) for b in batch_sizes)}"]
    if aipp_path is not None:
        command.append(f"--insert_op_conf={aipp_path}")
    return command


def write_om(command, om_path):
    """Run `atc`; ExportError with the tail of its output when it fails."""
    log.info("running %s", " ".join(command))
    try:
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, timeout=ATC_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExportError(f"atc could not run: {exc}") from None
    if result.returncode != 0 or not os.path.isfile(om_path):
        tail = "\n".join(result.stdout.strip().splitlines()[-10:])
        raise ExportError(f"atc failed (exit {result.returncode}):\n{tail}")
    log.info("wrote %s", om_path)
