"""Tool calls and JSON answers whose right answer is known, from a fixed seed: the suite `bench.structured_voting`
votes on. A tool problem asks about a city, and the right call is the tool for that question with the city as its
argument. A JSON problem states a person's name, age and city, and the right answer is the document holding exactly
those. Grading reads the answer as the API returns it (tool calls, or the message's JSON)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

SEED = 20261205
CITIES = ["Paris", "Oslo", "Tokyo", "Lima", "Cairo", "Rome", "Berlin", "Madrid", "Dublin", "Vienna", "Prague", "Lisbon", "Athens", "Seoul", "Nairobi"]
NAMES = ["Alice", "Bruno", "Chen", "Dana", "Emil", "Farah", "Goran", "Hana", "Ivan", "Jade", "Kofi", "Lena", "Mateo", "Nina", "Omar"]
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": name, "description": description, "parameters": CITY}}
    for name, description in (
        ("get_weather", "The current weather in a city"),
        ("get_time", "The local time in a city"),
        ("get_population", "How many people live in a city"),
    )
]
QUESTIONS = {"get_weather": "What is the weather in {city}?", "get_time": "What time is it in {city}?", "get_population": "How many people live in {city}?"}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "city": {"type": "string"}},
    "required": ["name", "age", "city"],
    "additionalProperties": False,
}
STATEMENT = "{name} is {age} years old and lives in {city}. Reply in JSON with their name, age and city."


@dataclass(frozen=True)
class Problem:
    id: str
    tier: str
    """tool call or json."""
    question: str
    expected: dict[str, Any]
    """tool call: {"name", "city"}; json: the document."""

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.question}]

    def request(self) -> dict[str, Any]:
        """The request fields that make this problem's answer a tool call or a JSON document."""
        if self.tier == "tool call":
            return {"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False}
        return {"response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}}

    def correct(self, message: Any) -> bool:
        """`message`: the API's assistant message. Anything that does not parse is wrong, never an error."""
        if self.tier == "tool call":
            calls = message.tool_calls or []
            if len(calls) != 1:
                return False
            arguments = _json(calls[0].function.arguments)
            return calls[0].function.name == self.expected["name"] and isinstance(arguments, dict) and _same(arguments.get("city"), self.expected["city"])
        document = _json(message.content or "")
        return isinstance(document, dict) and all(_same(document.get(k), v) for k, v in self.expected.items())


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, str):
        return isinstance(got, str) and got.strip().casefold() == want.casefold()
    return type(got) is type(want) and got == want


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def problems(count: int = 60, seed: int = SEED) -> list[Problem]:
    """Tool and JSON problems alternating, so that any prefix keeps both tiers."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        city = rng.choice(CITIES)
        if i % 2 == 0:
            tool = rng.choice(list(QUESTIONS))
            out.append(Problem(f"tool-{i}", "tool call", QUESTIONS[tool].format(city=city), {"name": tool, "city": city}))
        else:
            name, age = rng.choice(NAMES), rng.randint(18, 90)
            out.append(Problem(f"json-{i}", "json", STATEMENT.format(name=name, age=age, city=city), {"name": name, "age": age, "city": city}))
    return out
