"""The server's settings: one validated dataclass, one documented field per option."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

BACKENDS = ("mslite", "mindspore")
DEVICES = ("cpu", "ascend", "gpu")
MIB = 1024 * 1024


def _doc(text: str, default):
    """A field whose help text is its documentation (and the CLI's --help line)."""
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class Settings:
    """Everything `python -m serving` can be told; validated on construction."""

    model_repository: str = _doc(
        "Directory laid out as <name>/<version>/manifest.json; the latest version is served.", "models")
    model_name: Optional[str] = _doc(
        "Model to serve when the repository holds several names (the proto addresses one model); "
        "default: the repository's only model.", None)
    host: str = _doc("Address to listen on; anything but localhost exposes the server.", "127.0.0.1")
    port: int = _doc("gRPC port; 0 picks a free one (logged as 'serving on HOST:PORT').", 8500)
    metrics_port: Optional[int] = _doc(
        "Prometheus /metrics port on the same host; 0 picks a free one, omitted disables metrics.", None)
    backend: str = _doc("Inference runtime: mslite (MindSpore Lite, .ms) or mindspore (MINDIR).", "mslite")
    device: str = _doc("Device to run on: cpu, ascend or gpu (fails at start if absent).", "cpu")
    device_id: int = _doc("Index of the Ascend or GPU device.", 0)
    threads: int = _doc("Inference threads of the runtime (CPU).", 2)
    max_batch_size: int = _doc("Most images merged into one inference call.", 8)
    max_queue_delay_ms: float = _doc(
        "Longest an image waits for its batch to fill before the batch runs anyway.", 5.0)
    max_queue_size: int = _doc(
        "Images admitted but not yet computed; a request beyond it gets RESOURCE_EXHAUSTED at once.", 64)
    max_message_mb: int = _doc(
        "Largest gRPC request or response in MiB; larger requests get RESOURCE_EXHAUSTED.", 64)
    max_images_per_request: int = _doc(
        "Most images in one Classify request (INVALID_ARGUMENT beyond); at most max_queue_size.", 32)
    max_image_pixels: int = _doc(
        "Largest decoded width * height; checked from the file header before any pixel is decoded.",
        40000000)
    workers: int = _doc("Threads of the preprocessing pool (decode, resize, crop, normalise).", 2)
    grace_period_s: float = _doc(
        "On SIGTERM/SIGINT: seconds to finish queued and in-flight requests before they are cancelled.",
        30.0)
    log_level: str = _doc("Logging level: DEBUG, INFO, WARNING or ERROR.", "INFO")

    def __post_init__(self) -> None:
        """Reject inconsistent settings with a message naming the option."""
        _check_choice("backend", self.backend, BACKENDS)
        _check_choice("device", self.device, DEVICES)
        _check_choice("log_level", self.log_level, ("DEBUG", "INFO", "WARNING", "ERROR"))
        for name in ("max_batch_size", "max_queue_size", "max_message_mb", "max_images_per_request",
                     "max_image_pixels", "workers", "threads"):
            if getattr(self, name) < 1:
                raise ValueError("{} must be at least 1, got {}".format(_flag(name), getattr(self, name)))
        for name in ("port", "metrics_port", "device_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 65535:
                raise ValueError("{} must be in 0..65535, got {}".format(_flag(name), value))
        if self.max_queue_delay_ms < 0 or self.grace_period_s < 0:
            raise ValueError("--max-queue-delay-ms and --grace-period-s must not be negative")
        if self.max_images_per_request > self.max_queue_size:
            raise ValueError("--max-images-per-request ({}) must not exceed --max-queue-size ({}): such a "
                             "request could never be admitted".format(self.max_images_per_request,
                                                                      self.max_queue_size))
        if self.max_message_mb > 2047:
            raise ValueError("--max-message-mb must be below 2048 (gRPC's limit is 2 GiB)")

    @property
    def max_message_bytes(self) -> int:
        """The message size limit in bytes."""
        return self.max_message_mb * MIB

    @property
    def max_queue_delay_s(self) -> float:
        """The batching delay in seconds."""
        return self.max_queue_delay_ms / 1000.0


def _check_choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise ValueError("invalid {} {!r}: choose one of {}".format(_flag(name), value, ", ".join(choices)))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def settings_fields():
    """The dataclass fields of Settings, in declaration order (the CLI is generated from them)."""
    return dataclasses.fields(Settings)
