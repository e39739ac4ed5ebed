"""A request's accounting. Its budget: every generated token is granted against `max_total_tokens`, and
`deadline` is an absolute event-loop time; whatever stops a request first is recorded in `exhausted` so the response
can say which. Its usage: the tokens it spent, in OpenAI's shape."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

TOKENS = "budget"
DEADLINE = "deadline"


@dataclass
class Budget:
    max_total_tokens: int
    deadline_s: float
    started: float = field(default_factory=lambda: asyncio.get_running_loop().time())
    used: int = 0
    exhausted: str | None = None

    @property
    def deadline(self) -> float:
        return self.started + self.deadline_s

    @property
    def remaining(self) -> int:
        return max(self.max_total_tokens - self.used, 0)

    def grant(self, wanted: int) -> int:
        """Grants up to `wanted` tokens; a short grant marks the token budget spent."""
        granted = min(wanted, self.remaining)
        self.used += granted
        if granted < wanted:
            self.exhausted = self.exhausted or TOKENS
        return granted

    def expire(self) -> None:
        self.exhausted = self.exhausted or DEADLINE

    def elapsed(self) -> float:
        return asyncio.get_running_loop().time() - self.started

    def report(self) -> dict[str, object]:
        return {
            "max_total_tokens": self.max_total_tokens,
            "deadline_s": self.deadline_s,
            "used_tokens": self.used,
            "elapsed_s": round(self.elapsed(), 4),
            "exhausted": self.exhausted,
        }


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def as_openai(self) -> dict[str, object]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }
