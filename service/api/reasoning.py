"""Reasoning models: whether a request thinks, its thinking budget, and its output split into the reasoning and the
answer by the served model's reasoning parser (one of vLLM's, or Ponder's `think_tags`).

A request thinks when its chat template is told to (`chat_template_kwargs.enable_thinking`, Qwen3's convention) or
when it names a `reasoning_effort` other than `none`, which also sets the thinking budget unless
`thinking_token_budget` does. The engine enforces the budget: at the cap it closes the think block, and the answer
follows within the request's token limit. Strategies vote on and select the answer, never the reasoning.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from compute.protocol import SamplingSpec
from service.api.errors import APIError
from service.api.protocol import ChatCompletionRequest
from service.execution.models import ServedModel

# Thinking tokens per effort, when the request names no budget of its own.
EFFORT_BUDGET = {"minimal": 64, "low": 256, "medium": 1024, "high": 4096}


@dataclass(frozen=True)
class Thinking:
    """What a request asked of a reasoning model: the chat template's variables, the thinking budget, and the field
    that asked it to think (None: it did not ask)."""

    template_vars: dict[str, Any] | None
    budget: int | None = None
    explicit_budget: bool = False
    asked_by: str | None = None


@dataclass
class Reasoning:
    """The served model's parser, with what each output is read against: the prompt (which may have opened the
    block) and what the request asked."""

    parser: Any
    tokenizer: Any
    prompt: list[int]
    thinking: Thinking

    def reader(self) -> Any:
        parser = self.parser(self.tokenizer)
        parser.adjust_initial_state_from_prompt(self.prompt)
        return parser

    @cached_property
    def _whole(self) -> Any:
        """One reader for whole outputs: reading one keeps no state, and a parser costs a walk of the vocabulary."""
        return self.reader()

    def split(self, text: str) -> tuple[str | None, str | None]:
        """(reasoning, answer) of a whole output."""
        return self._whole.extract_reasoning(text, None)  # type: ignore[no-any-return]

    def answer(self, text: str) -> str:
        return self.split(text)[1] or ""

    def stream(self) -> ReasoningStream:
        return ReasoningStream(self)


@dataclass
class ReasoningStream:
    """One output's split as it streams: the parser's own streaming reader, then, at the end, whatever it still held
    back (a tag's possible start) so that the deltas add up to the whole output's split."""

    reasoning: Reasoning
    text: str = ""
    ids: list[int] = field(default_factory=list)
    sent: dict[str, str] = field(default_factory=lambda: {"reasoning": "", "content": ""})
    parser: Any = None

    def feed(self, text: str, ids: list[int], finished: bool) -> dict[str, str]:
        """The reasoning and content deltas for this much more output."""
        if self.parser is None:
            self.parser = self.reasoning.reader()
        previous, previous_ids = self.text, list(self.ids)
        self.text += text
        self.ids += ids
        delta = self.parser.extract_reasoning_streaming(previous, self.text, text, previous_ids, self.ids, ids) if text else None
        out = {"reasoning": (delta.reasoning or "") if delta else "", "content": (delta.content or "") if delta else ""}
        if finished:
            whole = dict(zip(("reasoning", "content"), self.reasoning.split(self.text), strict=True))
            for key in out:
                done = self.sent[key] + out[key]
                final = whole[key] or ""
                if final.startswith(done):
                    out[key] += final[len(done) :]
        for key in out:
            self.sent[key] += out[key]
        return {k: v for k, v in out.items() if v}


def thinking(body: ChatCompletionRequest, served: ServedModel) -> Thinking:
    """A 400 naming the field when a request asks a model without a reasoning parser to think."""
    template_vars = dict(body.chat_template_kwargs or {})
    effort = body.reasoning_effort
    if effort is not None:
        template_vars.setdefault("enable_thinking", effort != "none")
    budget = body.thinking_token_budget or EFFORT_BUDGET.get(effort or "")
    asked_by = None
    if body.thinking_token_budget is not None:
        asked_by = "thinking_token_budget"
    elif effort not in (None, "none"):
        asked_by = "reasoning_effort"
    elif template_vars.get("enable_thinking") is True:
        asked_by = "chat_template_kwargs"
    if asked_by is not None and served.reasoning_parser is None:
        raise APIError(
            400,
            f"model {served.spec.name!r} has no reasoning parser (reasoning_parser in PONDER_MODELS), so it cannot think",
            param=asked_by,
            code="invalid_value",
        )
    return Thinking(template_vars or None, budget, body.thinking_token_budget is not None, asked_by)


def held_to_budget(sampling: SamplingSpec, reasoning: Reasoning | None) -> SamplingSpec:
    """The samples' thinking budget. One the request names must leave room for the answer (a 400 otherwise); one an
    effort implies is cut to half the token limit."""
    if reasoning is None or (budget := reasoning.thinking.budget) is None:
        return sampling
    if budget >= sampling.max_tokens:
        if reasoning.thinking.explicit_budget:
            raise APIError(
                400,
                f"thinking_token_budget ({budget}) must be below the request's token limit ({sampling.max_tokens}), which also holds the answer",
                param="thinking_token_budget",
                code="invalid_value",
            )
        budget = max(sampling.max_tokens // 2, 1)
    return replace(sampling, thinking_budget=budget)
