"""Issue 14, the service: every bad input gets a 4xx or a named error, and nothing it sends breaks state.

Live-server tests talk to a real ``mango serve`` (uvicorn) over loopback; manifest tests build the real
registry and app in process (start-up is the app's lifespan, run by ``TestClient``).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import jsonschema
import pytest
from fastapi.testclient import TestClient

from client.protocol import DecideRequest
from policy_service.config import Settings
from policy_service.jsonlimits import MAX_JSON_DEPTH, JSONLimitError, json_depth, loads_bounded
from policy_service.main import create_app
from policy_service.registry import PolicyRegistry

from .conftest import LiveServer
from .support import decide_body, export_tiny

DEEP = 1000  # the nesting that broke json.loads (RecursionError) in the issue


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _detail(r: object) -> list[dict[str, object]]:
    """The list-shaped 422 ``detail`` (asserting the shape)."""
    body = r.json()  # type: ignore[attr-defined]
    assert isinstance(body["detail"], list), body
    assert all({"loc", "msg", "type"} == set(e) for e in body["detail"]), body
    return body["detail"]  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------- bounded parser


def test_bounded_parser_measures_depth_outside_strings() -> None:
    assert json_depth(b'{"a": [1, {"b": "[[[[{{{"}]}') == 3
    assert json_depth(b'"\\"[[["') == 0
    assert loads_bounded(b'{"a": [1, 2]}', max_bytes=100) == {"a": [1, 2]}
    with pytest.raises(JSONLimitError, match=f"nests {DEEP + 1} levels.*limit is {MAX_JSON_DEPTH}"):
        loads_bounded(b'{"a":' + b"[" * DEEP + b"]" * DEEP + b"}", max_bytes=1 << 20)
    with pytest.raises(JSONLimitError, match="not UTF-8"):
        loads_bounded('{"a": 1}'.encode("utf-16"), max_bytes=100)
    with pytest.raises(JSONLimitError, match="limit is 10"):
        loads_bounded(b"[" + b"1," * 20 + b"1]", max_bytes=10)


# ------------------------------------------------------------------------------------------- decide body


@pytest.mark.parametrize("where", ["job_id", "history", "objective", "top"])
def test_deeply_nested_body_is_422_not_500(live_server: LiveServer, where: str) -> None:
    nest = "[" * DEEP + "]" * DEEP
    if where == "top":
        text = nest
    else:
        body = decide_body()
        body[where] = "@@"
        text = json.dumps(body).replace('"@@"', nest)
    for literal in ("", "NaN"):  # with a NaN literal the body also takes the Python-parser fallback
        raw = text if not literal else text.replace("1.5", literal, 1)
        with live_server.client() as c:
            r = c.post("/v1/decide", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        assert _detail(r)[0]["loc"][0] == "body"


def test_fallback_parse_of_a_deep_body_names_the_depth_limit(live_server: LiveServer) -> None:
    text = '{"job_id": "x", "history": ' + "[" * 300 + "NaN" + "]" * 300 + "}"
    with live_server.client() as c:
        r = c.post("/v1/decide", content=text, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert "nests 301 levels" in str(_detail(r)[0]["msg"])


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        ("text/plain", None),
        ("application/x-www-form-urlencoded", None),
        ("application/xml", b"<decide/>"),
        ("", None),
        ("application/json; charset=utf-16", "utf-16"),
        ("application/jsonx", None),
    ],
)
def test_decide_needs_json_content_type(live_server: LiveServer, content_type: str, content: object) -> None:
    body = json.dumps(decide_body())
    raw = content if isinstance(content, bytes) else body.encode(content or "utf-8")  # type: ignore[arg-type]
    headers = {"content-type": content_type} if content_type else {}
    with live_server.client() as c:
        r = c.post("/v1/decide", content=raw, headers=headers)
    assert r.status_code == 415, r.text
    assert "application/json" in r.json()["detail"] or "UTF-8" in r.json()["detail"]


@pytest.mark.parametrize("content_type", ["application/json", "Application/JSON; charset=UTF-8"])
def test_json_content_types_are_accepted_and_utf16_bodies_are_not(
    live_server: LiveServer, content_type: str
) -> None:
    body = json.dumps(decide_body())
    with live_server.client() as c:
        assert c.post("/v1/decide", content=body, headers={"content-type": content_type}).status_code == 200
        r = c.post("/v1/decide", content=body.encode("utf-16"), headers={"content-type": content_type})
    assert r.status_code == 422
    assert "UTF-8" in str(_detail(r)[0]["msg"])


@pytest.mark.parametrize(("field", "value"), [("progress", False), ("loss", "3.0"), ("step", True)])
def test_values_of_the_wrong_json_type_are_refused_not_coerced(
    live_server: LiveServer, field: str, value: object
) -> None:
    body = decide_body()
    body["history"][0][field] = value  # found by the fuzz run: lax parsing turned false into 0.0
    with live_server.client() as c:
        r = c.post("/v1/decide", json=body)
    assert r.status_code == 422, r.text
    assert _detail(r)[0]["loc"] == ["body", "history", 0, field]


def test_bad_query_parameter_gets_the_list_shaped_422(live_server: LiveServer) -> None:
    with live_server.client("admin") as c:
        r = c.post("/v1/policies/reload", params={"force": "null"})
        doc = c.get("/openapi.json").json()
    assert r.status_code == 422
    assert _detail(r)[0]["loc"] == ["query", "force"]
    # ...and it is the shape the document declares for every 422 it lists
    checked = 0
    for ops in doc["paths"].values():
        for op in ops.values():
            if "422" in op.get("responses", {}):
                schema = op["responses"]["422"]["content"]["application/json"]["schema"]
                jsonschema.validate(r.json(), {**schema, "components": doc["components"]})
                checked += 1
    assert checked >= 2  # decide and reload


def test_openapi_states_the_grid_and_the_positive_weight_rule(live_server: LiveServer) -> None:
    with live_server.client(None) as c:
        doc = c.get("/openapi.json").json()
    schema = {**doc["components"]["schemas"]["DecideRequest"], "components": doc["components"]}
    validator = jsonschema.Draft202012Validator(schema)
    good = decide_body()
    assert validator.is_valid(good)
    DecideRequest.model_validate(good)
    for bad in (
        decide_body(objective={"w_loss": 0.0}),
        decide_body(objective={"w_loss": 0.0, "w_memory": 0.0}),
    ):
        assert not validator.is_valid(bad)
    assert validator.is_valid(decide_body(objective={"w_loss": 0.0, "w_time": 2.0}))
    assert validator.is_valid(decide_body(objective={"w_memory": 0.0}))  # w_loss defaults to 1
    for field, value in (("rank", 5), ("bits", 6)):
        body = decide_body()
        body["history"][0]["setting"][field] = value
        assert not validator.is_valid(body), field


def _raw_exchange(live_server: LiveServer, payload: bytes, *, read: bool = False) -> bytes:
    host, port = live_server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(payload)
        if not read:
            return b""
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_client_hanging_up_mid_body_is_not_a_server_error(live_server: LiveServer) -> None:
    with live_server.client() as c:
        before = c.get("/metrics").text
    body = json.dumps(decide_body()).encode()
    for framing in ("length", "chunked"):
        if framing == "length":
            head = f"Content-Length: {len(body)}\r\n"
            part = body[: len(body) // 2]
        else:
            head = "Transfer-Encoding: chunked\r\n"
            part = f"{100:x}\r\n".encode() + body[:100] + b"\r\n"
        _raw_exchange(
            live_server,
            (
                f"POST /v1/decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"X-API-Key: {live_server.api_key}\r\n{head}\r\n"
            ).encode()
            + part,
        )  # closes the socket with half a body sent
    deadline = time.monotonic() + 10
    while True:
        with live_server.client() as c:
            after = c.get("/metrics").text
        # a chunked body is read before routing (the body-size limit), so that one is "unmatched"
        closed = _metric(after, "mango_http_requests_total", status="499") - _metric(
            before, "mango_http_requests_total", status="499"
        )
        if closed >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert closed == 2, after
    assert _metric(after, "mango_http_requests_total", status="500") == _metric(
        before, "mango_http_requests_total", status="500"
    )
    assert "unhandled error" not in live_server.log()


# ---------------------------------------------------------------------------------------------- manifests


def _edit_manifest(path: Path, edit: object) -> None:
    data = json.loads(path.read_text())
    edit(data)  # type: ignore[operator]
    path.write_text(json.dumps(data))


def _bad_manifests(folder: Path) -> dict[str, str]:
    """Broken manifests next to one good artifact ("good"); returns file -> expected words of the error."""
    export_tiny(folder / "good", name="good")
    deep = export_tiny(folder / "deep", name="deep")
    _edit_manifest(deep, lambda d: d["metrics"].update(x=json.loads("[" * 900 + "]" * 900)))
    nul = export_tiny(folder / "nul", name="nul")
    _edit_manifest(nul, lambda d: d["weights"].update(file="nul\x00.safetensors"))
    named = export_tiny(folder / "named", name="named")
    _edit_manifest(named, lambda d: d.update(name="static"))
    utf16 = export_tiny(folder / "utf16", name="utf16")
    utf16.write_bytes(utf16.read_text().encode("utf-16"))
    return {
        str(deep): "nests",
        str(nul): "weights.file holds a NUL byte",
        str(named): "reserved",
        str(utf16): "not UTF-8",
    }


def test_bad_manifests_at_start_up_are_skipped_with_a_reason(tmp_path: Path) -> None:
    expected = _bad_manifests(tmp_path)
    settings = Settings(
        api_key="k" * 8 + "Aa1!Bb2@Cc3#Dd4$",
        admin_key="a" * 8 + "Zz9(Yy8)Xx7-Ww6_",
        policy_dir=tmp_path,
        default_policy_dir=None,
    )
    with TestClient(create_app(settings)) as client:  # runs the lifespan start-up: it must not raise
        assert client.get("/readyz").status_code == 200
        listed = client.get("/v1/policies", headers={"X-API-Key": settings.api_key.get_secret_value()})
        assert listed.status_code == 200
        errors = listed.json()["errors"]
        names = {p["name"] for p in listed.json()["policies"]}
    assert "good" in names and not {"deep", "nul", "utf16"} & names
    for src, words in expected.items():
        assert words in errors[src], (src, errors.get(src))


def test_a_broken_new_version_keeps_the_last_good_one(tmp_path: Path) -> None:
    reg = PolicyRegistry(policy_dir=tmp_path, default_policy_dir=None)
    manifest = export_tiny(tmp_path / "p", name="mine", version="v1")
    reg.reload()
    edits = {
        "reserved": lambda d: d.update(name="static", version="v2"),
        "alias": lambda d: d.update(name="default", version="v2"),
        "nul": lambda d: d["weights"].update(file="mine\x00.safetensors"),
        "deep": lambda d: d["training"]["config"].update(x=json.loads("[" * 200 + "]" * 200)),
    }
    for what, edit in edits.items():
        export_tiny(tmp_path / "p", name="mine", version="v1")
        reg.reload()
        _edit_manifest(manifest, edit)
        for force in (False, True):
            report = reg.reload(force=force)
            snap = reg.snapshot
            assert snap is not None
            assert report.learned == {"mine": "v1"}, (what, report)
            assert "still serving mine version v1" in report.errors[str(manifest)], (what, report.errors)
            assert snap.resolve("mine").version == "v1"
            assert snap.resolve("static").kind == "heuristic"  # the built-in is never shadowed


def test_unexpected_loader_failure_is_reported_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import policy_service.registry as registry

    export_tiny(tmp_path, name="boom")

    def explode(*_: object, **__: object) -> object:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(registry, "load_artifact", explode)  # a fault the loader does not translate
    reg = PolicyRegistry(policy_dir=tmp_path, default_policy_dir=None)
    report = reg.reload()
    (msg,) = report.errors.values()
    assert "RecursionError" in msg and report.learned == {}
