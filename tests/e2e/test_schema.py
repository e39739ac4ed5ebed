"""Schemathesis over the gateway's own `/openapi.json`, against `ponder serve` with a real engine: requests drawn
from every operation's schema, valid ones and deliberately invalid ones, must never get a 5xx, and every error,
whether a response or an event in a stream, must be in OpenAI's shape.

The gateway is the real server with tight server-side bounds (a short default and maximum deadline, a small
sandbox), so any drawn request, however many samples or tokens it asks for, ends within seconds. A drawn `model`
names a served model (or a preset, a strategy suffix, an unknown one) most of the time, so the draws get past
model resolution into validation, strategies and the engine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.transport import Response

from tests.conftest import Server, database_url, eager_models, emptied_database, running_server

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
EXAMPLES = 30
"""Per operation and mode; at most a few seconds each, so the whole run stays within a few minutes."""
MODELS = [MODEL, MODEL, MODEL, f"{MODEL}@majority", f"{MODEL}@quick-vote", f"{MODEL}@nonsense", "not-a-model"]
PRESETS = """
quick-vote:
  description: majority of 3
  strategy: {name: majority, n: 3}
"""
ERROR_FIELDS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def gateway(redis_url: str, ray_address: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("schema")
    (home / "presets.yaml").write_text(PRESETS)
    url = database_url(redis_url, "schema")
    env = {
        "PONDER_RAY_NAMESPACE": "ponder-schema",
        "PONDER_MODELS": eager_models(),
        "PONDER_PRESETS": str(home / "presets.yaml"),
        "PONDER_BUDGET__DEADLINE_S": "3",
        "PONDER_BUDGET__MAX_DEADLINE_S": "5",
        "PONDER_SANDBOX__WALL_S": "3",
        "PONDER_SANDBOX__CPU_S": "2",
        "PONDER_ANSWER_TIMEOUT_S": "2",
    }
    with emptied_database(redis_url, "schema"), running_server(url, ray_address, home / "ponder.log", **env) as server:
        yield server


def error_shape(body: Any) -> str | None:
    """What is wrong with an error body, or None when it is OpenAI's `{"error": {message, type, param, code}}`."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(error) != ERROR_FIELDS:
        return f"not an OpenAI error: {json.dumps(body)[:300]}"
    if not (isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)):
        return f"error without a message or type: {error}"
    if not all(error[k] is None or isinstance(error[k], str) for k in ("param", "code")):
        return f"param and code must be strings or null: {error}"
    return None


def problems(response: Response) -> list[str]:
    status, text = response.status_code, response.content.decode(errors="replace")
    found = [f"{status}: {text[:300]}"] if status >= 500 else []
    content_type = next((v[0] for k, v in response.headers.items() if k.lower() == "content-type"), "")
    if status >= 400:
        try:
            body = json.loads(text)
        except ValueError:
            return [*found, f"{status} error is not JSON: {text[:300]}"]
        if (wrong := error_shape(body)) is not None:
            found.append(f"{status}: {wrong}")
    elif content_type.startswith("text/event-stream"):
        for line in text.splitlines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if "error" in event:
                if (wrong := error_shape(event)) is not None:
                    found.append(f"stream error event: {wrong}")
                elif event["error"]["type"] in ("server_error", "service_unavailable_error"):
                    found.append(f"stream ended in a server error: {event['error']}")
    return found


def with_model(case: Any, model: str) -> None:
    """Points a drawn request at `model` where it names one (a body's or query's `model`)."""
    if isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
        case.body["model"] = model
    if isinstance(case.query, dict) and isinstance(case.query.get("model"), str):
        case.query["model"] = model


def draw_requests(gateway: Server, operation: Any, mode: GenerationMode, found: list[str], counts: dict[str, int]) -> None:
    """Up to EXAMPLES drawn requests of one operation and mode, each problem noted with a curl line to replay it.
    No shrinking: a failing draw is recorded as it was, and the run goes on to the next."""
    label = f"{operation.label} ({mode.value})"

    @given(case=operation.as_strategy(generation_mode=mode), model=st.sampled_from(MODELS))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def draw(case: Any, model: str) -> None:
        with_model(case, model)
        response = case.call(base_url=gateway.base_url, timeout=60)
        counts[label] = counts.get(label, 0) + 1
        found.extend(f"{label}: {p}\n  {case.as_curl_command()}" for p in problems(response))

    try:
        draw()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE, label  # no input of it can break its schema (no parameters)


def test_no_5xx_and_every_error_in_openai_shape(gateway: Server, tmp_path: Path) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/completions", "/v1/feedback", "/v1/cost-model"}
    found: list[str] = []
    counts: dict[str, int] = {}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            draw_requests(gateway, operation, mode, found, counts)
    (tmp_path / "counts.json").write_text(json.dumps(counts, indent=1))
    assert not found, "\n".join(found[:20])
    assert all(counts.get(f"{op.label} (positive)", 0) > 0 for op in operations), counts
    assert gateway.health().status_code == 200  # the engine came through it all
