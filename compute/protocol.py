"""What crosses the Ray boundary between the gateway and an engine actor: plain dataclasses and the engine's
errors, importable without vLLM so that the gateway process never loads the engine's libraries."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Structured:
    """A constraint on what may be generated, enforced by the engine's structured-output decoding: output that
    parses as JSON (any object, or valid under `json_schema`, given as JSON text so the spec stays hashable)."""

    json_schema: str | None = None
    json_object: bool = False


@dataclass(frozen=True)
class SamplingSpec:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    """0: every token is a candidate."""
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    max_tokens: int = 16
    min_tokens: int = 0
    logit_bias: tuple[tuple[int, float], ...] = ()
    structured: Structured | None = None
    thinking_budget: int | None = None
    """A reasoning model's think block is closed after this many tokens of it, and the answer follows."""
    stop: tuple[str, ...] = ()
    logprobs: int | None = None
    """Top log-probabilities returned per generated token (0: the sampled token's only; None: none)."""
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    ignore_eos: bool = False
    prompt_logprobs_from: int | None = None
    """Return the log-probability of every prompt token from this position on (scoring a given text, as ATTS's
    target does: one prefill, one generated token). vLLM computes them for the whole prompt; the actor sends on
    only the slice asked for."""


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass
class CompletionDelta:
    """New output of one of the n completions since the previous chunk."""

    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None

    def extend(self, other: CompletionDelta) -> None:
        self.text += other.text
        self.token_ids.extend(other.token_ids)
        if other.logprobs is not None:
            self.logprobs = (self.logprobs or []) + other.logprobs
        self.finish_reason = other.finish_reason


@dataclass
class EngineChunk:
    """Everything one engine request produced since the previous chunk (several engine steps when the consumer
    is slower than the engine, which keeps Ray's per-object cost off each token)."""

    deltas: list[CompletionDelta]
    cached_tokens: int = 0
    finished: bool = False
    prompt_logprobs: list[float] | None = None


@dataclass(frozen=True)
class EngineInfo:
    model: str
    max_model_len: int
    dtype: str


@dataclass(frozen=True)
class EngineStats:
    running: int
    waiting: int
    unfinished: int
    kv_cache_usage: float
    generated_tokens: int = 0
    """Every token the engine generated since it started (its warm-up included)."""


class EngineDead(RuntimeError):
    """The engine behind an actor is gone; the actor must be replaced."""


class EngineRequestError(ValueError):
    """The engine refused the request itself (the caller's fault, never the engine's)."""
