"""This host's peak matmul FLOP/s and memory bandwidth, so eFLOPs can be priced in local seconds.

    flops     = max over repeats of 2 * size^3 / time(size x size @ size x size)   in the dtype the engine runs
    bandwidth = max over repeats of 2 * bytes / time(dst.copy_(src))             read + write, well past the caches
    I         = flops / bandwidth

Best of a few repeats after a warm-up run: the peak is what the cost model means, and the first run pays for page
faults and kernel selection. Saved as JSON in the state directory, so the gateway reads it without measuring.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from compute.cost_model import HardwareProfile

PROFILE_FILE = "hardware_profile.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MIB = 2**20


def measure(dtype: str = "float32", *, size: int = 2048, copy_mib: int = 256, repeats: int = 5) -> HardwareProfile:
    """A few seconds on a small CPU host with the defaults; tests pass tiny sizes."""
    return HardwareProfile(
        name="local",
        flops=matmul_flops(dtype, size, repeats),
        bandwidth=copy_bandwidth(copy_mib, repeats),
        source="measured",
        dtype=dtype,
    )


def matmul_flops(dtype: str, size: int, repeats: int) -> float:
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; one of {sorted(DTYPES)}")
    a = torch.randn(size, size).to(DTYPES[dtype])
    b = torch.randn(size, size).to(DTYPES[dtype])
    out = torch.empty_like(a)
    return 2 * size**3 / _best_seconds(lambda: torch.matmul(a, b, out=out), repeats)


def copy_bandwidth(copy_mib: int, repeats: int) -> float:
    src = torch.ones(copy_mib * MIB // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    nbytes = src.numel() * src.element_size()
    return 2 * nbytes / _best_seconds(lambda: dst.copy_(src), repeats)


def _best_seconds(run: Callable[[], object], repeats: int) -> float:
    run()
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return max(best, 1e-9)


def save(profile: HardwareProfile, state_dir: Path) -> Path:
    """Written beside, then renamed, so a gateway starting meanwhile never reads half a file."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / PROFILE_FILE
    partial = path.with_suffix(".json.tmp")
    partial.write_text(profile.model_dump_json(indent=2))
    partial.replace(path)
    return path


def load(state_dir: Path) -> HardwareProfile | None:
    path = state_dir / PROFILE_FILE
    if not path.exists():
        return None
    return HardwareProfile.model_validate_json(path.read_text())
