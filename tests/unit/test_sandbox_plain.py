"""Properties of the plain data that crosses between a candidate and its harness (`runner.encode` / `decode`).

Everything a candidate returns reaches the tests through these two functions, and a hostile candidate writes
the JSON itself, so: plain values survive the trip with their exact types (a test comparing `(1, 2)` with a
list must see a tuple), `decode` fails only in the ways the harness catches, and nothing but plain data (no
subclass with its own `__eq__`, no object, no nesting that would exhaust the stack) is ever encoded.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verifiers.sandbox.runner import MAX_DEPTH, NotPlain, decode, encode

# what decode may raise: the harness turns each into a failed test, not a crash of its own
DECODE_ERRORS = (NotPlain, RecursionError, ValueError, TypeError)

hashable = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary() | st.complex_numbers(),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=8,
)
plain = st.recursive(
    hashable,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.sets(hashable, max_size=4)
        | st.frozensets(hashable, max_size=4)
        | st.dictionaries(hashable, inner, max_size=4)
    ),
    max_leaves=20,
)
TAGS = ["float", "bytes", "complex", "tuple", "set", "frozenset", "dict"]
json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(10**400), 10**400)
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(["nan", "inf", "-inf", "0a", "zz", ""]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(TAGS) | st.text(max_size=4), inner, max_size=2),
    max_leaves=20,
)


def crossed(value: Any) -> Any:
    """The value as the harness gets it: encoded, through JSON text, decoded."""
    return decode(json.loads(json.dumps(encode(value))))


def same(a: Any, b: Any) -> bool:
    """Equal with exact types all the way down; NaN equals NaN and -0.0 is not 0.0 (what `==` would blur)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if type(a) is complex:
        return same(a.real, b.real) and same(a.imag, b.imag)
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return same(list(a.items()), list(b.items()))
    if type(a) in (set, frozenset):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    return a == b


@settings(max_examples=300, deadline=None)
@given(plain)
def test_plain_data_crosses_with_its_exact_types(value: Any) -> None:
    assert same(crossed(value), value)


@settings(max_examples=300, deadline=None)
@given(json_like)
def test_decode_fails_only_in_ways_the_harness_catches(data: Any) -> None:
    try:
        decode(data)
    except DECODE_ERRORS:
        pass


class Int(int):
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = int.__hash__


class Str(str):
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = str.__hash__


class List(list):  # type: ignore[type-arg]
    def __eq__(self, other: object) -> bool:
        return True


class Dict(dict):  # type: ignore[type-arg]
    def __eq__(self, other: object) -> bool:
        return True


class Anything:
    def __eq__(self, other: object) -> bool:
        return True


impostors = (
    st.builds(Int, st.integers())
    | st.builds(Str, st.text())
    | st.builds(List, st.lists(st.integers()))
    | st.builds(Dict, st.dictionaries(st.text(), st.integers()))
    | st.builds(Anything)
    | st.sampled_from([object(), len, int, math, lambda: None, iter([]), range(3), bytearray(b"x"), memoryview(b"x")])
)


@settings(max_examples=200, deadline=None)
@given(impostors, st.sampled_from([lambda x: x, lambda x: [x], lambda x: (1, x), lambda x: {"k": x}, lambda x: {x: 1} if x.__hash__ else [x]]))
def test_encode_refuses_anything_but_plain_data(impostor: Any, wrap: Any) -> None:
    """Exact types only, at any depth: a subclass could answer `==` as it likes."""
    with pytest.raises(NotPlain):
        encode(wrap(impostor))


def nested(depth: int, make: Any = lambda inner: [inner]) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = make(value)
    return value


NESTINGS = {"list": lambda inner: [inner], "tuple": lambda inner: (inner,), "dict": lambda inner: {"k": inner}}


@pytest.mark.parametrize("make", NESTINGS.values(), ids=NESTINGS.keys())
def test_nesting_is_bounded_both_ways(make: Any) -> None:
    """Refused with NotPlain well before the interpreter's recursion limit, on either side of the channel."""
    for depth in (MAX_DEPTH + 1, 100_000):
        with pytest.raises(NotPlain):
            encode(nested(depth, make))
    with pytest.raises(NotPlain):
        decode(nested(100_000))
    with pytest.raises(NotPlain):
        decode(nested(100_000, lambda inner: {"tuple": [inner]}))


@pytest.mark.parametrize("value", [complex(math.inf, 0), complex(0, math.nan)], ids=["inf real", "nan imaginary"])
def test_a_complex_with_a_non_finite_part_crosses(value: complex) -> None:
    assert same(crossed(value), value)


def test_decode_of_a_complex_with_a_huge_part_is_refused() -> None:
    with pytest.raises(DECODE_ERRORS):
        decode({"complex": [10**400, 0]})


@pytest.mark.parametrize(
    "make",
    [NESTINGS["list"], NESTINGS["tuple"], NESTINGS["dict"]],
    ids=NESTINGS.keys(),
)
def test_what_encode_accepts_at_the_depth_limit_decodes(make: Any) -> None:
    assert same(crossed(nested(MAX_DEPTH, make)), nested(MAX_DEPTH, make))
