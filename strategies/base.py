"""What a strategy sees and returns. A strategy gets its parameters and a `Context`; the context is its only way to
an engine (every token metered against the request's budget, the deadline and cancellation honoured) and to the
verifiers. It returns the chosen candidate, all candidates and why the choice was made.

Nothing here imports the gateway: strategies are testable against any object that satisfies `Context` (the unit
tests' one is `tests/unit/fakes.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from compute.accuracy import Observation
from compute.cost_model import HardwareProfile, ModelShape
from compute.protocol import TokenLogprob
from verifiers.code import TestCase, TestReport
from verifiers.sandbox import ExecutionResult

# A rollout stopped by the request's budget or deadline, or by a strategy's stopping rule, not by the model: its
# text is a fragment.
EARLY_STOP = "early_stop"
CUT_SHORT = ("budget", "deadline", EARLY_STOP)
# A run that ended with nothing to vote for (a program that failed, a composed run that chose nothing).
NO_ANSWER = "no_answer"

# Called on a rollout's output so far (`.text`, `.token_ids`, `.logprobs`) as it grows: a reason stops that rollout.
Watch = Callable[[int, Any], str | None]


class StrategyInputError(ValueError):
    """The request cannot run this strategy as asked (code_tests with no tests): a 400 before any sampling."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Planning:
    """What a strategy that plans its own compute (Kinetics) knows of the request: the model's shape and the
    hardware for the cost model, the prompt's length, what is known of accuracy, and the sparse replicas."""

    shape: ModelShape
    hardware: HardwareProfile
    prompt_tokens: int
    max_tokens: int
    """What the request allows a sample: no plan's cap goes past it."""
    observations: list[Observation]
    lengths: list[int]
    """Observed natural sample lengths for this model and task family."""
    sparse: dict[int, str]
    """KV budget -> a served replica of the request's model that decodes with block top-k within it."""
    block_size: int | None
    agreements: list[float] = field(default_factory=list)
    """`auto`'s difficulty estimates logged for this model and family."""
    choices: list[tuple[int, str, bool]] = field(default_factory=list)
    """Graded `auto` requests: (difficulty bin, what it chose, whether the answer was right)."""


class UnknownModel(LookupError):
    """A strategy named a model this gateway does not serve (the request is checked for this before it runs)."""


@dataclass(frozen=True)
class VerifierSpec:
    """What the caller gave the verifiers: tests for code, a reference answer for grading."""

    tests: str | list[str] | None = None
    entry_point: str | None = None
    reference: str | None = None
    timeout_s: float | None = None


# Reads a sample's tool calls as the response would render them: (function name, arguments as JSON text) per call,
# none when the sample made no call.
ToolCallReader = Callable[[str], list[tuple[str, str]]]


@dataclass(frozen=True)
class AnswerFormat:
    """What a sample of the task's own prompt is, so that strategies that compare answers compare the right thing:
    free text with a final answer in it, a JSON document the engine held to the request's `response_format`, or tool
    calls. The engine keeps the constraint on every sample of the task's prompt (never on a strategy's own prompts)."""

    kind: Literal["text", "json", "tool_calls"] = "text"
    read_calls: ToolCallReader | None = None
    """tool_calls: how the gateway reads a sample's calls (its tool parser, or the forced choice's JSON)."""
    must_call: bool = False
    """tool_calls: the request forced a call (`required` or a named function), so a sample without one has no vote;
    otherwise (`auto`) such a sample votes with the final answer of its text."""
    final: Callable[[str], str] | None = None
    """A reasoning model's sample: its answer after the think block (the reasoning never votes); None: all of it."""

    def answer_part(self, text: str) -> str:
        return self.final(text) if self.final is not None else text


@dataclass(frozen=True)
class Task:
    """The request as a strategy needs it: the question's text (for visible tests and prompts of its own)."""

    text: str
    verifier: VerifierSpec
    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    answer_format: AnswerFormat = AnswerFormat()


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


class Verifiers(Protocol):
    """What a strategy checks its candidates with: final answers grouped by mathematical equivalence, and programs run
    on tests in the sandbox. Grading against a reference answer is the gateway's, after the strategy has chosen."""

    async def group(self, answers: Sequence[str | None]) -> list[int | None]:
        """One group id per answer (None for a None answer), numbered 0, 1, 2… in order of first appearance."""
        ...

    async def run_tests(self, program: str, tests: list[TestCase], entry_point: str | None = None, wall_s: float | None = None) -> TestReport:
        """`program` on `tests` in one sandboxed run (`wall_s`: the caller's timeout, else the sandbox's)."""
        ...

    async def run_program(self, program: str, wall_s: float | None = None) -> ExecutionResult:
        """`program` run alone in the sandbox: how it ended and what it printed (program-aided answers)."""
        ...

    @property
    def isolation(self) -> str:
        """Which layers confine a sandboxed run, for the report."""
        ...


class Codec(Protocol):
    """The served models' tokens, for strategies that build prompts token by token (ATTS's histories, certainty
    probes) or that score a trace against the whole vocabulary (self-certainty)."""

    @property
    def vocab_size(self) -> int:
        """The request's model's vocabulary."""
        ...

    def context_limit(self, model: str | None = None) -> int: ...

    async def tokens(self, *, messages: list[dict[str, str]] | None = None, text: str | None = None, model: str | None = None) -> list[int]:
        """`model`'s tokens of: a chat prompt (with the assistant's turn opened), a piece of text to append to one, or
        (neither given) the request's own prompt."""
        ...


class Planner(Protocol):
    """For a strategy that plans the whole request's compute (Kinetics, auto): what the plan is made from, and the
    one way to hold the rest of the request to it."""

    async def planning(self, family: str) -> Planning: ...

    def restrict(self, *, max_tokens: int, total_tokens: int, model: str | None = None) -> None:
        """Narrows what is left of the request: at most `max_tokens` a sample and `total_tokens` in all, generated
        by `model` (a replica of the request's model) from now on. Only a plan for the whole request may do this."""
        ...


class Cache(Protocol):
    """Results worth sharing across requests and gateways (summaries, judge votes), under a key made of everything
    they depend on. A miss, an error or an unreachable store all read as None: the cache may only save work."""

    async def get(self, kind: str, key: dict[str, Any]) -> dict[str, Any] | None: ...

    async def put(self, kind: str, key: dict[str, Any], value: dict[str, Any], tokens: int) -> None:
        """`tokens` is what producing `value` cost, reported as saved whenever it is reused."""
        ...


class CalibrationStore(Protocol):
    """Score pools shared by every request and gateway (ATTS's conformal calibration), each the newest `window`
    scores under a key. An unreachable store reads as None and drops writes: the strategy then calibrates on the
    request's own scores."""

    async def scores(self, key: str) -> list[float] | None: ...

    async def add(self, key: str, scores: Sequence[float], expires: bool = False) -> None:
        """`expires`: a pool that lives only as long as the store's TTL (a per-question pool)."""
        ...

    async def stats(self, key: str) -> dict[str, float]: ...

    async def count(self, key: str, **increments: int) -> None: ...


class Shared(Protocol):
    """What outlives the request, shared by every request and gateway: the cache of summaries and judge votes (RTV,
    PDR) and the calibration pools (ATTS; None when no store is configured)."""

    @property
    def cache(self) -> Cache: ...
    @property
    def calibration(self) -> CalibrationStore | None: ...


class Context(Protocol):
    """What a strategy is handed: the one way to the engines (every token metered against the request's budget, the
    deadline and cancellation honoured) and to the verifiers. A strategy's loop calls five things: `generate`
    samples, `score` a prompt's tokens, check candidates with `verifiers`, `emit` progress, `run` a sub-strategy; a
    reward model would join `score` as `reward`. It reads the task, the model and whether the budget is spent.

    What only a few strategies need sits behind one member each: `codec` (token-level prompts and limits: ATTS,
    certainty probes, self-certainty), `planner` (Kinetics, auto) and `shared` (caches that outlive the request: RTV,
    PDR, ATTS). The gateway's `RequestContext` and the unit tests' `FakeContext` both satisfy this, checked by mypy."""

    @property
    def task(self) -> Task: ...
    @property
    def model(self) -> str: ...
    @property
    def exhausted(self) -> str | None:
        """What ended the request's budget ("budget" or "deadline"), if anything has."""
        ...

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
        """N samples in one engine request (they share the prompt's prefill and KV cache): of the task's own prompt,
        of `messages` (a strategy's own prompt: a summary, a judge's comparison) rendered by the chat template, or of
        `prompt` token ids (a prompt extended by earlier output); by the request's model or the served `model` named.
        With `watch`, each sample is an engine request of its own, aborted when `watch` returns a reason for it. An
        empty list once the budget or deadline is spent."""
        ...

    async def score(self, prompt: list[int], start: int, *, model: str | None = None, stage: str = "score") -> list[float] | None:
        """Log-probabilities of the tokens `prompt[start:]` under `model` (one prefill); None once the budget is spent."""
        ...

    @property
    def verifiers(self) -> Verifiers: ...

    def emit(self, event: dict[str, Any]) -> None:
        """A progress event for streaming clients (a tally, a round done)."""
        ...

    async def run(self, params: Any) -> StrategyResult:
        """Another strategy on the same task, budget and engines: a composed rollout (majority over ATTS samples)."""
        ...

    @property
    def codec(self) -> Codec: ...
    @property
    def planner(self) -> Planner: ...
    @property
    def shared(self) -> Shared: ...


def usable(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Candidates the model finished; the cut-short ones only when nothing else is left (the best answer so far)."""
    finished = [c for c in candidates if not c.rollout.cut_short]
    return finished or list(candidates)
