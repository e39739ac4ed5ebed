"""The cost-accuracy chart's maths: one point per strategy setting of each population (served traffic, or one
benchmark run), grouped by task family, and each family's Pareto front.

A family is a benchmark's suite (read from the run's name) or, for served traffic, the `family` a `kinetics` or
`auto` request named; requests that name none are `default`. Accuracies of different families are not on one
scale (a 30% arithmetic score and a 10% HumanEval score say nothing of each other), so each family is its own
panel with its own front. Within a family, points of different runs and of served traffic share a front: it is
the cheapest way the evidence shows to each accuracy on that kind of task.

Series are named by the setting as a person reads it (`majority n=8 T=0.7`), not by a result file: the strategy,
its n and temperature, and the knobs that tell it from the family's other settings of that strategy (ATTS's
benchmark varies alpha over a dozen fixed knobs; its series are `atts T=0.8 alpha=0.2` and so on). The whole
setting is in each point's hover and `setting`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from service.planning.accuracy import DEFAULT_FAMILY, family_of
from service.state.ledger import LedgerRecord

SERVED_POPULATION = "request"
OUTCOME_PARAMS = ("name", "plan")
"""Not knobs: the strategy's name is said apart, and a `kinetics` or `auto` request's plan is what it decided."""
LABEL_FIRST = ("n", "temperature")
LABEL_SKIP = ("family",)
"""Said by the panel the point is drawn in."""
SHORT = {"temperature": "T"}


class Point(BaseModel):
    """One strategy setting of one population on the cost-accuracy chart."""

    id: str
    population: str
    source: Literal["request", "benchmark"]
    run: str | None
    origin: str = Field(description="where the point's records came from: ledger, shipped, imported or results_dir")
    family: str
    model: str | None
    strategy: str
    setting: str
    label: str = Field(
        description="the setting as the chart's series names it: strategy, n, T and the knobs that tell it from its family's other settings of the strategy"
    )
    requests: int
    known: int = Field(description="requests whose correctness is known")
    correct: int
    accuracy: float | None
    stderr: float | None
    mean_completion_tokens: float
    mean_total_tokens: float
    pareto: bool = False


def knobs(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sorted(params.items()) if k not in OUTCOME_PARAMS and v is not None}


def setting(strategy: str, params: Mapping[str, Any]) -> str:
    """The ledger's `setting` (majority(n=4, temperature=0.4)) without the plan a request's run decided."""
    found = knobs(params)
    return strategy + ("(" + ", ".join(f"{k}={v}" for k, v in found.items()) + ")" if found else "")


def _value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        named = value.get("name")
        inner = " ".join(f"{k}={_value(v)}" for k, v in sorted(value.items()) if k != "name" and v is not None)
        return f"{named}({inner})" if named is not None and inner else str(named) if named is not None else f"({inner})"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_value(v) for v in value) + "]"
    return str(value)


def label(strategy: str, params: Mapping[str, Any], omit: Collection[str] = ()) -> str:
    """`majority n=8 T=0.7`, `plain T=0`, `best_of_n n=4 T=0.8 select=code_tests`: the strategy (`plain` for
    none), then n and the temperature, then every other knob by name but those in `omit`."""
    found = {k: v for k, v in knobs(params).items() if k not in LABEL_SKIP and (k in LABEL_FIRST or k not in omit)}
    order = [k for k in LABEL_FIRST if k in found] + [k for k in found if k not in LABEL_FIRST]
    return " ".join(["plain" if strategy == "none" else strategy, *(f"{SHORT.get(k, k)}={_value(found[k])}" for k in order)])


def shared(settings: Sequence[Mapping[str, Any]]) -> set[str]:
    """The knobs every one of several settings has, with one value: they tell none of them apart."""
    if len(settings) < 2:
        return set()
    first, *rest = [knobs(p) for p in settings]
    return {k for k, v in first.items() if all(k in other and other[k] == v for other in rest)}


def population(record: LedgerRecord) -> str:
    return f"benchmark:{record.run}" if record.source == "benchmark" else SERVED_POPULATION


def accuracy_points(records: Iterable[LedgerRecord], origins: Mapping[str, str]) -> list[Point]:
    """One point per (population, family, model, setting), over served records only: a failed or cancelled
    request has no answer to be right about, and its tokens are counted in the volume chart instead. `origins`
    says where each benchmark run came from."""
    groups: dict[tuple[str, str, str | None, str], list[LedgerRecord]] = defaultdict(list)
    for r in records:
        if r.outcome == "served":
            groups[(population(r), family_of(r), r.model, setting(r.strategy, r.params))].append(r)
    kinds: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for (_, family, _, key), members in groups.items():
        kinds[(family, members[0].strategy)][key] = members[0].params
    omit = {kind: shared(list(settings.values())) for kind, settings in kinds.items()}
    points = []
    for (pop, family, model, key), members in sorted(groups.items(), key=lambda g: (g[0][0], g[0][1], g[0][2] or "", g[0][3])):
        known = [r.correct for r in members if r.correct is not None]
        right = sum(known)
        accuracy = right / len(known) if known else None
        first = members[0]
        points.append(
            Point(
                id=f"{pop}|{family}|{model or ''}|{key}",
                population=pop,
                source=first.source,
                run=first.run,
                origin=origins.get(first.run or "", "ledger") if first.source == "benchmark" else "ledger",
                family=family,
                model=model,
                strategy=first.strategy,
                setting=key,
                label=label(first.strategy, first.params, omit[(family, first.strategy)]),
                requests=len(members),
                known=len(known),
                correct=right,
                accuracy=round(accuracy, 6) if accuracy is not None else None,
                stderr=round(math.sqrt(accuracy * (1 - accuracy) / len(known)), 6) if accuracy is not None else None,
                mean_completion_tokens=round(sum(r.completion_tokens for r in members) / len(members), 3),
                mean_total_tokens=round(sum(r.prompt_tokens + r.completion_tokens for r in members) / len(members), 3),
            )
        )
    return points


def pareto_front(points: Sequence[Point]) -> list[str]:
    """The ids of the points no other point dominates (at least as accurate for no more mean generated tokens, and
    strictly better in one), ordered by tokens. Points whose accuracy is unknown take no part."""
    rated = [p for p in points if p.accuracy is not None]

    def dominates(a: Point, b: Point) -> bool:
        assert a.accuracy is not None and b.accuracy is not None
        no_worse = a.accuracy >= b.accuracy and a.mean_completion_tokens <= b.mean_completion_tokens
        return no_worse and (a.accuracy > b.accuracy or a.mean_completion_tokens < b.mean_completion_tokens)

    front = [p for p in rated if not any(dominates(q, p) for q in rated)]
    return [p.id for p in sorted(front, key=lambda p: (p.mean_completion_tokens, p.id))]


def families(points: Iterable[Point]) -> list[str]:
    """Panel order: named families alphabetically, then `default` (requests that named none)."""
    return sorted({p.family for p in points}, key=lambda f: (f == DEFAULT_FAMILY, f))


def fronts(points: Sequence[Point]) -> dict[str, list[str]]:
    """Each family's front; a family with no rated point has none."""
    found = {family: pareto_front([p for p in points if p.family == family]) for family in families(points)}
    return {family: ids for family, ids in found.items() if ids}
