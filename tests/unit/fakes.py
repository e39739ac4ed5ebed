"""The one fake `Context` the unit tests run strategies against: scripted by the test, recording what the strategy
asked of it. mypy checks this module strictly against `strategies.base.Context`, so a strategy's unit test needs no
`type: ignore`, and a change to the protocol that the fake does not follow fails the checks.

What a test scripts (everything has a default, so a test names only what its strategy uses):
- `samples`: what `generate` returns, a queue: each call takes the next n (fewer once it runs out). A str is a
  sample of that text that ended on its own, one token per character (as `codec.tokens` encodes text); a `Rollout`
  is returned as it is, under the call's index. With a `watch`, each sample is shown to it after every token and cut
  where it returns a reason (a cut sample's text is empty: the fake knows no text per token).
- `replies`: instead of `samples`, an async function of the `Call` that answers every `generate` (a judge that
  reads its prompt, a draft that takes its time, a rollout that streams beside its probes).
- `scores`: a function of (prompt, start) that gives `score`'s log-probabilities (default: none came back).
- `runs`: a function of a sub-strategy's parameters that gives its result (default: the registered strategy, run
  on this context).
- `answers`, `sandbox`: the real verifiers, where a test wants them; without, answers group by exact string and
  running tests fails the test.
- `planning`, `cache`, `calibration`: what sits behind `planner` and `shared`.
- `budget`: the tokens the samples may take; once they are spent `exhausted` says "budget" and `generate` and
  `score` answer nothing, as the real context does.

What it records: `calls` (each `generate`), `scored`, `ran`, `events`, `restricted`, `used`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from strategies.base import CalibrationStore, Codec, Context, Planner, Planning, Rollout, Shared, StrategyResult, Task, VerifierSpec, Watch
from strategies.registry import STRATEGIES
from verifiers.answers import AnswerGrouper
from verifiers.code import TestCase, TestReport, run_tests
from verifiers.sandbox import ExecutionResult, Sandbox

TASK = Task(text="What is 2+2?", verifier=VerifierSpec(), temperature=None, top_p=None, max_tokens=None)


def encode(text: str) -> list[int]:
    """The fake's tokenizer: one token per character, its code point."""
    return [ord(c) for c in text]


def decode(ids: Sequence[int]) -> str:
    return "".join(chr(i) for i in ids)


@dataclass(frozen=True)
class Call:
    """One `generate` call, as the strategy made it."""

    n: int
    temperature: float
    top_p: float
    max_tokens: int | None
    logprobs: int | None
    stage: str
    messages: list[dict[str, str]] | None
    prompt: list[int] | None
    model: str | None
    watch: Watch | None


@dataclass(frozen=True)
class Partial:
    """A sample as a `watch` sees it while it grows."""

    text: str
    token_ids: list[int]
    logprobs: list[Any]


Replies = Callable[[Call], Awaitable[list[Rollout]]]
Scores = Callable[[list[int], int], list[float] | None]
Runs = Callable[[Any], StrategyResult]


@dataclass
class FakeVerifiers:
    answers: AnswerGrouper | None = None
    sandbox: Sandbox | None = None

    async def group(self, answers: Sequence[str | None]) -> list[int | None]:
        if self.answers is not None:
            return await self.answers.group(answers)
        seen: dict[str, int] = {}
        return [None if a is None else seen.setdefault(a, len(seen)) for a in answers]

    async def run_tests(self, program: str, tests: list[TestCase], entry_point: str | None = None, wall_s: float | None = None) -> TestReport:
        assert self.sandbox is not None, "the strategy ran tests, and this test gave the fake no sandbox"
        return await run_tests(self.sandbox, program, tests, entry_point, wall_s)

    async def run_program(self, program: str, wall_s: float | None = None) -> ExecutionResult:
        assert self.sandbox is not None, "the strategy ran a program, and this test gave the fake no sandbox"
        return await self.sandbox.run(program, wall_s=wall_s)

    @property
    def isolation(self) -> str:
        return self.sandbox.isolation if self.sandbox is not None else "none"


@dataclass
class CacheUse:
    hits: int = 0
    misses: int = 0
    saved_tokens: int = 0


@dataclass
class DictCache:
    """The cache's contract (a hit counts the tokens it saved) over a dict, as Redis would hold it."""

    store: dict[str, dict[str, Any]] = field(default_factory=dict)
    use: dict[str, CacheUse] = field(default_factory=dict)

    async def get(self, kind: str, key: dict[str, Any]) -> dict[str, Any] | None:
        use = self.use.setdefault(kind, CacheUse())
        found = self.store.get(kind + repr(sorted(key.items())))
        if found is None:
            use.misses += 1
            return None
        use.hits += 1
        use.saved_tokens += found["tokens"]
        value: dict[str, Any] = found["value"]
        return value

    async def put(self, kind: str, key: dict[str, Any], value: dict[str, Any], tokens: int) -> None:
        self.store[kind + repr(sorted(key.items()))] = {"value": value, "tokens": tokens}


@dataclass
class DictCalibration:
    """Calibration pools over a dict; `counts` holds what `count` added up."""

    pools: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, dict[str, float]] = field(default_factory=dict)

    async def scores(self, key: str) -> list[float] | None:
        return list(self.pools.get(key, []))

    async def add(self, key: str, scores: Sequence[float], expires: bool = False) -> None:
        self.pools.setdefault(key, []).extend(scores)

    async def stats(self, key: str) -> dict[str, float]:
        return dict(self.counts.get(key, {}))

    async def count(self, key: str, **increments: int) -> None:
        for name, by in increments.items():
            totals = self.counts.setdefault(key, {})
            totals[name] = totals.get(name, 0.0) + by


class FakeContext:
    """A `Context` for unit tests; it plays the roles behind the context (`codec`, `planner`, `shared`) itself, as
    the gateway's does."""

    def __init__(
        self,
        samples: Sequence[str | Rollout] = (),
        *,
        replies: Replies | None = None,
        scores: Scores | None = None,
        runs: Runs | None = None,
        task: Task = TASK,
        model: str = "fake",
        prompt: list[int] | None = None,
        answers: AnswerGrouper | None = None,
        sandbox: Sandbox | None = None,
        planning: Planning | None = None,
        cache: DictCache | None = None,
        calibration: CalibrationStore | None = None,
        budget: int | None = None,
        vocab_size: int = 100,
        context_limit: int = 100_000,
    ) -> None:
        self.task = task
        self.model = model
        self.samples = list(samples)
        self.replies, self.scores, self.runs = replies, scores, runs
        self.prompt = prompt if prompt is not None else encode(task.text)
        self.verifiers = FakeVerifiers(answers, sandbox)
        self.cache = cache if cache is not None else DictCache()
        self.calibration = calibration
        self.budget = budget
        self.vocab_size = vocab_size
        self._planning = planning
        self._context_limit = context_limit
        self._taken = 0
        self.used = 0
        self.calls: list[Call] = []
        self.scored: list[tuple[list[int], int, str | None]] = []
        self.ran: list[Any] = []
        self.events: list[dict[str, Any]] = []
        self.restricted: dict[str, Any] | None = None

    @property
    def exhausted(self) -> str | None:
        return "budget" if self.budget is not None and self.used >= self.budget else None

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
        prompt: list[int] | None = None,
        model: str | None = None,
        watch: Watch | None = None,
    ) -> list[Rollout]:
        if self.exhausted:
            return []
        call = Call(n, temperature, top_p, max_tokens, logprobs, stage, messages, prompt, model, watch)
        self.calls.append(call)
        if self.replies is not None:
            rollouts = await self.replies(call)
        else:
            taken = self.samples[self._taken : self._taken + n]
            self._taken += len(taken)
            rollouts = [self._grow(i, sample, watch) for i, sample in enumerate(taken)]
        self.used += sum(len(r.token_ids) for r in rollouts)
        return rollouts

    def _grow(self, index: int, sample: str | Rollout, watch: Watch | None) -> Rollout:
        rollout = Rollout(index, sample, encode(sample), [], "stop") if isinstance(sample, str) else replace(sample, index=index)
        if watch is None:
            return rollout
        for k in range(1, len(rollout.token_ids) + 1):
            if reason := watch(index, Partial(rollout.text, rollout.token_ids[:k], rollout.logprobs[:k])):
                return replace(rollout, text="", token_ids=rollout.token_ids[:k], logprobs=rollout.logprobs[:k], finish_reason=reason)
        return rollout

    async def score(self, prompt: list[int], start: int, *, model: str | None = None, stage: str = "score") -> list[float] | None:
        if self.exhausted:
            return None
        self.scored.append((list(prompt), start, model))
        return self.scores(prompt, start) if self.scores is not None else None

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    async def run(self, params: Any) -> StrategyResult:
        self.ran.append(params)
        if self.runs is not None:
            return self.runs(params)
        ctx: Context = self  # mypy holds the fake to the protocol here
        return await STRATEGIES[params.name](ctx, params)

    @property
    def codec(self) -> Codec:
        return self

    def context_limit(self, model: str | None = None) -> int:
        return self._context_limit

    async def tokens(self, *, messages: list[dict[str, str]] | None = None, text: str | None = None, model: str | None = None) -> list[int]:
        if messages is not None:
            return encode("".join(m["content"] for m in messages))
        if text is not None:
            return encode(text)
        return list(self.prompt)

    @property
    def planner(self) -> Planner:
        return self

    async def planning(self, family: str) -> Planning:
        assert self._planning is not None, "the strategy planned, and this test gave the fake no planning"
        return self._planning

    def restrict(self, *, max_tokens: int, total_tokens: int, model: str | None = None) -> None:
        self.restricted = {"max_tokens": max_tokens, "total_tokens": total_tokens, "model": model}

    @property
    def shared(self) -> Shared:
        return self
