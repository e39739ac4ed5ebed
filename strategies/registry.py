"""The strategies a request may name: the `strategy` field is a discriminated union on `name` of each strategy's
parameters (paper defaults, validated ranges), and `STRATEGIES` maps a name to the coroutine that runs it.
`none` is a plain call, served by the gateway's pass-through path (it streams tokens as they come)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from strategies.base import Context, StrategyResult, Task
from strategies.best_of_n import BestOfNParams, best_of_n
from strategies.best_of_n import check as check_best_of_n
from strategies.majority import MajorityParams, majority
from strategies.pdr import PDRParams, pdr
from strategies.rtv import RTVParams, rtv
from strategies.rtv import check as check_rollouts


class NoneParams(BaseModel):
    """One engine call, passed through."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["none"] = "none"


StrategyParams = Annotated[NoneParams | MajorityParams | BestOfNParams | RTVParams | PDRParams, Field(discriminator="name")]
StrategyFn = Callable[[Context, Any], Awaitable[StrategyResult]]

STRATEGIES: dict[str, StrategyFn] = {"majority": majority, "best_of_n": best_of_n, "rtv": rtv, "pdr": pdr}
STRATEGY_NAMES = ("none", *STRATEGIES)
# Checks a strategy makes of the request before anything is sampled or streamed (so that they are plain 400s).
CHECKS: dict[str, Callable[[Task, Any], None]] = {"best_of_n": check_best_of_n, "rtv": check_rollouts, "pdr": check_rollouts}
_PARAMS: TypeAdapter[Any] = TypeAdapter(StrategyParams)


def default_params(name: str) -> BaseModel:
    """A strategy's parameters with the paper's defaults, for `<model>@<strategy>`."""
    return _PARAMS.validate_python({"name": name})


def check_input(task: Task, params: BaseModel) -> None:
    check = CHECKS.get(params.name)  # type: ignore[attr-defined]
    if check is not None:
        check(task, params)


def split_model_name(model: str) -> tuple[str, str | None]:
    """`<model>@<strategy>` lets clients that can only set a model name pick a strategy with its defaults."""
    base, sep, strategy = model.partition("@")
    return base, (strategy if sep else None)
