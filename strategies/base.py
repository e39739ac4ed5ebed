"""What a strategy sees and returns. A strategy gets the task and a `Context`; the context is its only way to an
engine (every token metered against the request's budget, the deadline and cancellation honoured) and to the
verifiers. It returns the chosen candidate, all candidates and why the choice was made.

Nothing here imports the gateway: strategies are testable against any object that satisfies `Context`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from service.engines.protocol import TokenLogprob
from verifiers.answers import AnswerGrouper
from verifiers.code import Sandbox, TestReport

# A rollout stopped by the request's budget or deadline, not by the model: its text is a fragment.
CUT_SHORT = ("budget", "deadline")


class StrategyInputError(ValueError):
    """The request cannot run this strategy as asked (code_tests with no tests): a 400 before any sampling."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class VerifierSpec:
    """What the caller gave the verifiers: tests for code, a reference answer for grading."""

    tests: str | list[str] | None = None
    entry_point: str | None = None
    reference: str | None = None
    timeout_s: float | None = None


@dataclass(frozen=True)
class Task:
    """The request as a strategy needs it: the question's text (for visible tests and prompts of its own)."""

    text: str
    verifier: VerifierSpec
    temperature: float | None
    top_p: float | None
    max_tokens: int | None


@dataclass(frozen=True)
class Rollout:
    index: int
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob]
    finish_reason: str | None
    prompt_tokens: int = 0

    @property
    def cut_short(self) -> bool:
        return self.finish_reason in CUT_SHORT


@dataclass
class Candidate:
    """A rollout and everything the strategy learnt about it; `report()` is what the response shows."""

    rollout: Rollout
    answer: str | None = None
    group: int | None = None
    scores: dict[str, float] = field(default_factory=dict)
    tests: TestReport | None = None
    correct: bool | None = None

    @property
    def index(self) -> int:
        return self.rollout.index

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "text": self.rollout.text,
            "tokens": len(self.rollout.token_ids),
            "finish_reason": self.rollout.finish_reason,
            "answer": self.answer,
            "group": self.group,
            "scores": {k: round(v, 6) for k, v in self.scores.items()},
        }
        if self.tests is not None:
            out["tests"] = {"passed": self.tests.passed, "total": self.tests.total, "status": self.tests.status}
        if self.correct is not None:
            out["correct"] = self.correct
        return out


@dataclass
class StrategyResult:
    candidates: list[Candidate]
    chosen: Candidate | None
    selection: dict[str, Any]

    @property
    def text(self) -> str:
        return self.chosen.rollout.text if self.chosen else ""


class Cache(Protocol):
    """Results worth sharing across requests and gateways (summaries, judge votes), under a key made of everything
    they depend on. A miss, an error or an unreachable store all read as None: the cache may only save work."""

    async def get(self, kind: str, key: dict[str, Any]) -> dict[str, Any] | None: ...

    async def put(self, kind: str, key: dict[str, Any], value: dict[str, Any], tokens: int) -> None:
        """`tokens` is what producing `value` cost, reported as saved whenever it is reused."""
        ...


class Context(Protocol):
    task: Task
    model: str
    vocab_size: int
    answers: AnswerGrouper
    sandbox: Sandbox
    cache: Cache

    async def generate(
        self,
        n: int,
        *,
        temperature: float,
        top_p: float = 1.0,
        max_tokens: int | None = None,
        logprobs: int | None = None,
        stage: str = "sample",
        messages: list[dict[str, str]] | None = None,
    ) -> list[Rollout]:
        """N samples in one engine request (they share the prompt's prefill and KV cache): of the task's own prompt,
        or of `messages` (a strategy's own prompt: a summary, a judge's comparison), rendered by the chat template."""
        ...

    def emit(self, event: dict[str, Any]) -> None:
        """A progress event for streaming clients (a tally, a round done)."""
        ...


def usable(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Candidates the model finished; the cut-short ones only when nothing else is left (the best answer so far)."""
    finished = [c for c in candidates if not c.rollout.cut_short]
    return finished or list(candidates)
