"""The OpenAPI 3.1 document, built from the running app's routes and their declarations.

Every rule in the Quart `url_map` is described by the `@documented` declaration on its view
(`app.web.contract`), or, for routes the framework adds itself, by `FRAMEWORK_ROUTES` below. The
schemas come from the pydantic models the handlers validate with and answer with, plus the
event envelope and every event type's payload (`app.web.event_schemas`). `undocumented(app)` lists
what is missing; tests/test_openapi.py holds it empty.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Literal

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema
from quart import Quart
from werkzeug.routing import Rule

from app.errors import NotFound
from app.web.contract import JSON, Operation, describe, operation_of
from app.web.event_schemas import EVENT_MODELS, EVENT_PAYLOADS, AnyEvent, Envelope
from app.web.wire import ErrorBody

REF = "#/components/schemas/{model}"
SKIPPED_METHODS = frozenset({"HEAD", "OPTIONS"})
RETRY_AFTER_STATUSES = (429, 503)

# Routes that Quart adds itself, with no view of ours to carry a declaration.
FRAMEWORK_ROUTES: dict[str, Operation] = {
    "static": describe(
        "A static asset of the page (JavaScript, CSS)",
        media_type="*/*",
        auth=False,
        errors=[NotFound],
        description="Plain files from the installed `static/` directory; no build step.",
    ),
}

SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "`Authorization: Bearer <jwt>` (curl, services).",
    },
    "cookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": "parley_token",
        "description": "The HttpOnly cookie `POST /api/session` or `POST /api/dev/login` sets (browsers).",
    },
}

Mode = Literal["validation", "serialization"]


@dataclass(frozen=True, slots=True)
class Route:
    rule: Rule
    method: str
    operation: Operation

    @property
    def path(self) -> str:
        return openapi_path(self.rule.rule)


def openapi_path(rule: str) -> str:
    """`/api/discussions/<discussion_id>` -> `/api/discussions/{discussion_id}`."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _operation_for(app: Quart, rule: Rule) -> Operation | None:
    return operation_of(app.view_functions.get(rule.endpoint)) or FRAMEWORK_ROUTES.get(rule.endpoint)


def _rules(app: Quart) -> Iterator[tuple[Rule, str]]:
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - SKIPPED_METHODS):
            yield rule, method


def routes(app: Quart) -> list[Route]:
    described = []
    for rule, method in _rules(app):
        operation = _operation_for(app, rule)
        if operation is not None:
            described.append(Route(rule, method, operation))
    return described


def undocumented(app: Quart) -> list[str]:
    """`METHOD /rule (endpoint)` for every route without a declaration."""
    return [
        f"{method} {rule.rule} ({rule.endpoint})" for rule, method in _rules(app) if _operation_for(app, rule) is None
    ]


@dataclass(frozen=True, slots=True)
class _Wanted:
    """One operation's schemas, as indexes into `_Schemas`."""

    body: int | None
    query: int | None
    replies: dict[int, int]
    messages: dict[str, int]


class _Schemas:
    """Collects every type the document needs, then has pydantic make all their JSON Schemas
    at once: shared models become one component each, referenced everywhere."""

    def __init__(self) -> None:
        self._wanted: list[tuple[Any, Mode]] = []
        self._resolved: dict[int, Any] = {}
        self.components: dict[str, Any] = {}

    def want(self, schema: Any, mode: Mode) -> int:
        for index, (known, known_mode) in enumerate(self._wanted):
            if known is schema and known_mode == mode:
                return index
        self._wanted.append((schema, mode))
        return len(self._wanted) - 1

    def generate(self) -> None:
        inputs = [(index, mode, TypeAdapter(schema).core_schema) for index, (schema, mode) in enumerate(self._wanted)]
        by_key, definitions = GenerateJsonSchema(ref_template=REF).generate_definitions(inputs)
        self._resolved = {index: value for (index, _), value in by_key.items()}
        self.components = dict(sorted(definitions.items()))

    def __getitem__(self, index: int) -> Any:
        return self._resolved[index]

    def properties(self, index: int) -> tuple[dict[str, Any], set[str]]:
        """A model's properties and required names (resolving a top-level `$ref`)."""
        schema = self._resolved[index]
        ref = schema.get("$ref")
        if ref is not None:
            schema = self.components[ref.rsplit("/", 1)[-1]]
        return schema.get("properties", {}), set(schema.get("required", ()))


def build(app: Quart) -> dict[str, Any]:
    described = routes(app)
    schemas = _Schemas()
    error_index = schemas.want(ErrorBody, "serialization")
    schemas.want(Envelope, "serialization")
    event_index = schemas.want(AnyEvent, "serialization")
    for model in EVENT_MODELS.values():
        schemas.want(model, "serialization")
    wanted: dict[int, _Wanted] = {}
    for number, route in enumerate(described):
        operation = route.operation
        wanted[number] = _Wanted(
            body=schemas.want(operation.body, "validation") if operation.body is not None else None,
            query=schemas.want(operation.query, "validation") if operation.query is not None else None,
            replies={
                reply.status: schemas.want(reply.schema, "serialization")
                for reply in operation.replies
                if reply.schema is not None
            },
            messages={
                # What the client sends is validated; what the server sends is serialized.
                side: schemas.want(kind, "validation" if side == "client" else "serialization")
                for side, kind in operation.messages.items()
            },
        )
    schemas.generate()
    components = schemas.components
    components["Event"] = {
        "description": "Any event: the envelope, with the payload its `type` names.",
        **schemas[event_index],
    }

    paths: dict[str, dict[str, Any]] = {}
    for number, route in enumerate(described):
        paths.setdefault(route.path, {})[route.method.lower()] = _operation_object(
            route, schemas, wanted[number], schemas[error_index]
        )
    tags = sorted({_tag(route) for route in described})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Parley",
            "version": _version(),
            "description": (
                "Parley's real-time layer: REST for discussions, responses, presence and "
                "notifications; the same event envelopes over SSE (`/stream`), WebSocket (`/ws`) "
                'and long-poll (`/poll`). Errors are `{"error": {"code", "message"}}`; every '
                "operation lists the codes it can answer. Event types and their payloads are the "
                "`*Event` schemas (`Event` is their union)."
            ),
        },
        "tags": [{"name": tag} for tag in tags],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components,
            "securitySchemes": SECURITY_SCHEMES,
        },
        "x-event-types": {
            event_type: f"#/components/schemas/{EVENT_MODELS[event_type].__name__}"
            for event_type in sorted(EVENT_PAYLOADS)
        },
    }


def _version() -> str:
    try:
        return metadata.version("parley")
    except metadata.PackageNotFoundError:
        return "0"


def _operation_object(route: Route, schemas: _Schemas, wanted: _Wanted, error_schema: Any) -> dict[str, Any]:
    operation = route.operation
    body, query, replies = wanted.body, wanted.query, wanted.replies
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in route.rule.arguments
    ]
    parameters.sort(key=lambda parameter: route.rule.rule.index(f"{parameter['name']}>"))
    if query is not None:
        properties, required = schemas.properties(query)
        for name, schema in properties.items():
            schema = _absent_not_null(schema)
            parameter = {"name": name, "in": "query", "required": name in required, "schema": schema}
            if "description" in schema:
                parameter["description"] = schema["description"]
            parameters.append(parameter)
    for name, what in operation.headers.items():
        parameters.append(
            {"name": name, "in": "header", "required": False, "description": what, "schema": {"type": "string"}}
        )

    responses: dict[str, Any] = {}
    for reply in operation.replies:
        answer: dict[str, Any] = {"description": reply.description or "success"}
        if reply.status in replies:
            answer["content"] = {reply.media_type: {"schema": schemas[replies[reply.status]]}}
        elif reply.media_type != JSON:
            answer["content"] = {reply.media_type: {"schema": {"type": "string"}}}
        responses[str(reply.status)] = answer
    for status, codes in operation.error_codes(route.method).items():
        responses[str(status)] = _error_response(status, codes, error_schema)

    entry: dict[str, Any] = {
        "operationId": _operation_id(route),
        "summary": operation.summary,
    }
    if operation.description:
        entry["description"] = operation.description
    entry["tags"] = [_tag(route)]
    if parameters:
        entry["parameters"] = parameters
    if body is not None:
        entry["requestBody"] = {"required": True, "content": {JSON: {"schema": schemas[body]}}}
    entry["responses"] = responses
    entry["security"] = [{"bearer": []}, {"cookie": []}] if operation.auth else []
    if operation.roles:
        entry["x-roles"] = list(operation.roles)
    if operation.fires:
        entry["x-fires-events"] = list(operation.fires)
    if wanted.messages:
        entry["x-websocket"] = {side: schemas[index] for side, index in wanted.messages.items()}
    entry.update(operation.extensions)
    return entry


def _absent_not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`X | None = None` in a query model means "may be left out": a query string cannot
    send null, so describe the parameter as plain `X`, optional."""
    options = schema.get("anyOf", [])
    kept = [option for option in options if option != {"type": "null"}]
    if len(options) != 2 or len(kept) != 1:
        return schema
    rest = {key: value for key, value in schema.items() if key != "anyOf" and not (key == "default" and value is None)}
    return {**kept[0], **rest}


def _tag(route: Route) -> str:
    """The blueprint's name (`discussions.follow` -> `discussions`), or the framework's endpoint."""
    endpoint: str = route.rule.endpoint
    return endpoint.partition(".")[0]


def _operation_id(route: Route) -> str:
    name = route.rule.endpoint.replace(".", "_")
    several = len((route.rule.methods or set()) - SKIPPED_METHODS) > 1
    return f"{name}_{route.method.lower()}" if several else name


def _error_response(status: int, codes: list[str], error_schema: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": "error: " + ", ".join(f"`{code}`" for code in codes),
        "content": {
            JSON: {
                "schema": {
                    "allOf": [
                        error_schema,
                        {"properties": {"error": {"properties": {"code": {"enum": codes}}}}},
                    ]
                }
            }
        },
    }
    if status in RETRY_AFTER_STATUSES:
        answer["headers"] = {
            "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
        }
    return answer
