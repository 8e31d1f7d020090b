"""Which model formats to write, and writing them into a staging directory."""
import logging
import os
from dataclasses import dataclass, field

import mindspore as ms
import onnx
import onnxruntime
import openvino

from export import ascend
from export.errors import ExportError
from export.lite import convert_to_lite, lite_unavailable_reason
from export.writers import INPUT_NAME, write_air, write_mindir, write_onnx
from modelrepo.manifest import FILE_SPECS, file_entry

log = logging.getLogger(__name__)

ALL_FORMATS = ("mindir", "onnx", "mslite", "air", "om")
VERIFIED_FORMATS = ("mindir", "onnx", "mslite")  # the ones with a runtime on every host
AIPP_CONFIG_FILE = "aipp.cfg"

_UNAVAILABLE = {"mslite": lite_unavailable_reason, "air": ascend.air_unavailable_reason,
                "om": ascend.om_unavailable_reason}


def plan(requested, *, explicit):
    """Split the requested formats into (to write, {skipped format: reason}).

    An unavailable format is skipped with its reason, or is an error when `explicit`.
    """
    unknown = [fmt for fmt in requested if fmt not in ALL_FORMATS]
    if unknown:
        raise ExportError(f"unknown format {', '.join(unknown)}; valid: {', '.join(ALL_FORMATS)}")
    planned, skipped = [], {}
    for fmt in (f for f in ALL_FORMATS if f in requested):
        reason = _UNAVAILABLE[fmt]() if fmt in _UNAVAILABLE else None
        if reason and explicit:
            raise ExportError(f"format {fmt} was requested but cannot be produced here: {reason}")
        if reason:
            log.info("skipping %s: %s", fmt, reason)
            skipped[fmt] = reason
        else:
            planned.append(fmt)
    if not planned:
        raise ExportError("no format can be produced here: " + "; ".join(
            f"{fmt}: {reason}" for fmt, reason in skipped.items()))
    return tuple(planned), skipped


@dataclass
class Produced:
    """The files written so far: manifest details per format and the runtime versions."""

    details: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)

    def verifiable(self, directory):
        """{format: path} of the files that verification runs."""
        return {fmt: os.path.join(directory, FILE_SPECS[fmt][0])
                for fmt in self.details if fmt in VERIFIED_FORMATS}

    def entries(self, directory):
        """The manifest's `files` section (hashes the files)."""
        return {fmt: file_entry(fmt, directory, verified=fmt in VERIFIED_FORMATS, **details)
                for fmt, details in self.details.items()}


def produce(network, model_cfg, planned, staging, request, preprocessing):
    """Write every planned format into `staging`; returns what was written.

    `preprocessing` is the manifest's preprocessing (its mean/std feed the OM's AIPP).
    """
    size = model_cfg.image_size
    produced = Produced(versions={"mindspore": ms.__version__, "mindspore_lite": None,
                                  "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                                  "openvino": openvino.__version__.split("-")[0]})
    path = {fmt: os.path.join(staging, spec[0]) for fmt, spec in FILE_SPECS.items()}
    if "mindir" in planned:
        write_mindir(network, size, path["mindir"])
        produced.details["mindir"] = {"batch": "dynamic"}
    onnx_needed = any(fmt in planned for fmt in ("onnx", "mslite", "om"))
    if onnx_needed:
        write_onnx(network, size, path["onnx"])
        if "onnx" in planned:
            produced.details["onnx"] = {"batch": "dynamic"}
    if "mslite" in planned:
        info = convert_to_lite(path["onnx"], path["mslite"])
        batch = info["input_shape"][0]
        produced.details["mslite"] = {"batch": "dynamic" if batch < 0 else [batch],
                                      "input_layout": info["input_layout"]}
        produced.versions["mindspore_lite"] = info["mindspore_lite"]
    if "air" in planned:
        write_air(network, size, path["air"])
        produced.details["air"] = {"batch": [1]}
    if request.aipp and "om" not in planned:
        log.warning("--aipp applies to the OM model only, and none is written")
    if "om" in planned:
        produced.details["om"] = _write_om(path["onnx"], path["om"], staging, model_cfg, request,
                                           preprocessing)
    if onnx_needed and "onnx" not in planned:
        os.remove(path["onnx"])  # only the intermediate of the Lite / OM conversion
    return produced


def _write_om(onnx_path, om_path, staging, model_cfg, request, preprocessing):
    """Convert the ONNX model to OM with atc (AIPP optional); returns the manifest details."""
    aipp_path = None
    if request.aipp:
        aipp_path = os.path.join(staging, AIPP_CONFIG_FILE)
        with open(aipp_path, "w", encoding="utf-8") as handle:
            handle.write(ascend.aipp_config(model_cfg.image_size, preprocessing["mean"],
                                            preprocessing["std"]))
    command = ascend.atc_command(onnx_path, om_path, model_cfg.image_size, input_name=INPUT_NAME,
                                 soc_version=request.soc_version,
                                 batch_sizes=request.om_batch_sizes, aipp_path=aipp_path)
    ascend.write_om(command, om_path)
    details = {"batch": list(request.om_batch_sizes), "soc_version": request.soc_version}
    if aipp_path:
        details.update(input_layout="NHWC", input_dtype="uint8", aipp_config=AIPP_CONFIG_FILE)
    return details
