"""The accuracy table's evidence from ledger and benchmark records: what counts as an observation of which
configuration, which family a record belongs to, and the natural-length profile."""

from __future__ import annotations

from typing import Any

from compute.accuracy import Observation
from service.planning.accuracy import evidence, family_of, observation
from service.state.ledger import LedgerRecord


def record(
    strategy: str = "majority", params: dict[str, Any] | None = None, correct: bool | None = True, completion_tokens: int = 80, **extra: Any
) -> LedgerRecord:
    fields: dict[str, Any] = {
        "id": "r",
        "time": 0.0,
        "route": "/v1/chat/completions",
        "model": "smollm2-135m",
        "strategy": strategy,
        "params": params if params is not None else {"n": 4},
        "status": 200,
        "outcome": "served",
        "latency_s": 1.0,
        "completion_tokens": completion_tokens,
        "correct": correct,
        "finish_reason": "stop",
        **extra,
    }
    return LedgerRecord(**fields)


def test_a_sampling_strategys_record_is_an_observation_of_its_n_and_the_cap_its_samples_needed() -> None:
    found = observation(record(params={"n": 4}, completion_tokens=80))
    assert found == (Observation(n=4, max_tokens=32, kv_budget=None, correct=True), 20)
    plain = observation(record("none", {"n": 1, "max_tokens": 64}, completion_tokens=12, correct=False))
    assert plain == (Observation(n=1, max_tokens=64, kv_budget=None, correct=False), 12)


def test_a_kinetics_record_is_an_observation_of_its_own_plan() -> None:
    planned = record("kinetics", {"budget": {"eflops": 1e12}, "plan": {"n": 8, "max_tokens": 128, "kv_budget": 256}}, completion_tokens=400)
    assert observation(planned) == (Observation(n=8, max_tokens=128, kv_budget=256, correct=True), 50)


def test_what_is_not_an_observation() -> None:
    assert observation(record(correct=None)) is None
    assert observation(record("rtv")) is None
    assert observation(record("kinetics", {"budget": {"eflops": 1e12}})) is None  # a benchmark row: no plan recorded
    assert observation(record(outcome="failed", status=503)) is None
    cut = observation(record(finish_reason="length"))
    assert cut is not None and cut[1] is None  # a cut sample says nothing of its natural length


def test_families_come_from_the_benchmark_suite_or_the_request() -> None:
    assert family_of(record(source="benchmark", run="accuracy-arithmetic-20261123T124623Z")) == "arithmetic"
    assert family_of(record("kinetics", {"family": "code"})) == "code"
    assert family_of(record()) == "default"


def test_evidence_is_kept_per_model_and_family_and_default_pools_them_all() -> None:
    records = [
        record(source="benchmark", run="accuracy-arithmetic-2026"),
        record(source="benchmark", run="accuracy-humaneval-2026", correct=False),
        record(model="other-model"),
        record(correct=None),
    ]
    assert len(evidence(records, "smollm2-135m", "arithmetic").observations) == 1
    pooled = evidence(records, "smollm2-135m", "default")
    assert [o.correct for o in pooled.observations] == [True, False] and pooled.lengths == [20, 20]
