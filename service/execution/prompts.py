"""Prompt rendering and token accounting in the gateway: chat templates are applied and prompts tokenized here so
that context-length errors are caught before an engine sees the request and every engine call takes token ids
(which is also what lets later calls extend a prompt and reuse its cached prefix)."""

from __future__ import annotations

from typing import Any

from transformers import AutoTokenizer


class PromptCodec:
    def __init__(self, model_path: str) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.vocab_size = len(self.tokenizer)

    def chat(self, messages: list[dict[str, Any]]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def encode_piece(self, text: str) -> list[int]:
        """A piece of a longer text (a chunk appended to a prompt): no BOS or other special tokens added."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)
