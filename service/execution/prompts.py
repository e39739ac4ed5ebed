"""Prompt rendering and token accounting in the gateway: chat templates are applied and prompts tokenized here so
that context-length errors are caught before an engine sees the request and every engine call takes token ids
(which is also what lets later calls extend a prompt and reuse its cached prefix)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from transformers import AutoTokenizer, BatchEncoding


class PromptCodec:
    def __init__(self, model_path: str, template: str | None = None) -> None:
        """`template`: a chat template in place of the model's own."""
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.vocab_size = len(self.tokenizer)
        self.template = template

    def chat(self, messages: list[dict[str, Any]], template_vars: Mapping[str, Any] | None = None, tools: list[dict[str, Any]] | None = None) -> list[int]:
        """`template_vars`: the caller's extra variables for the template (vLLM's `chat_template_kwargs`), such as
        `enable_thinking`; they cannot override how the template is applied."""
        fixed = {"add_generation_prompt": True, "tokenize": True, "tools": tools, "chat_template": self.template}
        encoded = self.tokenizer.apply_chat_template(messages, **{**(template_vars or {}), **fixed})
        # One conversation, tokenized: its ids, inside a BatchEncoding when the tokenizer returns a dict (the default
        # in transformers 5); the rest of the declared union is for untokenized or batched calls.
        ids = encoded["input_ids"] if isinstance(encoded, BatchEncoding) else cast(list[int], encoded)
        return list(ids)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def encode_piece(self, text: str) -> list[int]:
        """A piece of a longer text (a chunk appended to a prompt): no BOS or other special tokens added."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        # One sequence of ids decodes to one string; the declared list is for a batch.
        return cast(str, self.tokenizer.decode(ids, skip_special_tokens=True))
