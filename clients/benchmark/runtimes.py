"""What the benchmark compares beside the offline baseline, and the CPU it ran on.

RUNTIMES are the names `python -m serving.offline --runtime` accepts (serving/onnx_runtimes.py);
whether bf16 is worth asking for follows from the CPU's flags.
"""
import os
import platform
from typing import List

RUNTIMES = ("onnxruntime", "openvino")
# /proc/cpuinfo flags that decide which kernels the runtimes can use.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


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
