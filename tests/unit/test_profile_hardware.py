"""The hardware measurement, on tiny sizes: positive numbers, and the JSON file round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from compute.cost_model import HardwareProfile
from service.planning.profile_hardware import PROFILE_FILE, load, measure, save


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_measure_gives_a_measured_local_profile(dtype: str) -> None:
    profile = measure(dtype, size=64, copy_mib=1, repeats=2)
    assert profile.name == "local" and profile.source == "measured" and profile.dtype == dtype
    assert profile.flops > 0 and profile.bandwidth > 0
    assert profile.intensity == profile.flops / profile.bandwidth


def test_unknown_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown dtype"):
        measure("int3", size=8, copy_mib=1, repeats=1)


def test_profile_round_trips_through_the_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert load(state) is None
    profile = measure("float32", size=32, copy_mib=1, repeats=1)
    path = save(profile, state)
    assert path == state / PROFILE_FILE
    assert load(state) == profile
    assert list(state.iterdir()) == [path]


def test_saved_price_survives(tmp_path: Path) -> None:
    priced = HardwareProfile(name="h100", flops=989e12, bandwidth=3.35e12, price_per_hour=2.5, source="spec")
    save(priced, tmp_path)
    assert load(tmp_path) == priced
