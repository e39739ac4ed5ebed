"""The strategies a request may name, as the `strategy` field's pydantic models (paper defaults, validated ranges).

Only `none` (a plain call) is served so far; naming any other strategy is a clear 400 that lists what exists.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class NoneParams(BaseModel):
    """One engine call, passed through."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["none"] = "none"


StrategyParams = NoneParams
STRATEGY_NAMES = ("none",)


def split_model_name(model: str) -> tuple[str, str | None]:
    """`<model>@<strategy>` lets clients that can only set a model name pick a strategy with its defaults."""
    base, sep, strategy = model.partition("@")
    return base, (strategy if sep else None)
