"""The `/docs` page: the OpenAPI document rendered as one self-contained HTML page.

No script and nothing fetched (the server may have no internet, and the page must not depend
on a CDN): operations grouped by tag, then the events, then every schema as a table, with
links between them. Everything shown is read from the document, so the page cannot disagree
with `/openapi.json`.
"""

from __future__ import annotations

from html import escape
from typing import Any

STYLE = """
body{font:15px/1.5 system-ui,sans-serif;margin:0 auto;max-width:70rem;padding:1rem 1.5rem;color:#1d2430}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #d8dee8;padding-bottom:.2rem;margin-top:2.5rem}
h3{margin:1.6rem 0 .3rem;font-size:1.05rem}code,.path{font-family:ui-monospace,monospace;font-size:.92em}
.op{border:1px solid #d8dee8;border-radius:6px;padding:.6rem .9rem;margin:.8rem 0}
.method{display:inline-block;min-width:4.2rem;font-weight:700;font-family:ui-monospace,monospace}
.get{color:#0b6e4f}.post{color:#1f5fbf}.put{color:#8a5a00}.patch{color:#7b3fb3}.delete{color:#b3261e}
table{border-collapse:collapse;margin:.3rem 0 .6rem;width:100%}th,td{text-align:left;vertical-align:top;
padding:.2rem .6rem;border-bottom:1px solid #eef1f5}th{font-weight:600;color:#4a5566}
.muted{color:#5d6778}.tag{font-size:.8em;background:#eef1f5;border-radius:3px;padding:0 .3rem}
nav ul{columns:2;padding-left:1.2rem}a{color:#1f5fbf;text-decoration:none}a:hover{text-decoration:underline}
"""


def render(document: dict[str, Any]) -> str:
    info = document.get("info", {})
    components = document.get("components", {}).get("schemas", {})
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            tag = (operation.get("tags") or ["other"])[0]
            by_tag.setdefault(tag, []).append((method, path, operation))
    title = escape(info.get("title", "API"))
    version = escape(str(info.get("version", "")))
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name=viewport content="width=device-width,initial-scale=1">',
        f"<title>{title} API</title><style>{STYLE}</style></head><body>",
        f"<h1>{title} API <span class=muted>{version}</span></h1>",
        f"<p>{_prose(info.get('description', ''))}</p>",
        '<p class=muted>The machine-readable document: <a href="/openapi.json"><code>/openapi.json</code></a> '
        "(OpenAPI 3.1).</p>",
        "<nav><ul>",
    ]
    for tag in sorted(by_tag):
        parts.append(f'<li><a href="#tag-{_anchor(tag)}">{escape(tag)}</a></li>')
    parts.append('<li><a href="#events">events</a></li><li><a href="#schemas">schemas</a></li></ul></nav>')
    for tag in sorted(by_tag):
        parts.append(f'<h2 id="tag-{_anchor(tag)}">{escape(tag)}</h2>')
        for method, path, operation in by_tag[tag]:
            parts.append(_operation(method, path, operation))
    parts.append(_events(document.get("x-event-types", {}), components))
    parts.append('<h2 id="schemas">Schemas</h2>')
    for name, schema in components.items():
        parts.append(_schema_section(name, schema))
    parts.append("</body></html>")
    return "".join(parts)


def _anchor(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)


def _prose(text: str) -> str:
    """Markdown-ish backticks to <code>, everything else escaped."""
    pieces = escape(text).split("`")
    return "".join(f"<code>{piece}</code>" if index % 2 else piece for index, piece in enumerate(pieces))


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def type_of(schema: Any) -> str:
    """A short readable type, with links to named schemas."""
    if not isinstance(schema, dict):
        return "any"
    if "$ref" in schema:
        name = _ref_name(schema["$ref"])
        return f'<a href="#schema-{_anchor(name)}">{escape(name)}</a>'
    if "const" in schema:
        return f"<code>{escape(repr(schema['const']))}</code>"
    if "enum" in schema:
        return " | ".join(f"<code>{escape(repr(value))}</code>" for value in schema["enum"])
    for combiner in ("anyOf", "oneOf"):
        if combiner in schema:
            return " | ".join(type_of(option) for option in schema[combiner])
    if "allOf" in schema:
        return " &amp; ".join(type_of(part) for part in schema["allOf"] if "$ref" in part or "type" in part)
    kind = schema.get("type")
    if kind == "array":
        return f"array of {type_of(schema.get('items'))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict) and "properties" not in schema:
        return f"map of {type_of(schema['additionalProperties'])}"
    if kind == "null":
        return "null"
    return escape(str(kind or "any"))


def _constraints(schema: dict[str, Any]) -> str:
    notes = []
    for key, label in (
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minimum", "≥"),
        ("maximum", "≤"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
        ("pattern", "pattern"),
        ("default", "default"),
    ):
        if key in schema:
            notes.append(f"{label} <code>{escape(str(schema[key]))}</code>")
    for option in schema.get("anyOf", []):
        if isinstance(option, dict) and option.get("type") != "null":
            inner = _constraints(option)
            if inner:
                notes.append(inner)
    return ", ".join(notes)


def _fields_table(schema: dict[str, Any]) -> str:
    properties = schema.get("properties", {})
    if not properties:
        return ""
    required = set(schema.get("required", ()))
    rows = ["<table><tr><th>field</th><th>type</th><th></th><th>notes</th></tr>"]
    for name, prop in properties.items():
        notes = "; ".join(filter(None, [_prose(prop.get("description", "")), _constraints(prop)]))
        rows.append(
            f"<tr><td><code>{escape(name)}</code></td><td>{type_of(prop)}</td>"
            f"<td>{'required' if name in required else 'optional'}</td><td>{notes}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _operation(method: str, path: str, operation: dict[str, Any]) -> str:
    anchor = _anchor(f"op-{method}-{path}")
    parts = [
        f'<div class=op id="{anchor}"><div><span class="method {method}">{method.upper()}</span> ',
        f"<span class=path>{escape(path)}</span> — {escape(operation.get('summary', ''))}</div>",
    ]
    if operation.get("description"):
        parts.append(f"<p>{_prose(operation['description'])}</p>")
    access = "no sign-in" if operation.get("security") == [] else "signed in (bearer token or cookie)"
    if operation.get("x-roles"):
        access += "; role " + ", ".join(f"<code>{escape(role)}</code>" for role in operation["x-roles"])
    parts.append(f"<p class=muted>Access: {access}")
    if operation.get("x-fires-events"):
        events = ", ".join(f"<code>{escape(event)}</code>" for event in operation["x-fires-events"])
        parts.append(f". Fires {events}")
    parts.append(".</p>")
    parameters = operation.get("parameters", [])
    if parameters:
        parts.append("<table><tr><th>parameter</th><th>in</th><th>type</th><th>notes</th></tr>")
        for parameter in parameters:
            schema = parameter.get("schema", {})
            notes = "; ".join(
                filter(
                    None,
                    [
                        "required" if parameter.get("required") else "",
                        _prose(parameter.get("description", "")),
                        _constraints(schema),
                    ],
                )
            )
            parts.append(
                f"<tr><td><code>{escape(parameter['name'])}</code></td><td>{escape(parameter['in'])}</td>"
                f"<td>{type_of(schema)}</td><td>{notes}</td></tr>"
            )
        parts.append("</table>")
    body = operation.get("requestBody", {}).get("content", {})
    for media, content in body.items():
        parts.append(f"<p>Body (<code>{escape(media)}</code>): {type_of(content.get('schema'))}</p>")
    parts.append("<table><tr><th>status</th><th>answer</th></tr>")
    for status, answer in operation.get("responses", {}).items():
        contents = answer.get("content", {})
        shown = [f"<code>{escape(media)}</code> {type_of(c.get('schema'))}" for media, c in contents.items()]
        if not contents or any(status.startswith(prefix) for prefix in ("4", "5")):
            shown = [_prose(answer.get("description", ""))]
        parts.append(f"<tr><td>{escape(status)}</td><td>{'; '.join(shown)}</td></tr>")
    parts.append("</table>")
    if "x-websocket" in operation:
        parts.append(_websocket(operation["x-websocket"], operation.get("x-websocket-close-codes", {})))
    parts.append("</div>")
    return "".join(parts)


def _websocket(messages: dict[str, Any], close_codes: dict[str, str]) -> str:
    parts = []
    for direction, title in (("client", "Client → server messages"), ("server", "Server → client messages")):
        schema = messages.get(direction)
        if schema is not None:
            parts.append(f"<p>{title}: {type_of(schema)}</p>")
    if close_codes:
        codes = "; ".join(f"<code>{escape(code)}</code> {_prose(why)}" for code, why in close_codes.items())
        parts.append(f"<p>Close codes: {codes}</p>")
    return "".join(parts)


def _events(event_types: dict[str, str], components: dict[str, Any]) -> str:
    parts = [
        '<h2 id="events">Events</h2>',
        f"<p>Every event is an {type_of({'$ref': '#/components/schemas/Envelope'})} whose "
        "<code>payload</code> depends on its <code>type</code>:</p>",
        "<table><tr><th>type</th><th>envelope</th><th>payload</th></tr>",
    ]
    for event_type, ref in event_types.items():
        envelope = components.get(_ref_name(ref), {})
        payload = envelope.get("properties", {}).get("payload", {})
        parts.append(
            f"<tr><td><code>{escape(event_type)}</code></td><td>{type_of({'$ref': ref})}</td>"
            f"<td>{type_of(payload)}</td></tr>"
        )
    parts.append("</table>")
    return "".join(parts)


def _schema_section(name: str, schema: dict[str, Any]) -> str:
    parts = [f'<h3 id="schema-{_anchor(name)}">{escape(name)}</h3>']
    if schema.get("description"):
        parts.append(f"<p>{_prose(schema['description'])}</p>")
    table = _fields_table(schema)
    if table:
        parts.append(table)
    else:
        parts.append(f"<p>{type_of({k: v for k, v in schema.items() if k != 'description'})}</p>")
    if schema.get("additionalProperties") is True or ("properties" in schema and "additionalProperties" not in schema):
        parts.append("<p class=muted>May carry more fields.</p>")
    return "".join(parts)
