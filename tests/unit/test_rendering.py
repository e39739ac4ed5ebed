"""Rendered logprobs are strict JSON whatever the engine reports: structured outputs mask tokens to -inf, which JSON
cannot carry (schemathesis found the 500 this caused)."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from compute.protocol import TokenLogprob
from service.api.rendering import LOGPROB_FLOOR, OutputFormat
from service.execution.generation import Completion

logprob = st.one_of(st.floats(max_value=0.0, allow_nan=False), st.just(-math.inf))
token = st.builds(
    TokenLogprob,
    token=st.text(st.characters(exclude_categories=("Cs",)), max_size=4),
    logprob=logprob,
    top=st.lists(st.tuples(st.text(st.characters(exclude_categories=("Cs",)), max_size=4), logprob), max_size=3).map(tuple),
)


@given(tokens=st.lists(token, max_size=6), chat=st.booleans())
def test_rendered_logprobs_are_strict_json(tokens: list[TokenLogprob], chat: bool) -> None:
    choice = OutputFormat(chat=chat).choice(Completion(index=0, text="".join(t.token for t in tokens), logprobs=tokens), True)
    rendered = json.loads(json.dumps(choice, allow_nan=False))
    values = (
        [c["logprob"] for c in rendered["logprobs"]["content"]] + [t["logprob"] for c in rendered["logprobs"]["content"] for t in c["top_logprobs"]]
        if chat
        else [lp for lp in rendered["logprobs"]["token_logprobs"]] + [lp for top in rendered["logprobs"]["top_logprobs"] for lp in top.values()]
    )
    assert all(LOGPROB_FLOOR <= v <= 0.0 for v in values)


def test_a_masked_token_shows_the_floor() -> None:
    masked = TokenLogprob(token="{", logprob=0.0, top=(("{", 0.0), ("x", -math.inf)))
    rendered = OutputFormat(chat=False).choice(Completion(index=0, text="{", logprobs=[masked]), True)
    assert rendered["logprobs"]["top_logprobs"] == [{"{": 0.0, "x": LOGPROB_FLOOR}]
