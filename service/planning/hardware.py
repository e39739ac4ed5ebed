"""What the host can do fast. The engine dtype follows the CPU: bfloat16 only where the CPU has native bf16
(on an AVX2-only host bf16 is emulated and float32 is 3-4x faster; on AVX-512 BF16 hosts bf16 wins by ~25%)."""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path
from typing import Literal

CpuDtype = Literal["bfloat16", "float32"]
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_dtype() -> CpuDtype:
    return "bfloat16" if NATIVE_BF16_FLAGS & cpu_flags() else "float32"


@lru_cache(maxsize=1)
def host_info() -> dict[str, object]:
    """Recorded beside every benchmark result: the fastest engine settings differ between hosts."""
    model_name = ""
    try:
        model_name = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = cpu_flags()
    return {
        "cpu": model_name or platform.processor(),
        "cores": os.cpu_count(),
        "flags": [f for f in REPORTED_FLAGS if f in flags],
        "engine_dtype": cpu_dtype(),
        "python": platform.python_version(),
    }
