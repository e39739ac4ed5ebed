"""The accuracy table's evidence from ledger and benchmark records: what counts as an observation of which
configuration, which family a record belongs to, and the natural-length profile."""

from __future__ import annotations

from typing import Any

from compute.accuracy import Observation
from service.planning.accuracy import evidence, family_of, observation
from service.planning.evidence import Origin
from service.state.ledger import Feedback, LedgerRecord


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
    origins: dict[str, Origin] = {"accuracy-arithmetic-2026": "shipped", "accuracy-humaneval-2026": "imported"}
    arithmetic = evidence(records, "smollm2-135m", "arithmetic", origins)
    assert len(arithmetic.observations) == 1 and arithmetic.runs == {"accuracy-arithmetic-2026": 1}
    pooled = evidence(records, "smollm2-135m", "default", origins)
    assert [o.correct for o in pooled.observations] == [True, False] and pooled.lengths == [20, 20]
    assert pooled.sources() == {
        "shipped": [{"run": "accuracy-arithmetic-2026", "records": 1}],
        "imported": [{"run": "accuracy-humaneval-2026", "records": 1}],
        "results_dir": [],
        "ledger": {"records": 0, "graded": 0, "feedback": 0},
        "prior_only": False,
    }


def test_the_ledger_counts_its_graded_and_its_feedback_marked_records_apart() -> None:
    marked = Feedback(correct=False, time=0.0)
    records = [record(), record(correct=False), record(feedback=marked, correct=False), record(correct=None), record("rtv")]
    found = evidence(records, "smollm2-135m", "default", {})
    assert (found.graded, found.feedback, len(found.observations)) == (2, 1, 3)
    assert found.sources()["ledger"] == {"records": 3, "graded": 2, "feedback": 1}
    nothing = evidence(records, "another-model", "default", {})
    assert nothing.sources()["prior_only"] and nothing.sources()["ledger"]["records"] == 0
