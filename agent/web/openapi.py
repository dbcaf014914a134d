"""The API's routes as declarations, and what is made of them: the OpenAPI 3.1 document, the reference page,
and the checking of each request's parameters.

A route is declared once (``Route``: path, parameters with their JSON
schemas, the 200 body's schema, the errors it can answer); the server
parses and checks parameters from the same declaration (``parse``), so the
document cannot say one thing while the server does another. The reference
page is plain HTML made here from the document: no script, no stylesheet or
font from elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from dataclasses import dataclass, field
from typing import Any

ERROR_SCHEMA = {
    "type": "object", "required": ["error", "detail"],
    "properties": {"error": {"type": "string", "description": "what went wrong, in a few words"},
                   "detail": {"type": "string", "description": "why, naming the parameter at fault if one is"}},
}
_STATUS_TEXT = {
    400: "A parameter is invalid; ``detail`` names it.",
    401: "The API key is missing, unknown or revoked (send ``Authorization: Bearer <key>`` or ``X-API-Key``).",
    403: "The key lacks the scope this route needs.",
    404: "Not found.",
    429: "Too many requests from this client or key; ``Retry-After`` says when to try again.",
    503: "The time-series store (or the agent's state) cannot answer now.",
}


class BadParameter(ValueError):
    def __init__(self, name: str, detail: str):
        super().__init__(f"{name}: {detail}")
        self.name, self.detail = name, detail


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # query | path
    schema: dict
    description: str
    required: bool = False


@dataclass(frozen=True)
class Route:
    name: str  # the operationId, and the name api.anonymous uses
    path: str  # OpenAPI form: /api/v1/relays/{fingerprint}
    summary: str
    description: str
    response: dict  # JSON schema of the 200 answer
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()  # besides 401 and 429, which every route can answer
    tag: str = "data"
    media: str = "application/json"
    open: bool = False  # never needs a key (health, metrics, the spec itself)
    extra_responses: dict[int, str] = field(default_factory=dict)  # status -> description, bodies as the 200's

    @property
    def flask_path(self) -> str:
        return re.sub(r"\{(\w+)\}", r"<\1>", self.path)


def parse(route: Route, query, path_values: dict) -> dict[str, Any]:
    """The route's parameters from the query string and path, checked against their schemas; BadParameter if not."""
    values: dict[str, Any] = {}
    for param in route.params:
        raw = path_values.get(param.name) if param.where == "path" else query.get(param.name)
        if raw is None:
            if param.required:
                raise BadParameter(param.name, "is required")
            if "default" in param.schema:
                values[param.name] = param.schema["default"]
            continue
        values[param.name] = _checked(param.name, raw, param.schema)
    return values


def _checked(name: str, raw: str, schema: dict) -> Any:
    kind = schema.get("type", "string")
    if kind == "integer":
        if not re.fullmatch(r"[+-]?\d{1,18}", raw.strip()):
            raise BadParameter(name, f"must be a whole number, got {raw[:40]!r}")
        value: Any = int(raw)
        if "minimum" in schema and value < schema["minimum"]:
            raise BadParameter(name, f"must be at least {schema['minimum']}, got {value}")
        if "maximum" in schema and value > schema["maximum"]:
            raise BadParameter(name, f"must be at most {schema['maximum']}, got {value}")
        return value
    if kind == "boolean":
        if raw not in ("true", "false"):
            raise BadParameter(name, f"must be true or false, got {raw[:40]!r}")
        return raw == "true"
    if "enum" in schema and raw not in schema["enum"]:
        raise BadParameter(name, f"must be one of {', '.join(schema['enum'])}, got {raw[:40]!r}")
    if len(raw) < schema.get("minLength", 0):
        raise BadParameter(name, f"must be at least {schema['minLength']} characters")
    if len(raw) > schema.get("maxLength", 1000):
        raise BadParameter(name, f"must be at most {schema.get('maxLength', 1000)} characters")
    if "pattern" in schema and not re.search(schema["pattern"], raw):
        raise BadParameter(name, f"must match {schema['pattern']}, got {raw[:40]!r}")
    return raw


def document(routes: tuple[Route, ...], anonymous, version: str, server_url: str = "/") -> dict:
    """The OpenAPI 3.1 document; ``anonymous(route_name)`` says whether a data route needs a key here."""
    paths: dict[str, dict] = {}
    for route in routes:
        responses: dict[str, Any] = {"200": {"description": "OK", "content": {route.media: {"schema": route.response}}}}
        for status, text in route.extra_responses.items():
            responses[str(status)] = {"description": text, "content": {route.media: {"schema": route.response}}}
        for status in sorted({*route.errors, 401, 429} | ({400} if route.params else set())):
            responses[str(status)] = {"description": _STATUS_TEXT[status], "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        responses["429"]["headers"] = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}
        open_route = route.open or anonymous(route.name)
        operation: dict[str, Any] = {
            "operationId": route.name, "summary": route.summary, "description": route.description,
            "tags": [route.tag], "responses": responses,
            "security": ([{}] if open_route else []) + [{"bearer": []}, {"apiKey": []}],
            "parameters": [{"name": p.name, "in": p.where, "required": p.required or p.where == "path",
                            "description": p.description, "schema": p.schema} for p in route.params],
        }
        paths[route.path] = {"get": operation}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Allium Agent API", "version": version,
                 "description": "Read-only figures, relays, operators, authorities, findings and anomalies of the "
                                "Tor network as this Allium Agent records them. Times are Unix seconds (UTC)."},
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer aa_..."},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


_STYLE = ("body{font:16px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#111}"
          "code,pre{font-family:ui-monospace,monospace;background:#f3f3f3;padding:0 .2em}"
          "pre{padding:.5rem;overflow-x:auto}table{border-collapse:collapse;margin:.5rem 0}"
          "th,td{border:1px solid #bbb;padding:.2rem .5rem;text-align:left;vertical-align:top}"
          "section{border-top:2px solid #ddd;margin-top:2rem}")
#: The page's Content-Security-Policy: only its own inline style (by hash), nothing else.
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
PAGE_POLICY = (f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; "
               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


def render_html(spec: dict) -> str:
    """The reference page: every operation with its parameters, responses and the 200 answer's schema."""
    e = html.escape
    info = spec["info"]
    parts = [f"<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content='width=device-width'>"
             f"<title>{e(info['title'])} reference</title><style>{_STYLE}</style>"
             f"<h1>{e(info['title'])} {e(info['version'])}</h1><p>{e(info['description'])}</p>"
             "<p>The machine-readable document: <a href='openapi.json'>openapi.json</a> (OpenAPI 3.1). "
             "Send a key as <code>Authorization: Bearer aa_...</code> or <code>X-API-Key: aa_...</code>.</p>"
             "<nav aria-label='Operations'><ul>"]
    operations = [(path, op) for path, item in spec["paths"].items() for op in item.values()]
    parts += [f"<li><a href='#{e(op['operationId'])}'><code>GET {e(path)}</code></a>: {e(op['summary'])}</li>"
              for path, op in operations]
    parts.append("</ul></nav><main>")
    for path, op in operations:
        needs_key = {} not in op["security"]
        parts.append(f"<section id='{e(op['operationId'])}'><h2><code>GET {e(path)}</code></h2>"
                     f"<p><strong>{e(op['summary'])}</strong></p><p>{e(op['description'])}</p>"
                     f"<p>Key: {'required' if needs_key else 'not required'}.</p>")
        if op["parameters"]:
            parts.append("<table><caption>Parameters</caption><tr><th scope=col>name</th><th scope=col>in</th>"
                         "<th scope=col>schema</th><th scope=col>description</th></tr>")
            parts += [f"<tr><td><code>{e(p['name'])}</code>{' (required)' if p['required'] else ''}</td>"
                      f"<td>{e(p['in'])}</td><td><code>{e(json.dumps(p['schema']))}</code></td>"
                      f"<td>{e(p['description'])}</td></tr>" for p in op["parameters"]]
            parts.append("</table>")
        parts.append("<table><caption>Responses</caption><tr><th scope=col>status</th><th scope=col>meaning</th></tr>")
        parts += [f"<tr><td>{e(status)}</td><td>{e(response['description'].replace('``', ''))}</td></tr>"
                  for status, response in op["responses"].items()]
        parts.append("</table>")
        schema = next(iter(op["responses"]["200"]["content"].values()))["schema"]
        parts.append(f"<details><summary>Schema of the 200 answer</summary><pre>{e(json.dumps(schema, indent=2))}"
                     "</pre></details></section>")
    parts.append("</main></html>")
    return "".join(parts)
