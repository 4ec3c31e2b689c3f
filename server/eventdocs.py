"""``/docs/events``: the AsyncAPI document rendered as one self-contained HTML page.

Rendered on the server from the same document ``/asyncapi.json`` serves (no scripts, no
CDN): events by direction with their payload fields, acknowledgements and error codes,
the raw WebSocket frames, the auth scheme, the error table and the shared types.
"""

from __future__ import annotations

import html
import re
from typing import Any

import orjson

Doc = dict[str, Any]
_SCHEMAS = "#/components/schemas/"
_CODE = re.compile(r"`([^`]+)`")


def render_event_docs(doc: Doc) -> str:
    info = doc["info"]
    schemas: Doc = doc["components"]["schemas"]
    sio = doc["channels"]["socketio"]["messages"]
    raw = doc["channels"]["websocket"]["messages"]
    ops = doc["operations"]
    parts = [
        f"<h1>{_e(info['title'])} <small>v{_e(info['version'])}</small></h1>",
        '<p>Machine-readable: <a href="/asyncapi.json">/asyncapi.json</a> (AsyncAPI '
        f'{_e(doc["asyncapi"])}). HTTP routes: <a href="/docs">/docs</a>.</p>',
        _prose(info.get("description", "")),
        _nav(sio, raw),
        "<h2 id='connect'>Connecting and auth</h2>",
        _servers(doc.get("servers", {})),
        *(_security(name, s) for name, s in doc["components"]["securitySchemes"].items()),
        "<h2 id='client'>Client → server events</h2>",
    ]
    for name, msg in sio.items():
        if ops.get(f"receive_{name}"):
            parts.append(
                _event(msg, schemas, ack=sio.get(f"{name}_ack"), op=ops[f"receive_{name}"])
            )
    parts.append("<h2 id='server'>Server → client events</h2>")
    for name, msg in sio.items():
        if ops.get(f"send_{name}"):
            parts.append(_event(msg, schemas, op=ops[f"send_{name}"]))
    parts.append("<h2 id='raw'>Raw WebSocket frames (/websockets/openrouter)</h2>")
    parts.append(_prose(doc["channels"]["websocket"].get("description", "")))
    for name, msg in raw.items():
        direction = "client → server" if ops.get(f"raw_receive_{name}") else "server → client"
        parts.append(_event(msg, schemas, anchor=f"raw-{name}", direction=direction))
    parts.append(_error_codes(schemas.get("ErrorCode", {})))
    parts.append("<h2 id='types'>Types</h2>")
    for name in sorted(schemas):
        if name != "ErrorCode":
            parts.append(_type(name, schemas[name]))
    body = "\n".join(parts)
    title = _e(info["title"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{_CSS}</style></head>
<body><main>{body}</main></body></html>
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _inline(text: str) -> str:
    return _CODE.sub(r"<code>\1</code>", _e(text.replace("``", "`")))


def _prose(text: str) -> str:
    """Paragraphs, numbered lists and `code` of the document's descriptions."""
    out: list[str] = []
    for block in text.strip().split("\n\n"):
        lines = block.strip().splitlines()
        if not lines:
            continue
        items = [line for line in lines if re.match(r"^\d+\.\s", line)]
        if items:
            head = [line for line in lines if line not in items and not line.startswith("   ")]
            joined: list[str] = []
            for line in lines:
                if re.match(r"^\d+\.\s", line):
                    joined.append(re.sub(r"^\d+\.\s", "", line))
                elif line.startswith("   ") and joined:
                    joined[-1] += " " + line.strip()
            if head:
                out.append(f"<p>{_inline(' '.join(head))}</p>")
            out.append("<ol>" + "".join(f"<li>{_inline(i)}</li>" for i in joined) + "</ol>")
        else:
            out.append(f"<p>{_inline(' '.join(line.strip() for line in lines))}</p>")
    return "\n".join(out)


def _nav(sio: Doc, raw: Doc) -> str:
    links = [f'<a href="#{_e(n)}">{_e(n)}</a>' for n in sio if not n.endswith("_ack")]
    raw_links = [f'<a href="#raw-{_e(n)}">{_e(n)}</a>' for n in raw]
    return (
        "<nav><p><b>Events:</b> "
        + " · ".join(links)
        + "</p><p><b>Raw frames:</b> "
        + " · ".join(raw_links)
        + '</p><p><a href="#connect">Connecting</a> · <a href="#errors">Error codes</a> · '
        '<a href="#types">Types</a></p></nav>'
    )


def _servers(servers: Doc) -> str:
    rows = "".join(
        f"<tr><td>{_e(s.get('title', name))}</td><td><code>{_e(s['protocol'])}://"
        f"{_e(s['host'])}{_e(s.get('pathname', ''))}</code></td>"
        f"<td>{_inline(s.get('description', ''))}</td></tr>"
        for name, s in servers.items()
    )
    return f"<table><tr><th>server</th><th>URL</th><th></th></tr>{rows}</table>"


def _security(name: str, scheme: Doc) -> str:
    kind = scheme["type"] + (f" ({scheme['scheme']})" if "scheme" in scheme else "")
    return f"<h3>{_e(name)} <small>{_e(kind)}</small></h3>{_prose(scheme.get('description', ''))}"


def _event(
    msg: Doc,
    schemas: Doc,
    *,
    ack: Doc | None = None,
    op: Doc | None = None,
    anchor: str | None = None,
    direction: str | None = None,
) -> str:
    name = msg["name"]
    out = [f"<section id='{_e(anchor or name)}'><h3><code>{_e(name)}</code>"]
    if direction:
        out.append(f" <small>{_e(direction)}</small>")
    out.append(f"</h3><p>{_inline(msg.get('summary', ''))}</p>")
    if msg.get("description"):
        out.append(_prose(msg["description"]))
    out.append("<h4>Payload</h4>" + _schema_block(msg["payload"], schemas))
    for example in msg.get("examples", []):
        out.append("<h4>Example</h4><pre>" + _e(_json(example["payload"])) + "</pre>")
    if ack is not None:
        out.append("<h4>Acknowledgement</h4>" + _prose(ack.get("description", "")))
        for shape in ack["payload"].get("oneOf", []):
            out.append(_schema_block(shape, schemas))
    codes = (op or {}).get("x-error-codes")
    if codes:
        links = ", ".join(f'<a href="#code-{_e(c)}"><code>{_e(c)}</code></a>' for c in codes)
        out.append(f"<p><b>Error codes:</b> {links}</p>")
    out.append("</section>")
    return "".join(out)


def _schema_block(schema: Doc, schemas: Doc) -> str:
    ref = schema.get("$ref", "")
    if ref.startswith(_SCHEMAS):
        name = ref[len(_SCHEMAS) :]
        return f"<p>{_type_link(name)}</p>" + _fields(schemas.get(name, {}))
    return _fields(schema)


def _fields(schema: Doc) -> str:
    props: Doc = schema.get("properties", {})
    if not props:
        return ""
    required = set(schema.get("required", []))
    rows = []
    for field, sub in props.items():
        rows.append(
            f"<tr><td><code>{_e(field)}</code></td><td>{_type_of(sub)}</td>"
            f"<td>{'yes' if field in required else ''}</td><td>{_constraints(sub)}</td></tr>"
        )
    return (
        "<table><tr><th>field</th><th>type</th><th>required</th><th>notes</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _type_link(name: str) -> str:
    return f'<a href="#type-{_e(name)}">{_e(name)}</a>'


def _type_of(schema: Doc) -> str:
    if "$ref" in schema:
        return _type_link(schema["$ref"].rsplit("/", 1)[-1])
    if "const" in schema:
        return f"<code>{_e(_json(schema['const']))}</code>"
    if "enum" in schema:
        return " | ".join(f"<code>{_e(_json(v))}</code>" for v in schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(_type_of(s) for s in schema[key])
    kind = schema.get("type", "any")
    if kind == "array":
        return "list of " + _type_of(schema.get("items", {}))
    if kind == "object" and "additionalProperties" in schema:
        return "object"
    return _e(kind)


def _constraints(schema: Doc) -> str:
    notes = []
    for sub in [schema, *schema.get("anyOf", [])]:
        for key in ("pattern", "minLength", "maxLength", "minimum", "maximum", "minItems"):
            if key in sub:
                notes.append(f"{key} <code>{_e(sub[key])}</code>")
        for key in ("exclusiveMinimum", "maxItems"):
            if key in sub:
                notes.append(f"{key} <code>{_e(sub[key])}</code>")
    if "default" in schema and schema["default"] is not None:
        notes.append(f"default <code>{_e(_json(schema['default']))}</code>")
    if schema.get("description"):
        notes.append(_inline(schema["description"]))
    return "; ".join(notes)


def _error_codes(schema: Doc) -> str:
    rows = "".join(
        f"<tr id='code-{_e(c['const'])}'><td><code>{_e(c['const'])}</code></td>"
        f"<td>{'yes' if c.get('x-retryable') else 'no'}</td><td>{_inline(c['description'])}</td>"
        "</tr>"
        for c in schema.get("oneOf", [])
    )
    return (
        "<h2 id='errors'>Error codes</h2>"
        f"<p>{_inline(schema.get('description', ''))}</p>"
        "<table><tr><th>code</th><th>retryable</th><th>meaning</th></tr>"
        f"{rows}</table>"
    )


def _type(name: str, schema: Doc) -> str:
    text = _inline(schema.get("description", ""))
    return (
        f"<section id='type-{_e(name)}'><h3>{_e(name)}</h3><p>{text}</p>{_fields(schema)}</section>"
    )


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


_CSS = """
body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1d1d1f;background:#fff}
main{max-width:980px;margin:0 auto;padding:1rem 1.5rem 4rem}
h1 small,h3 small{color:#666;font-weight:normal;font-size:.7em}
h2{border-bottom:1px solid #ddd;margin-top:2.5rem}
section{border-left:3px solid #e0e0e0;padding-left:1rem;margin:1.5rem 0}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px;font-size:.92em}
pre{background:#f6f8fa;padding:.75rem;overflow:auto;border-radius:4px}
table{border-collapse:collapse;width:100%;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#fafafa}
nav{background:#fafafa;padding:.25rem 1rem;border-radius:4px}
@media (prefers-color-scheme: dark){body{background:#111;color:#ddd}
code,pre,th,nav{background:#222}th,td{border-color:#333}}
"""
