"""Generate ``docs/api.md`` from the policy service's OpenAPI document (and the settings table of
``docs/operations.md`` from ``policy_service/config.py``).

The app is built with :func:`policy_service.main.create_app` and throw-away development settings (no server
starts, no policy loads: the document does not depend on them), and its ``app.openapi()`` is rendered to
Markdown: the endpoints (method, path, authentication, parameters, request body, responses) and every schema
with its fields (type, required, default, constraints, description). The text comes from the code: route
docstrings, ``responses=`` descriptions and the pydantic ``Field`` descriptions in ``client/protocol.py`` and
``policy_service/schemas.py``.

::

    python docs/gen_api.py            # rewrite docs/api.md and the table in docs/operations.md
    python docs/gen_api.py --check    # exit 1 if either is out of date (tests/test_examples.py checks it)
"""

from __future__ import annotations

import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tyro

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "api.md"

#: A valid request body for the example (validated against ``DecideRequest`` every time the doc is built).
EXAMPLE_REQUEST: dict[str, Any] = {
    "job_id": "my-job-42",
    "policy": "default",
    "objective": {"w_loss": 5.0, "w_memory": 0.5, "w_energy": 0.25, "w_time": 0.25},
    "history": [
        {
            "step": 200,
            "loss": 2.61,
            "loss_std": 0.08,
            "grad_norm": 0.9,
            "compression_error": 0.04,
            "spectral_tail": 0.3,
            "state_bytes": 80000,
            "energy_j": 120.0,
            "energy_source": "modelled",
            "interval_s": 1.6,
            "lr": 0.003,
            "setting": {"rank": 8, "bits": 8, "gamma": 0.0},
            "progress": 0.33,
        }
    ],
    "reference": {
        "initial_loss": 5.5,
        "dense_state_bytes": 964608,
        "interval_energy_j": 110.0,
        "interval_s": 1.5,
    },
}


def openapi() -> dict[str, Any]:
    """The service's OpenAPI document (dev settings; nothing is started)."""
    logging.getLogger("policy_service").setLevel(logging.ERROR)  # the dev-mode warning is expected here
    from policy_service.config import Settings
    from policy_service.main import create_app

    settings = Settings(
        api_key="docs-only-user-key-0000",  # type: ignore[arg-type]
        admin_key="docs-only-admin-key-0000",  # type: ignore[arg-type]
        dev_mode=True,
        default_policy_dir=None,
    )
    return create_app(settings).openapi()


def _rst_to_md(text: str) -> str:
    """Docstring reST to Markdown: ``x`` and :role:`x` become `x`; doctest lines become a code block."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text).replace("``", "`")
    out: list[str] = []
    in_code = False
    for line in text.split("\n"):
        starts = line.startswith(">>> ")
        if starts and not in_code:
            out.append("```python")
            in_code = True
        elif in_code and not line.strip():
            out.append("```")
            in_code = False
        out.append(line)
    if in_code:
        out.append("```")
    return "\n".join(out)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(_rst_to_md(str(text)).split()).replace("|", "\\|")


def _anchor(name: str) -> str:
    return "schema-" + name.lower()


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def type_of(s: dict[str, Any]) -> str:
    """A short human type: ``integer``, ``array of TelemetryRecord``, ``number or null``, ``one of ...``."""
    if "$ref" in s:
        name = _ref_name(s["$ref"])
        return f"[{name}](#{_anchor(name)})"
    if "anyOf" in s:
        return " or ".join(type_of(x) for x in s["anyOf"])
    if "allOf" in s and len(s["allOf"]) == 1:
        return type_of(s["allOf"][0])
    if "enum" in s:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in s["enum"])
    if "const" in s:
        return f"`{json.dumps(s['const'])}`"
    t = s.get("type", "any")
    if t == "array":
        items = s.get("items", {})
        inner = type_of(items)
        return f"array of ({inner})" if "anyOf" in items else f"array of {inner}"
    if t == "object" and isinstance(s.get("additionalProperties"), dict):
        return f"object of {type_of(s['additionalProperties'])}"
    return str(t)


def constraints(s: dict[str, Any]) -> str:
    """Bounds, lengths and patterns of a field (also those inside ``anyOf`` members)."""
    out: list[str] = []
    for part in [s, *s.get("anyOf", [])]:
        if "minimum" in part:
            out.append(f">= {part['minimum']:g}")
        if "exclusiveMinimum" in part:
            out.append(f"> {part['exclusiveMinimum']:g}")
        if "maximum" in part:
            out.append(f"<= {part['maximum']:g}")
        if "exclusiveMaximum" in part:
            out.append(f"< {part['exclusiveMaximum']:g}")
        if "minLength" in part or "maxLength" in part:
            out.append(f"length {part.get('minLength', 0)}..{part.get('maxLength', '')}")
        if "minItems" in part or "maxItems" in part:
            out.append(f"{part.get('minItems', 0)}..{part.get('maxItems', '')} items")
        if "pattern" in part:
            out.append(f"pattern `{part['pattern']}`")
    return ", ".join(out)


def _refs(obj: Any) -> list[str]:
    """Schema names referenced anywhere in ``obj``, in document order."""
    found: list[str] = []
    if isinstance(obj, dict):
        if "$ref" in obj:
            found.append(_ref_name(obj["$ref"]))
        for v in obj.values():
            found += _refs(v)
    elif isinstance(obj, list):
        for v in obj:
            found += _refs(v)
    return found


def _schema_order(doc: dict[str, Any]) -> list[str]:
    """Schemas in the order a reader meets them: endpoints first, then what each schema nests."""
    schemas = doc.get("components", {}).get("schemas", {})
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order or name not in schemas:
            return
        order.append(name)
        for sub in _refs(schemas[name]):
            visit(sub)

    for name in _refs(doc.get("paths", {})):
        visit(name)
    return order + sorted(n for n in schemas if n not in order)


def render_schema(name: str, s: dict[str, Any]) -> list[str]:
    lines = [f'<a id="{_anchor(name)}"></a>', "", f"### {name}", ""]
    if s.get("description"):
        lines += [_rst_to_md(s["description"]).strip(), ""]
    props: dict[str, Any] = s.get("properties", {})
    if not props:
        lines += [f"Type: {type_of(s)}.", ""]
        return lines
    required = set(s.get("required", []))
    lines += [
        "| field | type | required | default | constraints | description |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for field, fs in props.items():
        default = f"`{json.dumps(fs['default'])}`" if "default" in fs else ""
        lines.append(
            f"| `{field}` | {_cell(type_of(fs))} | {'yes' if field in required else 'no'} | {_cell(default)} "
            f"| {_cell(constraints(fs))} | {_cell(fs.get('description', ''))} |"
        )
    extra = s.get("additionalProperties")
    lines += ["", "Unknown fields are rejected." if extra is False else "", ""]
    return [line for i, line in enumerate(lines) if line or (i and lines[i - 1])]


def render_operation(method: str, path: str, op: dict[str, Any], schemes: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", ""]
    if op.get("description"):
        lines += [_rst_to_md(op["description"]).strip(), ""]
    sec = [name for req in op.get("security", []) for name in req]
    if sec:
        hdrs = [f"`{schemes[n]['name']}` header" if n in schemes else n for n in sec]
        lines += [f"**Authentication:** {', '.join(hdrs)}.", ""]
    else:
        lines += ["**Authentication:** none.", ""]
    params = op.get("parameters", [])
    if params:
        lines += [
            "| parameter | in | type | required | default | description |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for p in params:
            ps = p.get("schema", {})
            default = f"`{json.dumps(ps['default'])}`" if "default" in ps else ""
            req = "yes" if p.get("required") else "no"
            lines.append(
                f"| `{p['name']}` | {p['in']} | {_cell(type_of(ps))} | {req} | {_cell(default)} "
                f"| {_cell(p.get('description', ''))} |"
            )
        lines.append("")
    body = op.get("requestBody")
    if body:
        for media, content in body.get("content", {}).items():
            lines += [f"**Request body** (`{media}`): {type_of(content.get('schema', {}))}.", ""]
    lines += ["| status | meaning | body |", "| --- | --- | --- |"]
    for status, resp in op.get("responses", {}).items():
        bodies = [
            f"{type_of(c['schema'])}" if c.get("schema") else f"`{media.split(';')[0]}`"
            for media, c in resp.get("content", {}).items()
        ]
        lines.append(f"| {status} | {_cell(resp.get('description', ''))} | {_cell(', '.join(bodies))} |")
    lines.append("")
    return lines


def render(doc: dict[str, Any]) -> str:
    """The whole Markdown document for an OpenAPI document."""
    from client.protocol import DecideRequest

    DecideRequest.model_validate(EXAMPLE_REQUEST)  # the example must stay valid
    info = doc.get("info", {})
    schemes = doc.get("components", {}).get("securitySchemes", {})
    paths: dict[str, dict[str, Any]] = doc.get("paths", {})
    lines = [
        f"# {info.get('title', 'API')} - HTTP API",
        "",
        "<!-- Generated by `python docs/gen_api.py` from the service's OpenAPI document: "
        "do not edit by hand. -->",
        "",
        f"API version {info.get('version', '?')} (OpenAPI {doc.get('openapi', '?')}). "
        f"{_rst_to_md(info.get('summary', ''))}",
        "",
        "The wire contract is defined once, in `client/protocol.py`; these tables are rendered from it. "
        "A running service also serves the document at `/openapi.json` and an explorer at `/docs`. "
        "Clients in Python use `client.policy_client.PolicyClient` (through "
        "`client.hook.AdaptiveCompression`) rather than calling the API by hand.",
        "",
        "## Authentication",
        "",
    ]
    for name, s in schemes.items():
        desc = _rst_to_md(s.get("description", ""))
        lines.append(f"- `{name}`: {s.get('type')} in the `{s.get('name')}` {s.get('in')}. {desc}.")
    lines += [
        "",
        "A missing or unknown key gets 401; the user key on an admin endpoint gets 403. Errors are JSON "
        "objects with a `detail` field (for 422, a list naming each failing field).",
        "",
        "## Endpoints",
        "",
        "| method | path | authentication | summary |",
        "| --- | --- | --- | --- |",
    ]
    for path, item in paths.items():
        for method, op in item.items():
            auth = "X-API-Key" if op.get("security") else "none"
            first = _rst_to_md(op.get("description", op.get("summary", ""))).strip().split("\n\n")[0]
            lines.append(f"| {method.upper()} | `{path}` | {auth} | {_cell(first)} |")
    lines.append("")
    for path, item in paths.items():
        for method, op in item.items():
            lines += render_operation(method, path, op, schemes)
    lines += [
        "### Example",
        "",
        "```bash",
        "curl -s -X POST http://127.0.0.1:8000/v1/decide \\",
        '  -H "X-API-Key: $MANGO_API_KEY" -H "Content-Type: application/json" \\',
        f"  -d '{json.dumps(EXAMPLE_REQUEST, separators=(',', ':'))}'",
        "```",
        "",
        "The answer is a [Decision](#schema-decision): the setting to apply at the job's next interval "
        "boundary, the policy and version that chose it, and `shielded`/`reason` when the safety shield "
        "overrode it.",
        "",
        "## Schemas",
        "",
    ]
    schemas = doc.get("components", {}).get("schemas", {})
    for name in _schema_order(doc):
        lines += render_schema(name, schemas[name])
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"
    return text


OPERATIONS = ROOT / "docs" / "operations.md"
SETTINGS_BEGIN = "<!-- settings:begin (generated by docs/gen_api.py from policy_service/config.py) -->"
SETTINGS_END = "<!-- settings:end -->"


def render_settings() -> str:
    """The ``MANGO_*`` settings table: every field of ``policy_service.config.Settings``."""
    from pydantic_core import PydanticUndefined

    from policy_service.config import Settings

    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, f in Settings.model_fields.items():
        d = f.default
        if d is PydanticUndefined:
            default = "**required**"
        elif isinstance(d, Path):
            default = f"`{d.relative_to(ROOT).as_posix() if d.is_relative_to(ROOT) else d}`"
        elif d is None:
            default = "unset"
        else:
            default = f"`{json.dumps(d)}`" if not isinstance(d, str) else f"`{d}`"
        meaning = f.description or ""
        if f.annotation is not None and "Literal" in str(f.annotation):
            meaning = (
                (meaning + "; " if meaning else "")
                + "one of "
                + ", ".join(f"`{a}`" for a in getattr(f.annotation, "__args__", ()))
            )
        lines.append(f"| `MANGO_{name.upper()}` | {default} | {_cell(meaning)} |")
    return "\n".join(lines)


def splice_settings(text: str) -> str:
    """``text`` with the part between the settings markers replaced by :func:`render_settings`."""
    if SETTINGS_BEGIN not in text or SETTINGS_END not in text:
        raise ValueError(f"{OPERATIONS} lacks the markers {SETTINGS_BEGIN!r} ... {SETTINGS_END!r}")
    head, rest = text.split(SETTINGS_BEGIN, 1)
    _, tail = rest.split(SETTINGS_END, 1)
    return f"{head}{SETTINGS_BEGIN}\n{render_settings()}\n{SETTINGS_END}{tail}"


@dataclass
class GenApiArgs:
    """Render docs/api.md from the service's OpenAPI document (and the settings table of operations.md)."""

    check: bool = False
    """exit 1 if docs/api.md differs from the generated text"""
    out: Path = OUT
    """where the API reference goes"""


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(GenApiArgs, args=argv, prog="python docs/gen_api.py", description=GenApiArgs.__doc__)
    outputs = {args.out: render(openapi())}
    if OPERATIONS.exists():
        outputs[OPERATIONS] = splice_settings(OPERATIONS.read_text())
    stale = [path for path, text in outputs.items() if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path} is out of date: run python docs/gen_api.py", file=sys.stderr)
        if not stale:
            print("docs are up to date")
        return 1 if stale else 0
    for path in stale:
        path.write_text(outputs[path])
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
