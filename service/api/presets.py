"""Named strategy configurations from a YAML file (`PONDER_PRESETS`), chosen with `model="<model>@<preset>"`, so a
client that can only set a model name (a chat UI, an agent framework) gets any strategy with any knobs and budget.

    careful-math:
      description: majority of 16 at T=0.6, at most 4k tokens
      strategy: {name: majority, n: 16, temperature: 0.6}
      budget: {max_total_tokens: 4096}

Each entry is validated like a request's `strategy` and `budget` fields when the gateway starts, so a bad file
stops the gateway with the entry and field named rather than failing requests later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from service.api.protocol import Budget
from strategies.names import STRATEGY_NAMES
from strategies.registry import StrategyParams

NAME = r"^[A-Za-z0-9_.-]{1,64}$"


class PresetError(ValueError):
    pass


class Preset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME)
    description: str = ""
    strategy: StrategyParams
    budget: Budget | None = None

    def listing(self) -> dict[str, Any]:
        return {
            "id": self.name,
            "object": "preset",
            "description": self.description,
            "strategy": self.strategy.model_dump(),
            "budget": self.budget.model_dump() if self.budget else None,
        }


_PRESETS: TypeAdapter[list[Preset]] = TypeAdapter(list[Preset])


def load_presets(path: Path | None) -> dict[str, Preset]:
    if path is None:
        return {}
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PresetError(f"PONDER_PRESETS: cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise PresetError(f"PONDER_PRESETS: {path} must map preset names to configurations")
    try:
        presets = _PRESETS.validate_python([{"name": str(name), **(body or {})} for name, body in raw.items()])
    except (ValidationError, TypeError) as exc:
        raise PresetError(f"PONDER_PRESETS: {path}: {exc}") from exc
    clashes = sorted(p.name for p in presets if p.name in STRATEGY_NAMES)
    if clashes:
        raise PresetError(f"PONDER_PRESETS: preset names may not be strategy names: {', '.join(clashes)}")
    return {p.name: p for p in presets}
