"""Word-free arithmetic from a fixed seed: two-digit sums and products (a two-digit number times a one-digit one;
two two-digit factors are beyond a 135M model, see docs/benchmarks.md, "What the packaged model can show"). Graded by math-verify
against the exact result; nobody here picked the problems, the seed did."""

from __future__ import annotations

import random
from dataclasses import dataclass

SEED = 20261123
PROMPT = "Compute {expression}. Reply with just the number."


@dataclass(frozen=True)
class Problem:
    id: str
    tier: str
    expression: str
    answer: int

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": PROMPT.format(expression=self.expression)}]


def problems(count: int = 200, seed: int = SEED) -> list[Problem]:
    """Half sums, half products, interleaved so that any prefix of the list keeps both tiers."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        if i % 2 == 0:
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            out.append(Problem(f"sum-{i}", "two-digit sum", f"{a} + {b}", a + b))
        else:
            a, c = rng.randint(10, 99), rng.randint(2, 9)
            out.append(Problem(f"product-{i}", "two-digit product", f"{a} * {c}", a * c))
    return out
