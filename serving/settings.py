"""The server's settings: one validated dataclass, one documented field per option."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from serving.tls import is_loopback

BACKENDS = ("mslite", "mindspore", "openvino")
PRECISIONS = ("auto", "f32", "bf16", "bf16-unverified")
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
    host: str = _doc(
        "Address to listen on. Anything but loopback exposes the server: that needs --tls-cert/--tls-key, "
        "or --allow-insecure to accept plaintext.", "127.0.0.1")
    port: int = _doc("gRPC port; 0 picks a free one (logged as 'serving on HOST:PORT').", 8500)
    http_port: Optional[int] = _doc(
        "KServe v2 HTTP/REST port (and the browser page at /); same TLS, tokens and limits as gRPC. 0 picks a "
        "free one (logged as 'http on URL'), omitted disables HTTP.", None)
    http_host: Optional[str] = _doc(
        "Address of the HTTP port; default: --host. Anything but loopback without TLS needs --allow-insecure.",
        None)
    metrics_port: Optional[int] = _doc(
        "Prometheus /metrics port (plain HTTP, no auth); 0 picks a free one, omitted disables metrics.", None)
    metrics_host: Optional[str] = _doc(
        "Address of the /metrics endpoint; default: --host. Anything but loopback exposes it (plain HTTP, "
        "no auth, even with TLS on the gRPC port): that needs --allow-insecure.", None)
    tls_cert: Optional[str] = _doc("PEM server certificate chain; with --tls-key, the server speaks TLS only.",
                                   None)
    tls_key: Optional[str] = _doc("PEM private key of --tls-cert.", None)
    tls_client_ca: Optional[str] = _doc(
        "PEM CA bundle: require every client to present a certificate it signed (mutual TLS).", None)
    auth_token_file: Optional[str] = _doc(
        "File of accepted bearer tokens, one per line ('#' comments allowed): calls must send "
        "'authorization: Bearer <token>'. Health and reflection stay open. Omitted: no token needed.", None)
    allow_insecure: bool = _doc(
        "Accept listening on a non-loopback --host or --http-host without TLS (plaintext, logged as a warning), "
        "and /metrics on a non-loopback address.", False)
    reload_interval_s: float = _doc(
        "Seconds between scans of the repository for new versions (hot reload); 0 disables polling "
        "(SIGHUP still triggers a scan).", 10.0)
    keep_versions: int = _doc(
        "How many of the newest valid versions stay loaded (older ones unload once drained); "
        "requests can pin any loaded version.", 1)
    backend: str = _doc("Inference runtime: mslite (MindSpore Lite, .ms), mindspore (MINDIR) or openvino "
                        "(OpenVINO on the CPU, the ONNX file).", "mslite")
    precision: str = _doc(
        "What the runtime computes in: auto (bf16 where the CPU has native bf16, the backend offers it "
        "(openvino) and export verified the version in bf16; else f32), f32, bf16 (openvino on a CPU with "
        "AVX512-BF16 or AMX, on a version verified in bf16, only; refused elsewhere), or bf16-unverified (bf16 "
        "on such a CPU even where export's top-1 check failed: benchmarks of random-weight networks). "
        "GetModelInfo's runtime_version and genet_inference_precision say which is served.", "auto")
    device: str = _doc("Device to run on: cpu, ascend or gpu (fails at start if absent).", "cpu")
    device_id: int = _doc("Index of the Ascend or GPU device.", 0)
    threads: int = _doc("Inference threads of the runtime in each worker (CPU).", 2)
    instances: int = _doc(
        "Inference worker processes per loaded model version; each computes one batch at a time, so up to "
        "this many batches run at once. Each holds its own copy of the runtime and model in memory.", 1)
    max_batch_size: int = _doc("Most images merged into one inference call.", 8)
    max_queue_delay_ms: float = _doc(
        "Longest an image waits for its batch to fill before the batch runs anyway, while another batch "
        "computes; a batch starts at once, with what is queued, when none does (see --wait-when-idle).", 5.0)
    wait_when_idle: bool = _doc(
        "Apply --max-queue-delay-ms even when no batch computes: a lone request waits the whole delay for "
        "company.", False)
    max_queue_size: int = _doc(
        "Images admitted but not yet computed; a request beyond it gets RESOURCE_EXHAUSTED at once.", 64)
    max_message_mb: int = _doc(
        "Largest gRPC request or response in MiB; larger requests get RESOURCE_EXHAUSTED.", 64)
    max_concurrent_rpcs: int = _doc(
        "Most RPCs at once, health checks included: in the server (RESOURCE_EXHAUSTED beyond) and on each "
        "connection (HTTP/2 max concurrent streams: further streams are refused unread, UNAVAILABLE). Bounds "
        "what a connection's requests can hold to about 4 x this x --max-message-mb; lower it where large "
        "messages may flood in.", 128)
    max_images_per_request: int = _doc(
        "Most images in one Classify request (INVALID_ARGUMENT beyond); at most max_queue_size.", 32)
    max_image_pixels: int = _doc(
        "Largest decoded width * height; checked from the file header before any pixel is decoded.",
        40000000)
    workers: int = _doc("Threads of the preprocessing pool (decode, resize, crop, normalise).", 2)
    grace_period_s: float = _doc(
        "On SIGTERM/SIGINT: seconds to finish queued and in-flight requests before they are cancelled.",
        30.0)
    inference_timeout_s: float = _doc(
        "Longest one inference call may run. A worker still computing then is killed and replaced; only its "
        "batch fails (UNAVAILABLE). Also the longest a batch waits for a worker while every one restarts. "
        "Far above any batch's normal time.", 60.0)
    log_level: str = _doc("Logging level: DEBUG, INFO, WARNING or ERROR.", "INFO")

    def __post_init__(self) -> None:
        """Reject inconsistent settings with a message naming the option."""
        _check_choice("backend", self.backend, BACKENDS)
        _check_choice("device", self.device, DEVICES)
        _check_choice("precision", self.precision, PRECISIONS)
        if self.precision.startswith("bf16") and self.backend != "openvino":
            raise ValueError(f"--precision {self.precision} needs --backend openvino ({self.backend} computes in f32)")
        _check_choice("log_level", self.log_level, ("DEBUG", "INFO", "WARNING", "ERROR"))
        for name in ("max_batch_size", "max_queue_size", "max_message_mb", "max_concurrent_rpcs",
                     "max_images_per_request",
                     "max_image_pixels", "workers", "threads", "instances", "keep_versions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{_flag(name)} must be at least 1, got {getattr(self, name)}")
        for name in ("port", "http_port", "metrics_port", "device_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 65535:
                raise ValueError(f"{_flag(name)} must be in 0..65535, got {value}")
        if min(self.max_queue_delay_ms, self.grace_period_s, self.reload_interval_s) < 0:
            raise ValueError("--max-queue-delay-ms, --grace-period-s and --reload-interval-s must not be negative")
        if self.inference_timeout_s <= 0:
            raise ValueError(f"--inference-timeout-s must be positive, got {self.inference_timeout_s}")
        self._check_security()
        if self.max_images_per_request > self.max_queue_size:
            raise ValueError(f"--max-images-per-request ({self.max_images_per_request}) must not exceed "
                             f"--max-queue-size ({self.max_queue_size}): such a request could never be admitted")
        if self.max_message_mb > 2047:
            raise ValueError("--max-message-mb must be below 2048 (gRPC's limit is 2 GiB)")

    def _check_security(self) -> None:
        """TLS files come as a pair; exposing the server in plaintext must be asked for."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
        if not self.tls and not is_loopback(self.host) and not self.allow_insecure:
            raise ValueError(f"--host {self.host} is reachable from other machines: give --tls-cert and --tls-key, or "
                             "--allow-insecure to serve plaintext")
        if self.http_port is not None and not self.tls and not is_loopback(self.http_address) \
                and not self.allow_insecure:
            raise ValueError(f"--http-host {self.http_address} is reachable from other machines: give --tls-cert and "
                             "--tls-key, or --allow-insecure to serve plaintext HTTP")
        if self.metrics_port is not None and not is_loopback(self.metrics_address) and not self.allow_insecure:
            raise ValueError(f"--metrics-host {self.metrics_address} is reachable from other machines and /metrics is "
                             "plain HTTP without authentication: give --allow-insecure to expose it, or a loopback "
                             "--metrics-host")

    @property
    def tls(self) -> bool:
        """True when the server speaks TLS."""
        return self.tls_cert is not None

    @property
    def http_address(self) -> str:
        """Host of the KServe v2 HTTP endpoint."""
        return self.host if self.http_host is None else self.http_host

    @property
    def metrics_address(self) -> str:
        """Host of the /metrics endpoint."""
        return self.host if self.metrics_host is None else self.metrics_host

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
        raise ValueError(f"invalid {_flag(name)} {value!r}: choose one of {', '.join(choices)}")


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def settings_fields():
    """The dataclass fields of Settings, in declaration order (the CLI is generated from them)."""
    return dataclasses.fields(Settings)
