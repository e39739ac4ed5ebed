"""The strategies a request may name, registered here and nowhere else: the `strategy` field is a discriminated
union on `name` of each strategy's parameters (paper defaults, validated ranges), and `STRATEGIES` maps a name to
the coroutine that runs it. `none` is a plain call, served by the gateway's pass-through path (it streams tokens as
they come). A majority or best-of-N rollout may itself be any strategy, so those two parameter models are
completed here, once the union exists: take strategy parameters from this module, not from the strategy's own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from strategies.ahead_by_k import AheadByKParams, ahead_by_k
from strategies.atts import ATTSParams, atts
from strategies.atts import check as check_atts
from strategies.auto import AutoParams, auto
from strategies.base import Context, StrategyResult, Task
from strategies.best_of_n import BestOfNParams, best_of_n
from strategies.best_of_n import check as check_best_of_n
from strategies.kinetics import KineticsParams, kinetics
from strategies.kinetics import check as check_kinetics
from strategies.majority import MajorityParams, majority
from strategies.majority import check as check_majority
from strategies.pdr import PDRParams, pdr
from strategies.program import ProgramParams, program
from strategies.rtv import RTVParams, rtv
from strategies.rtv import check as check_rollouts
from strategies.stopping import ProbeStop


class NoneParams(BaseModel):
    """One engine call, passed through."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["none"] = "none"


StrategyParams = Annotated[
    NoneParams | MajorityParams | BestOfNParams | RTVParams | PDRParams | ATTSParams | KineticsParams | AutoParams | AheadByKParams | ProgramParams,
    Field(discriminator="name"),
]
StrategyFn = Callable[[Context, Any], Awaitable[StrategyResult]]
for _composing in (MajorityParams, BestOfNParams):  # their `rollout` may itself be any strategy
    _composing.model_rebuild(_types_namespace={"StrategyParams": StrategyParams})

STRATEGIES: dict[str, StrategyFn] = {
    "majority": majority,
    "best_of_n": best_of_n,
    "rtv": rtv,
    "pdr": pdr,
    "atts": atts,
    "kinetics": kinetics,
    "auto": auto,
    "ahead_by_k": ahead_by_k,
    "program": program,
}
# Checks a strategy makes of the request before anything is sampled or streamed (so that they are plain 400s).
CHECKS: dict[str, Callable[[Task, Any], None]] = {
    "majority": check_majority,
    "best_of_n": check_best_of_n,
    "rtv": check_rollouts,
    "pdr": check_rollouts,
    "atts": check_atts,
    "kinetics": check_kinetics,
}
STRATEGY_PARAMS: TypeAdapter[Any] = TypeAdapter(StrategyParams)


def default_params(name: str) -> StrategyParams:
    """A strategy's parameters with the paper's defaults, for `<model>@<strategy>`."""
    params: StrategyParams = STRATEGY_PARAMS.validate_python({"name": name})
    return params


def keeps_format(params: BaseModel) -> bool:
    """Whether a strategy's answer is a sample of the task's own prompt, which the engine holds to the request's
    `response_format` or forced tool choice (and whose answers it votes on in that form, strategies/ballots.py). RTV,
    PDR and ATTS write theirs from prompts of their own; a probe-stopped rollout ends in the probe's boxed answer."""
    name: str = params.name  # type: ignore[attr-defined]
    if name in ("majority", "best_of_n"):
        if isinstance(getattr(params, "early_stop", None), ProbeStop):
            return False
        inner = getattr(params, "rollout", None)
        return inner is None or keeps_format(inner)
    return name in ("ahead_by_k", "kinetics", "auto")


def check_input(task: Task, params: BaseModel) -> None:
    """A strategy's checks, and those of the strategy its rollouts run."""
    check = CHECKS.get(params.name)  # type: ignore[attr-defined]
    if check is not None:
        check(task, params)
    if (inner := getattr(params, "rollout", None)) is not None and isinstance(inner, BaseModel):
        check_input(task, inner)
