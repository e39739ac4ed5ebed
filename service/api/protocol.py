"""OpenAI request models plus Ponder's two extensions (`strategy`, `budget`), validated at the edge.

Unknown fields are rejected, as OpenAI does, except a few that clients send routinely and that change nothing
here (`store`, `metadata`, `service_tier`), so a misspelt knob is an error instead of a silent default.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator, model_validator

from compute.protocol import Structured
from strategies.registry import StrategyParams

MAX_N = 64
MAX_LOGPROBS = 20
MAX_STOP = 4
MAX_TESTS = 256
MAX_TEST_CHARS = 65536
MAX_LOGIT_BIAS = 300
# apply_chat_template's own arguments: chat_template_kwargs may pass variables to the template, not change how (or
# which) template is applied.
TEMPLATE_ARGUMENTS = frozenset(
    {
        "conversation", "messages", "tools", "documents", "chat_template", "add_generation_prompt", "continue_final_message", "tokenize",
        "padding", "truncation", "max_length", "return_tensors", "return_dict", "return_assistant_tokens_mask", "tokenizer_kwargs",
    }
)  # fmt: skip


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Budget(StrictModel):
    """Caps on everything a request may spend: generated tokens across all rollouts, and wall-clock time."""

    max_total_tokens: PositiveInt | None = None
    deadline_s: PositiveFloat | None = None


class Verifier(StrictModel):
    """What the verifiers need: tests for `code_tests` (assert lines, or test code defining `check(candidate)`),
    the function under test, a reference answer to grade the result against, and a time limit per test run."""

    tests: (
        Annotated[str, Field(min_length=1, max_length=MAX_TEST_CHARS)]
        | Annotated[list[Annotated[str, Field(min_length=1, max_length=MAX_TEST_CHARS)]], Field(min_length=1, max_length=MAX_TESTS)]
        | None
    ) = None
    entry_point: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)
    reference: str | None = Field(None, min_length=1, max_length=4096)
    timeout_s: float | None = Field(None, gt=0.0, le=60.0)


def template_variables(value: dict[str, Any] | None) -> dict[str, Any] | None:
    taken = sorted(set(value or ()) & TEMPLATE_ARGUMENTS)
    if taken:
        raise ValueError(f"{', '.join(taken)} set how the template is applied, not a variable of it")
    return value


def checked_schema(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """A schema the engine will enforce is checked against the meta-schema first: a 400 naming it, not an engine error."""
    if value is not None:
        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
    return value


class TextFormat(StrictModel):
    type: Literal["text"]


class JsonObjectFormat(StrictModel):
    type: Literal["json_object"]


class JsonSchema(StrictModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return checked_schema(value)


class JsonSchemaFormat(StrictModel):
    type: Literal["json_schema"]
    json_schema: JsonSchema


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


class StreamOptions(StrictModel):
    include_usage: bool = False


class TextPart(StrictModel):
    type: Literal["text"]
    text: str


class FunctionCall(StrictModel):
    name: str = Field(min_length=1, max_length=64)
    arguments: str


class ToolCall(StrictModel):
    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(StrictModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _shape_of_role(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required, except on an assistant message with tool_calls")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("a tool message needs tool_call_id, and only a tool message has one")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)

    def rendered(self) -> dict[str, Any]:
        """The message as a chat template reads it (tool call arguments as objects where they parse)."""
        out: dict[str, Any] = {"role": self.role, "content": self.text()}
        if self.name:
            out["name"] = self.name
        if self.tool_calls:
            out["tool_calls"] = [
                {"id": c.id, "type": c.type, "function": {"name": c.function.name, "arguments": c.function.arguments}} for c in self.tool_calls
            ]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


class FunctionDefinition(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return checked_schema(value)


class Tool(StrictModel):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(StrictModel):
    name: str


class NamedToolChoice(StrictModel):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


Stop = str | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=MAX_STOP)] | None


class SamplingFields(StrictModel):
    """The fields both endpoints share."""

    model: str = Field(min_length=1)
    n: int = Field(1, ge=1, le=MAX_N)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1, description="vLLM extension: sample from the k likeliest tokens (-1 or 0: all)")
    min_p: float | None = Field(None, ge=0.0, le=1.0, description="vLLM extension: drop tokens below min_p times the likeliest's probability")
    repetition_penalty: float | None = Field(None, gt=0.0, le=2.0, description="vLLM extension: >1 discourages repeating prompt or output tokens")
    min_tokens: int = Field(0, ge=0, description="vLLM extension: no end of sequence or stop string before this many tokens")
    logit_bias: dict[Annotated[str, Field(pattern=r"^[0-9]{1,9}$")], Annotated[float, Field(ge=-100.0, le=100.0)]] | None = Field(
        None, max_length=MAX_LOGIT_BIAS
    )
    response_format: ResponseFormat | None = None
    stop: Stop = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    user: str | None = Field(None, max_length=256)
    ignore_eos: bool = Field(False, description="vLLM extension: generate exactly max_tokens (benchmarks)")
    strategy: StrategyParams | None = None
    budget: Budget | None = None
    verifier: Verifier | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop_not_empty(cls, value: Any) -> Any:
        if value == "":
            raise ValueError("stop must not be an empty string")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SamplingFields:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        if self.n > 1 and self.temperature == 0:
            raise ValueError("n > 1 needs temperature > 0: greedy decoding gives n identical completions")
        return self

    @property
    def structured(self) -> Structured | None:
        """What the engine must constrain the output to, from `response_format`."""
        fmt = self.response_format
        if isinstance(fmt, JsonObjectFormat):
            return Structured(json_object=True)
        if isinstance(fmt, JsonSchemaFormat):
            schema = fmt.json_schema.schema_
            return Structured(json_schema=json.dumps(schema)) if schema is not None else Structured(json_object=True)
        return None

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    chat_template_kwargs: dict[str, Any] | None = Field(None, description="vLLM extension: extra variables for the chat template")
    tools: Annotated[list[Tool], Field(min_length=1, max_length=128)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool = True
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = Field(
        None, description="a reasoning model thinks (unless none), for at most EFFORT_BUDGET tokens unless thinking_token_budget says"
    )
    thinking_token_budget: int | None = Field(None, ge=1, description="vLLM extension: the think block is closed after this many tokens")

    @field_validator("chat_template_kwargs")
    @classmethod
    def _template_variables_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return template_variables(value)

    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)

    @model_validator(mode="after")
    def _top_logprobs_need_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        return self

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def logprobs_k(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class CompletionRequest(SamplingFields):
    prompt: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=MAX_N)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_N)]
    )
    max_tokens: int | None = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    suffix: None = None

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported")
        return value

    def prompts(self) -> list[str | list[int]]:
        """The batch of prompts: one string, a list of strings, one token list, or a list of token lists."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if prompt and isinstance(prompt[0], int):
            return [prompt]
        return list(prompt)  # type: ignore[arg-type]

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens

    @property
    def logprobs_k(self) -> int | None:
        return self.logprobs


# The body of either endpoint: each says in its own way how many tokens and logprobs it wants.
RequestBody = ChatCompletionRequest | CompletionRequest
