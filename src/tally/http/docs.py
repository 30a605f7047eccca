"""A docs page rendered on the server from the OpenAPI schema: no JavaScript, no CDN.

Its one stylesheet is served by the app itself, so the page works offline and behind
strict Content-Security-Policy headers.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; color: #1d1f21; }
h1 { margin-bottom: 0; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; }
.route { margin: 1.5rem 0; padding: .75rem 1rem; border: 1px solid #e3e3e3;
         border-radius: 6px; }
.method { font: bold 13px monospace; padding: 2px 6px; border-radius: 4px; color: #fff; }
.get { background: #2f7d32; } .post { background: #1c5fb0; }
code, pre { font-family: ui-monospace, monospace; font-size: 13px; }
pre { background: #f6f8fa; padding: .75rem; overflow-x: auto; border-radius: 4px; }
table { border-collapse: collapse; } td, th { padding: 2px 10px 2px 0; text-align: left; }
"""


def _schema_json(value: Any) -> str:
    return escape(json.dumps(value, indent=2, sort_keys=True))


def render(schema: dict[str, Any]) -> str:
    info = schema.get("info", {})
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{escape(str(info.get('title', 'API')))} API</title>",
        "<link rel='stylesheet' href='/docs/style.css'></head><body>",
        f"<h1>{escape(str(info.get('title', '')))} HTTP API</h1>",
        f"<p>Version {escape(str(info.get('version', '')))}. Machine-readable schema: "
        "<a href='/openapi.json'>/openapi.json</a>. Every /v1 route needs "
        "<code>Authorization: Bearer KEY</code>; every POST needs an "
        "<code>Idempotency-Key</code> header.</p>",
        "<h2>Routes</h2>",
    ]
    for path, operations in sorted(schema.get("paths", {}).items()):
        for method, operation in operations.items():
            parts.append(_operation(path, method, operation))
    parts.append("<h2>Schemas</h2>")
    for name, body in sorted(schema.get("components", {}).get("schemas", {}).items()):
        parts.append(f"<h3 id='{escape(name)}'>{escape(name)}</h3><pre>{_schema_json(body)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _operation(path: str, method: str, operation: dict[str, Any]) -> str:
    lines = [
        "<div class='route'>",
        f"<span class='method {escape(method)}'>{escape(method.upper())}</span> "
        f"<code>{escape(path)}</code> — {escape(str(operation.get('summary', '')))}",
    ]
    if description := operation.get("description"):
        lines.append(f"<p>{escape(str(description))}</p>")
    parameters = operation.get("parameters", [])
    if parameters:
        lines.append("<table><tr><th>parameter</th><th>in</th><th>required</th></tr>")
        for parameter in parameters:
            lines.append(
                f"<tr><td><code>{escape(str(parameter.get('name')))}</code></td>"
                f"<td>{escape(str(parameter.get('in')))}</td>"
                f"<td>{'yes' if parameter.get('required') else 'no'}</td></tr>"
            )
        lines.append("</table>")
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if body is not None:
        lines.append(f"<p>Body:</p><pre>{_schema_json(body.get('schema', {}))}</pre>")
    statuses = ", ".join(sorted(operation.get("responses", {})))
    lines.append(f"<p>Answers: {escape(statuses)}</p></div>")
    return "\n".join(lines)
