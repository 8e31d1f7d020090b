"""What the benchmark compares: the servers' backends, the runtimes beside the offline baseline, and the CPU
it ran on.

BACKENDS and PRECISIONS are `python -m serving`'s --backend and --precision values; RUNTIMES are the
names `python -m serving.offline --runtime` accepts (serving/onnx_runtimes.py). Whether bf16 can be
measured follows from the CPU's flags: where it is not native it is skipped, never emulated.
"""
import logging
import os
import platform
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

logger = logging.getLogger("clients.benchmark")

BACKENDS = ("mslite", "mindspore", "openvino")
PRECISIONS = ("auto", "f32", "bf16", "bf16-unverified")
RUNTIMES = ("onnxruntime", "openvino")
# /proc/cpuinfo flags that decide which kernels the runtimes can use.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class BackendChoice:
    """A server backend at a precision, e.g. openvino:bf16 (auto: the server's choice, bf16 where native)."""

    name: str
    precision: str = "auto"

    @property
    def label(self) -> str:
        """Its name in the report: the backend, with the precision when one is asked for (openvino-f32)."""
        return self.name if self.precision == "auto" else f"{self.name}-{self.precision}"

    def skip_reason(self, cpu: dict) -> Optional[str]:
        """Why this backend cannot be measured honestly on `cpu` (cpu_description()), or None."""
        if self.precision.startswith("bf16") and not native_bf16(cpu["flags"]):
            return f"no native bf16 on this CPU ({cpu['model']}; needs AVX512-BF16 or AMX): not measured, " \
                   "bf16 is never emulated"
        return None


def parse_backend(text: str) -> BackendChoice:
    """BACKEND[:PRECISION] as a BackendChoice; ValueError naming the valid values."""
    name, _, precision = text.partition(":")
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
    precision = precision or "auto"
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} in {text!r}; valid: {', '.join(PRECISIONS)}")
    if precision.startswith("bf16") and name != "openvino":
        raise ValueError(f"{name} computes in f32 only; bf16 is served by openvino")
    return BackendChoice(name, precision)


def measurable(choices: Sequence[BackendChoice], cpu: dict) -> Tuple[List[BackendChoice], List[dict]]:
    """The backends this CPU can measure honestly, and the others as {"backend", "reason"} (logged);
    ValueError when none is left."""
    backends, skipped = [], []
    for choice in choices:
        reason = choice.skip_reason(cpu)
        if reason:
            logger.warning("backend %s skipped: %s", choice.label, reason)
            skipped.append({"backend": choice.label, "reason": reason})
        else:
            backends.append(choice)
    if not backends:
        raise ValueError("no --backend left to measure on this CPU")
    return backends, skipped


def native_bf16(flags: List[str]) -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX), the case where bf16 is worth measuring."""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_description() -> dict:
    """The CPU model, the cores this process may use and which of CPU_FLAGS it has (Linux /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, text = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = text.strip()
                elif key == "flags":
                    flags = set(text.split())
    except OSError:
        pass
    return {"model": model, "usable_cores": len(os.sched_getaffinity(0)),
            "flags": [flag for flag in CPU_FLAGS if flag in flags]}
