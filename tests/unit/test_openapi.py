"""`/openapi.json` describes what the routes that read their own body or query accept (tests/e2e/test_schema.py
draws requests from it), and every reference in it resolves."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings


def document() -> dict[str, Any]:
    # No `with`: the lifespan (Ray, engines) is not needed to serve the schema.
    return TestClient(create_app(Settings())).get("/openapi.json").json()


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return ([node["$ref"]] if "$ref" in node else []) + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_bodies_and_queries_are_documented_from_the_models() -> None:
    doc = document()
    paths, schemas = doc["paths"], doc["components"]["schemas"]
    for path, model in (("/v1/chat/completions", "ChatCompletionRequest"), ("/v1/completions", "CompletionRequest"), ("/v1/feedback", "FeedbackRequest")):
        body = paths[path]["post"]["requestBody"]
        assert body["required"] and body["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{model}"}
    assert {"messages", "model", "strategy", "budget", "verifier"} <= set(schemas["ChatCompletionRequest"]["properties"])
    assert set(schemas["ChatCompletionRequest"]["required"]) == {"model", "messages"}
    query = {p["name"]: p for p in paths["/v1/cost-model"]["get"]["parameters"]}
    assert query["model"]["required"] and query["budget"]["required"] and not query["unit"]["required"]
    assert {p["name"] for p in paths["/dashboard/data"]["get"]["parameters"]} >= {"model", "strategy", "window"}


def test_every_reference_resolves() -> None:
    doc = document()
    found = refs(doc)
    assert "#/components/schemas/MajorityParams" in found  # the strategy union, nested definitions included
    assert all(r.startswith("#/components/schemas/") and r.rsplit("/", 1)[1] in doc["components"]["schemas"] for r in found)


def test_generation_routes_describe_their_responses_and_errors() -> None:
    doc = document()
    paths = doc["paths"]
    for path, method, model in (
        ("/v1/chat/completions", "post", "ChatCompletion"),
        ("/v1/completions", "post", "TextCompletion"),
        ("/v1/responses", "post", "ResponseObject"),
        ("/v1/responses/{response_id}", "get", "ResponseObject"),
        ("/v1/responses/{response_id}", "delete", "Deleted"),
    ):
        described = paths[path][method]["responses"]
        assert described["200"]["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{model}"}
        assert described["404"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorReply"}
    assert "text/event-stream" in paths["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    message = doc["components"]["schemas"]["AssistantMessage"]["properties"]
    assert {"content", "reasoning_content", "tool_calls"} <= set(message)
