"""Request payloads that several end-to-end files send: a JSON answer schema, two function tools and the question
that calls for one."""

from __future__ import annotations

from typing import Any

MODEL = "smollm2-135m"
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "integer"}, "unit": {"type": "string", "enum": ["apples", "pears"]}},
    "required": ["answer", "unit"],
    "additionalProperties": False,
}
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {"name": "get_weather", "description": "The current weather in a city", "parameters": CITY},
}
TIME: dict[str, Any] = {
    "type": "function",
    "function": {"name": "get_time", "description": "The local time in a city", "parameters": CITY},
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    """A strict `json_schema` response format, as a chat request carries it."""
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
