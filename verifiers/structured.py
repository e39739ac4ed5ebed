"""Canonical forms of structured answers, so that votes count what an answer means rather than how it was written:
a JSON document (or the value a JSON pointer names in it) and a sample's tool calls.

Two JSON texts canonicalise alike exactly when they parse to the same value: keys are sorted, whitespace dropped,
and numbers compared by value (1, 1.0 and 1e0 are one number; integers stay exact however large). What does not
parse, or parses to a number JSON cannot hold (NaN, an overflow to infinity), has no canonical form and so no vote.
Model output is hostile input: nothing here raises on any text.

Tool calls canonicalise as the multiset of (function name, canonical arguments): parallel calls are independent, so
their order is not part of what a sample decided.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

_INDEX = re.compile(r"0|[1-9][0-9]*")
_MISSING = object()


class _NotJSON(ValueError):
    """A literal JSON does not allow (NaN, Infinity), or a number that overflows to one."""


def _reject(literal: str) -> Any:
    raise _NotJSON(literal)


def parse_json(text: str) -> Any:
    """The value `text` holds as strict JSON, else `_MISSING`."""
    try:
        return _normalised(json.loads(text, parse_constant=_reject))
    except (ValueError, RecursionError):  # JSONDecodeError, _NotJSON and an over-long integer are ValueErrors
        return _MISSING


def _normalised(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _NotJSON(repr(value))
        return int(value) if value.is_integer() else value
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    return {k: _normalised(v) for k, v in value.items()}


def dump(value: Any) -> str | None:
    """A parsed value's canonical text. Non-ASCII stays readable unless the value holds a lone surrogate (which
    `"\\ud800"` in a model's JSON can), which no UTF-8 response could carry: that value is written escaped. None
    for a value nested too deep to write back."""
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except RecursionError:
        return None
    return text


def canonical_json(text: str) -> str | None:
    """The canonical text of a JSON document, or None when `text` is not one."""
    value = parse_json(text)
    return None if value is _MISSING else dump(value)


def pointer_tokens(pointer: str) -> list[str]:
    """An RFC 6901 JSON pointer's reference tokens ("" is the whole document); a ValueError says what is wrong."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise ValueError("a JSON pointer is empty or starts with '/', e.g. /answer")
    tokens = pointer[1:].split("/")
    for token in tokens:
        if re.search(r"~(?![01])", token):
            raise ValueError(f"in a JSON pointer '~' is escaped as ~0 and '/' as ~1: {token!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in tokens]


def resolve(value: Any, tokens: Sequence[str]) -> Any:
    """The value the pointer's tokens name in a parsed document, else `_MISSING` (no such member or index)."""
    for token in tokens:
        if isinstance(value, dict):
            value = value.get(token, _MISSING)
        elif isinstance(value, list) and _INDEX.fullmatch(token) and int(token) < len(value):
            value = value[int(token)]
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def pointed_json(text: str, pointer: str) -> str | None:
    """The canonical text of the value at `pointer` in the JSON document `text`: None when `text` is not JSON or
    has nothing there. The pointer must be valid (`pointer_tokens`); request validation checks it first."""
    value = parse_json(text)
    if value is _MISSING:
        return None
    found = resolve(value, pointer_tokens(pointer))
    return None if found is _MISSING else dump(found)


@dataclass(frozen=True)
class CanonicalCalls:
    """A sample's tool calls in canonical form: `names` is what the first round of a hierarchical vote compares,
    `answer` (every call with its arguments) the second."""

    names: tuple[str, ...]
    """The functions called, sorted (a name appears once per call)."""
    answer: str
    """`name(arguments)` per call, in canonical order, joined by "; "."""


def canonical_calls(calls: Sequence[tuple[str, str]]) -> CanonicalCalls | None:
    """`(name, arguments)` pairs in canonical form; None when there are none, or when any call's arguments are not
    JSON (a call that cannot be made is no vote for anything). Names come from the request's tools, which allow no
    '(' or ';', and canonical arguments are one JSON value, so `answer` reads back unambiguously."""
    parsed = []
    for name, arguments in calls:
        value = parse_json(arguments)
        if value is _MISSING:
            return None
        canonical = dump(value)
        if canonical is None:
            return None
        parsed.append((name, canonical))
    if not parsed:
        return None
    parsed.sort()
    return CanonicalCalls(tuple(name for name, _ in parsed), "; ".join(f"{name}({arguments})" for name, arguments in parsed))


def exact_groups(keys: Sequence[Hashable | None]) -> list[int | None]:
    """Group ids by equal keys, numbered 0, 1, 2… in order of first appearance; None for a None key."""
    seen: dict[Hashable, int] = {}
    return [None if k is None else seen.setdefault(k, len(seen)) for k in keys]
