"""The request shapes in `/openapi.json`. The generation and feedback routes read their body themselves (content
type, size and JSON checks come before validation, so each gets its own status), and the query routes parse their
query into a model, so FastAPI sees no body or query parameter to document. This adds them from the same pydantic
models the routes validate with, so the schema tells clients (and schema-driven testers) what is accepted."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

REF = "#/components/schemas/{model}"


def document_requests(app: FastAPI, bodies: dict[tuple[str, str], type[BaseModel]], queries: dict[tuple[str, str], type[BaseModel]]) -> None:
    """`bodies` and `queries` map (method, path) to the model of that route's JSON body or query string."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for (method, path), model in bodies.items():
            components[model.__name__] = _schema(model, components)
            content = {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}}
            schema["paths"][path][method]["requestBody"] = {"required": True, "content": content}
        for (method, path), model in queries.items():
            properties = _schema(model, components)
            required = set(properties.get("required", ()))
            schema["paths"][path][method]["parameters"] = [
                {"name": name, "in": "query", "required": name in required, "schema": field} for name, field in properties["properties"].items()
            ]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    """The model's JSON schema with its nested definitions moved into the document's components."""
    schema = model.model_json_schema(ref_template=REF)
    components.update(schema.pop("$defs", {}))
    return schema
