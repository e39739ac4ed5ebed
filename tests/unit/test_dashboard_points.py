"""The accuracy chart's grouping: series named by setting, one family per panel, each family's own Pareto front, and
the shipped runs split into their suites."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from service.dashboard.points import accuracy_points, families, fronts, label, setting
from service.planning.evidence import shipped_runs
from service.state.ledger import LedgerRecord

from .test_dashboard_data import record


def test_series_are_named_by_setting_as_a_person_reads_it() -> None:
    assert label("majority", {"name": "majority", "n": 8, "temperature": 0.7}) == "majority n=8 T=0.7"
    assert label("none", {"temperature": 0.0}) == "plain T=0"
    assert label("best_of_n", {"n": 4, "temperature": 0.8, "select": "code_tests", "score": "self_certainty"}) == (
        "best_of_n n=4 T=0.8 score=self_certainty select=code_tests"
    )
    early = {"n": 8, "temperature": 0.7, "early_stop": {"name": "deepconf", "mode": "online", "warmup": 4}}
    assert label("majority", early) == "majority n=8 T=0.7 early_stop=deepconf(mode=online warmup=4)"
    kinetics = {"budget": {"eflops": 1e11}, "family": "arithmetic", "temperature": 0.4, "plan": {"n": 4}}
    assert label("kinetics", kinetics) == "kinetics T=0.4 budget=(eflops=1e+11)"  # the family is the panel's; the plan an outcome
    assert setting("kinetics", kinetics) == "kinetics(budget={'eflops': 100000000000.0}, family=arithmetic, temperature=0.4)"
    assert label("none", {}) == "plain"
    assert label("atts", {"n": 2, "temperature": 0.8, "alpha": 0.2, "samples": 6}, omit={"samples", "n", "temperature"}) == "atts n=2 T=0.8 alpha=0.2"


@given(st.dictionaries(st.sampled_from(["n", "temperature", "select", "plan", "x"]), st.integers(0, 9) | st.none()))
def test_a_label_says_every_knob_but_the_plan(params: dict[str, Any]) -> None:
    said = label("majority", params)
    for key, value in params.items():
        if key != "plan" and value is not None:
            assert f"{'T' if key == 'temperature' else key}={value}" in said.split()
    assert "plan" not in said


def served(i: int, family: str | None, tokens: int, correct: bool, n: int = 4) -> LedgerRecord:
    params: dict[str, Any] = {"name": "kinetics", "n": n, "plan": {"n": i}} | ({"family": family} if family else {})
    return record(f"{i:032x}", 0.0, strategy="kinetics", params=params, completion_tokens=tokens, correct=correct)


def test_each_family_has_its_own_panel_and_front() -> None:
    records = [
        served(1, "arithmetic", 10, True),
        served(2, "arithmetic", 10, False),  # same setting (plans differ): one point, accuracy 0.5
        served(3, "arithmetic", 100, False, n=8),  # dearer and worse: dominated
        served(4, "code", 500, False, n=8),  # would be dominated on one axis; alone in its family, it is the front
        served(5, None, 50, True),
    ]
    points = accuracy_points(records, {})
    assert families(points) == ["arithmetic", "code", "default"]
    by = {(p.family, p.label): p for p in points}
    assert by[("arithmetic", "kinetics n=4")].accuracy == 0.5 and by[("arithmetic", "kinetics n=4")].requests == 2
    front = fronts(points)
    assert front == {
        "arithmetic": [by[("arithmetic", "kinetics n=4")].id],
        "code": [by[("code", "kinetics n=8")].id],
        "default": [by[("default", "kinetics n=4")].id],
    }
    assert all(p.origin == "ledger" and p.source == "request" for p in points)


def test_the_shipped_runs_are_panels_of_their_suites() -> None:
    runs = shipped_runs()
    records = [r for run in runs for r in run.records]
    points = accuracy_points(records, {run.name: run.origin for run in runs})
    assert families(points) == ["arithmetic", "humaneval", "tools_json"]
    assert {p.origin for p in points} == {"shipped"}
    assert {"program n=8 T=0.6", "majority n=8 T=0.6"} <= {p.label for p in points if p.family == "arithmetic"}
    assert {p.label for p in points if p.family == "tools_json"} >= {"plain T=0", "majority n=8 T=0.7"}
    arithmetic = {p.label for p in points if p.family == "arithmetic"}
    assert {"plain T=0", "majority n=8 T=0.4", "majority n=16 T=0.8"} <= arithmetic
    atts = sorted(p.label for p in points if p.strategy == "atts")  # a dozen knobs each, most of them shared
    assert atts[:3] == ["atts T=0.8 alpha=0", "atts T=0.8 alpha=0 draft=smollm2-fp32 target=smollm2-fp32", "atts T=0.8 alpha=0.1"]
    assert "atts T=0.8 takeovers=8" in atts and len(set(atts)) == 9
    assert all("samples=6" in p.setting and "turns=4" in p.setting for p in points if p.strategy == "atts")  # the whole setting stays
    humaneval = {p.label for p in points if p.family == "humaneval"}
    assert "best_of_n n=8 T=0.8 score=self_certainty select=code_tests" in humaneval and not humaneval & {"majority n=8 T=0.4"}
    front = fronts(points)
    assert set(front) == {"arithmetic", "humaneval", "tools_json"} and all(front.values())
    ids = {p.id: p for p in points}
    for family, members in front.items():
        on = [ids[i] for i in members]
        assert all(p.family == family for p in on)
        assert [p.mean_completion_tokens for p in on] == sorted(p.mean_completion_tokens for p in on)
        assert [p.accuracy for p in on] == sorted(p.accuracy or 0 for p in on)  # dearer on the front means more accurate
