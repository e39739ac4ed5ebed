"""The tool and JSON suite grades the answer as the API returns it: the right call or document is correct, anything
else (another tool, another city, extra calls, JSON that does not parse, a wrong field) is wrong, never an error."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from suites import structured

PROBLEMS = structured.problems()
TOOL = next(p for p in PROBLEMS if p.tier == "tool call")
DOC = next(p for p in PROBLEMS if p.tier == "json")


def message(content: str | None = None, calls: list[tuple[str, str]] = ()) -> Any:
    tool_calls = [SimpleNamespace(function=SimpleNamespace(name=n, arguments=a)) for n, a in calls]
    return SimpleNamespace(content=content, tool_calls=tool_calls or None)


def test_the_suite_is_fixed_and_keeps_both_tiers() -> None:
    assert PROBLEMS == structured.problems()
    assert {p.tier for p in PROBLEMS[:2]} == {"tool call", "json"}
    assert len({p.id for p in PROBLEMS}) == len(PROBLEMS)


def test_a_tool_problem_wants_that_call_with_that_city() -> None:
    name, city = TOOL.expected["name"], TOOL.expected["city"]
    assert TOOL.correct(message(calls=[(name, json.dumps({"city": city.upper()}))]))
    other = next(t["function"]["name"] for t in structured.TOOLS if t["function"]["name"] != name)
    assert not TOOL.correct(message(calls=[(other, json.dumps({"city": city}))]))
    assert not TOOL.correct(message(calls=[(name, json.dumps({"city": city}))] * 2))
    assert not TOOL.correct(message(content=f"{name}({city})"))


def test_a_json_problem_wants_exactly_its_fields() -> None:
    assert DOC.correct(message(json.dumps(DOC.expected)))
    assert not DOC.correct(message(json.dumps({**DOC.expected, "age": DOC.expected["age"] + 1})))
    assert not DOC.correct(message(json.dumps({**DOC.expected, "age": str(DOC.expected["age"])})))


@given(st.text(max_size=80), st.text(max_size=20), st.text(max_size=80))
def test_any_output_is_graded_without_raising(content: str, name: str, arguments: str) -> None:
    for problem in (TOOL, DOC):
        assert problem.correct(message(content, [(name, arguments)])) in (True, False)
