"""Canonical forms for voting (verifiers/structured.py): equal meaning canonicalises equal whatever the spelling (key
order, whitespace, 1 against 1.0, the order of parallel calls), different meaning never does, and no text, however
hostile, makes canonicalisation raise."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verifiers.structured import canonical_calls, canonical_json, exact_groups, pointed_json, pointer_tokens

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(allow_nan=False, allow_infinity=False, width=64), st.text(max_size=8))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=20)
JSONISH = st.text(alphabet='{}[]":,0123456789.eE-+ truefalsnul\\/~\nabcdf', max_size=60)


def spelt(value: Any, data: st.DataObject) -> str:
    """The value written as JSON, spelt one of the ways a model might: keys in any order, any whitespace, an integer
    as 4, 4.0 or 4e0."""
    space = data.draw(st.sampled_from(["", " ", "\n  "]))
    if isinstance(value, dict):
        keys = data.draw(st.permutations(list(value)))
        return "{" + space + ("," + space).join(f"{json.dumps(k)}{space}:{space}{spelt(value[k], data)}" for k in keys) + space + "}"
    if isinstance(value, list):
        return "[" + space + ("," + space).join(spelt(v, data) for v in value) + space + "]"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53:
        return data.draw(st.sampled_from([str(value), f"{value}.0", f"{value}e0", f"{value}.000E+0"]))
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return data.draw(st.sampled_from([repr(value), str(int(value))]))
    return json.dumps(value)


def same(a: Any, b: Any) -> bool:
    """Equal as JSON values: numbers by value, but a boolean is never a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None)
@given(value=VALUES, data=st.data())
def test_every_spelling_of_a_value_canonicalises_alike(value: Any, data: st.DataObject) -> None:
    first, second = spelt(value, data), spelt(value, data)
    canonical = canonical_json(first)
    assert canonical is not None and canonical == canonical_json(second) == canonical_json(json.dumps(value))
    assert canonical_json(canonical) == canonical  # a canonical form is its own
    assert same(json.loads(canonical), value)  # and means what was written


@settings(max_examples=300, deadline=None)
@given(a=VALUES, b=VALUES)
def test_different_values_never_canonicalise_alike(a: Any, b: Any) -> None:
    assert (canonical_json(json.dumps(a)) == canonical_json(json.dumps(b))) == same(a, b)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ('{"b": 1, "a": [1.0, 2e0, -0.0]}', '{"a":[1,2,0],"b":1}'),
        (' \n{"answer":4.50}\t', '{"answer":4.5}'),
        ("true", "true"),
        ('"caf\\u00e9"', '"café"'),
        ('"\\ud800"', '"\\ud800"'),  # a lone surrogate no UTF-8 body could carry stays escaped
        ("12345678901234567890123", "12345678901234567890123"),  # integers stay exact
    ],
)
def test_canonical_json(text: str, canonical: str) -> None:
    assert canonical_json(text) == canonical


@pytest.mark.parametrize("text", ["", "{", "{'a': 1}", "NaN", "[Infinity]", "1e400", "{} {}", "[1,]", "[" * 100_000 + "]" * 100_000, "9" * 5000])
def test_what_is_not_json_has_no_canonical_form(text: str) -> None:
    assert canonical_json(text) is None


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(st.text(max_size=200), JSONISH), pointer=st.sampled_from(["", "/a", "/0", "/a/b~1c", "/~0"]))
def test_no_text_makes_canonicalisation_raise(text: str, pointer: str) -> None:
    calls = canonical_calls([("f", text)])
    for canonical in (canonical_json(text), pointed_json(text, pointer), calls.answer if calls else None):
        if canonical is not None:
            canonical.encode("utf-8")  # whatever comes back can go into a response body


@settings(max_examples=200, deadline=None)
@given(path=st.lists(st.text(alphabet="ab/~0 1", max_size=4), max_size=4), leaf=VALUES, data=st.data())
def test_a_pointer_names_the_value_at_its_path(path: list[str], leaf: Any, data: st.DataObject) -> None:
    document: Any = leaf
    for key in reversed(path):
        document = {key: document, "other": 0} if key != "other" else {key: document}
    pointer = "".join("/" + key.replace("~", "~0").replace("/", "~1") for key in path)
    assert pointer_tokens(pointer) == path
    assert pointed_json(spelt(document, data), pointer) == canonical_json(json.dumps(leaf))


def test_pointers_into_arrays_and_at_nothing() -> None:
    text = '{"items": [{"id": 7}, {"id": 8.0}], "a/b": 1, "m~n": 2}'
    assert pointed_json(text, "/items/1/id") == "8"
    assert pointed_json(text, "/a~1b") == "1" and pointed_json(text, "/m~0n") == "2"
    assert pointed_json(text, "") == canonical_json(text)
    for missing in ("/items/2", "/items/01", "/items/-", "/nope", "/items/0/id/x"):
        assert pointed_json(text, missing) is None
    assert pointed_json("not json", "/a") is None


@pytest.mark.parametrize("pointer", ["answer", "/a~2", "/~", "#/answer"])
def test_a_malformed_pointer_says_why(pointer: str) -> None:
    with pytest.raises(ValueError, match="pointer"):
        pointer_tokens(pointer)


CALL_ARGUMENTS = st.dictionaries(st.sampled_from(["city", "unit", "days"]), SCALARS, max_size=3)


@settings(max_examples=200, deadline=None)
@given(
    calls=st.lists(st.tuples(st.sampled_from(["get_weather", "get_time", "f"]), CALL_ARGUMENTS), min_size=1, max_size=4),
    data=st.data(),
)
def test_tool_calls_canonicalise_alike_whatever_their_order_and_spelling(calls: list[tuple[str, dict[str, Any]]], data: st.DataObject) -> None:
    reordered = data.draw(st.permutations(calls))
    first = canonical_calls([(name, spelt(arguments, data)) for name, arguments in calls])
    second = canonical_calls([(name, spelt(arguments, data)) for name, arguments in reordered])
    assert first is not None and first == second
    assert first.names == tuple(sorted(name for name, _ in calls))


def test_a_tool_call_is_its_name_and_canonical_arguments() -> None:
    one = canonical_calls([("get_weather", '{"unit": "C", "city": "Paris"}')])
    assert one is not None and one.names == ("get_weather",) and one.answer == 'get_weather({"city":"Paris","unit":"C"})'
    two = canonical_calls([("get_weather", '{"city":"Paris"}'), ("get_time", "{}")])
    assert two is not None and two.names == ("get_time", "get_weather") and two.answer == 'get_time({}); get_weather({"city":"Paris"})'
    assert canonical_calls([("get_weather", '{"city": "Lyon"}')]) != one
    assert canonical_calls([("get_weather", '{"city": "Paris"')]) is None  # arguments that do not parse: no vote
    assert canonical_calls([("get_weather", '{"city": "Paris"}'), ("get_time", "{")]) is None
    assert canonical_calls([]) is None


def test_exact_groups_number_keys_by_first_appearance() -> None:
    assert exact_groups(["b", None, "a", "b", ("x",), ("x",)]) == [0, None, 1, 0, 2, 2]


def test_integral_floats_are_integers_and_others_keep_their_value() -> None:
    assert canonical_json("1e2") == canonical_json("100") == "100"
    assert canonical_json("0.1") == "0.1" and math.isclose(json.loads(canonical_json("1.5e-7") or ""), 1.5e-7)
