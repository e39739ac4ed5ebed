"""The `think_tags` reasoning parser: a think block written as the plain text `<think>…</think>`, opened by the chat
template when a request asks to think (`enable_thinking`), on any tokenizer.

vLLM's `olmo3` parser reads such blocks, but it takes a prompt that never opened one as one whose reasoning is still
running, so the engine's structured outputs would wait for a `</think>` that never comes. Here reasoning is running
exactly while the sequence (prompt, then output) has an open block. A model whose template thinks on request, as
the packaged one's does, answers in JSON with and without thinking, and the engine's thinking budget closes the
block at its cap.

vLLM imports this file by path (`reasoning_parser_plugin`), in every process its engine runs in, so it imports
nothing from Ponder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vllm.reasoning import ReasoningParserManager
from vllm.reasoning.olmo3_reasoning_parser import Olmo3ReasoningParser, Olmo3ReasoningState

NAME = "think_tags"


class ThinkTagsReasoningParser(Olmo3ReasoningParser):
    def __init__(self, tokenizer: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(tokenizer, *args, **kwargs)
        vocab = self.vocab
        self._tag_rest = [vocab[t] for t in self.think_end_rest_split]
        self._opens = {vocab[t] for t in ("<", "Ġ<") if t in vocab}
        self._closes = set(self.think_end_first_token_ids)
        # One parser serves one request: the scan goes on where the last call stopped, since the sequence only grows.
        self._scanned = 0
        self._open = False
        self._prompt_opened = False

    def is_reasoning_end(self, input_ids: Sequence[int]) -> bool:
        if len(input_ids) < self._scanned:
            self._scanned, self._open = 0, False
        rest = self._tag_rest
        for i in range(max(self._scanned - len(rest), 0), len(input_ids) - len(rest)):
            if list(input_ids[i + 1 : i + 1 + len(rest)]) == rest:
                if input_ids[i] in self._closes:
                    self._open = False
                elif input_ids[i] in self._opens:
                    self._open = True
        self._scanned = len(input_ids)
        return not self._open

    def adjust_initial_state_from_prompt(self, prompt_token_ids: Sequence[int]) -> None:
        """olmo3 streams as if every prompt opened a block; here only one that did starts in reasoning."""
        self._prompt_opened = not self.is_reasoning_end(prompt_token_ids)
        self.buffer.state = Olmo3ReasoningState.REASONING if self._prompt_opened else Olmo3ReasoningState.CONTENT

    def extract_reasoning(self, model_output: str, request: Any) -> tuple[str | None, str | None]:
        """A block the prompt opened and the output never closed is all reasoning (olmo3 would call it content)."""
        reasoning, content = super().extract_reasoning(model_output, request)
        if self._prompt_opened and self.think_end not in model_output:
            return model_output, None
        return reasoning, content


ReasoningParserManager.register_module(NAME, module=ThinkTagsReasoningParser)
