"""The HTTP contract of a real ``mango serve`` on loopback: decisions, validation, auth, limits, metrics."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from client.protocol import DEFAULT_GRID, MAX_HISTORY, OBS_SPEC_VERSION, CompressionSetting, Decision

from .conftest import LiveServer
from .support import decide_body, record


def _metric(text: str, name: str, **labels: str) -> float:
    """Value of one Prometheus sample (0 if absent); labels must all match."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _problems(r: httpx.Response) -> str:
    """A 422's failing fields as ``"field: msg; ..."``, after checking the one documented 422 shape."""
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    for e in detail:
        assert set(e) == {"loc", "msg", "type"}, e
        assert all(isinstance(p, str | int) for p in e["loc"]), e
    return "; ".join(".".join(str(p) for p in e["loc"][1:]) + ": " + e["msg"] for e in detail)


@pytest.mark.parametrize("policy", ["tiny", "default", "static"])
def test_decide_returns_a_setting_on_the_grid(live_server: LiveServer, policy: str) -> None:
    with live_server.client() as c:
        r = c.post("/v1/decide", json=decide_body(policy))
        # the server is the session's: a reload test run before this one gave the artifact a new version
        versions = {p["name"]: p["version"] for p in c.get("/v1/policies").json()["policies"]}
    assert r.status_code == 200, r.text
    d = Decision.model_validate_json(r.text)
    DEFAULT_GRID.check(d.setting)
    assert d.policy == ("static" if policy == "default" else policy)  # no shipped default in the fixture
    assert d.policy_version == (versions["tiny"] if policy == "tiny" else "heuristic")
    assert d.shielded is False and d.reason == ""


def test_every_heuristic_is_served(live_server: LiveServer) -> None:
    with live_server.client() as c:
        listed = c.get("/v1/policies").json()
        heuristics = [p["name"] for p in listed["policies"] if p["kind"] == "heuristic"]
        assert "static" in heuristics
        for name in heuristics:
            r = c.post("/v1/decide", json=decide_body(name))
            assert r.status_code == 200, (name, r.text)
            DEFAULT_GRID.check(CompressionSetting(**r.json()["setting"]))


def test_short_history_is_padded_not_rejected(live_server: LiveServer) -> None:
    with live_server.client() as c:
        r = c.post("/v1/decide", json=decide_body("tiny", n=1))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("field", "literal"),
    [
        ("loss", "NaN"),
        ("grad_norm", "Infinity"),
        ("lr", "-Infinity"),
        ("energy_j", "1e999"),  # overflows to inf in the JSON parser
    ],
)
def test_non_finite_numbers_in_raw_json_are_rejected_naming_the_field(
    live_server: LiveServer, field: str, literal: str
) -> None:
    body = decide_body("tiny")
    body["history"][2][field] = 12345.678
    text = json.dumps(body).replace("12345.678", literal)  # raw JSON text: json.dumps cannot write NaN
    with live_server.client() as c:
        r = c.post("/v1/decide", content=text, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert f"history.2.{field}" in _problems(r)
    assert "finite" in _problems(r)


def test_negative_weight_is_rejected_naming_the_field(live_server: LiveServer) -> None:
    body = decide_body(objective={"w_loss": 1.0, "w_energy": -0.5})
    with live_server.client() as c:
        r = c.post("/v1/decide", json=body)
    assert r.status_code == 422
    assert "objective.w_energy" in _problems(r)
    assert r.json()["detail"][0]["loc"] == ["body", "objective", "w_energy"]


def test_all_zero_weights_are_rejected(live_server: LiveServer) -> None:
    body = decide_body(objective={"w_loss": 0.0})
    with live_server.client() as c:
        r = c.post("/v1/decide", json=body)
    assert r.status_code == 422
    assert "objective" in _problems(r) and "all zero" in _problems(r)


@pytest.mark.parametrize("n", [0, MAX_HISTORY + 1])
def test_wrong_history_length_is_rejected_naming_the_field(live_server: LiveServer, n: int) -> None:
    body = decide_body("tiny")
    body["history"] = [record(step=10 * (i + 1)) for i in range(n)]
    with live_server.client() as c:
        r = c.post("/v1/decide", json=body)
    assert r.status_code == 422, r.text
    assert _problems(r).startswith("history:")
    assert str(MAX_HISTORY) in _problems(r) or n == 0


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("history", 0, "setting", "bits"), 5, "history.0.setting.bits"),
        (("job_id",), "bad id with spaces", "job_id"),
        (("unexpected",), 1, "unexpected"),
    ],
)
def test_other_invalid_fields_are_named(
    live_server: LiveServer, path: tuple[str | int, ...], value: object, field: str
) -> None:
    body = decide_body()
    node = body
    for p in path[:-1]:
        node = node[p]  # type: ignore[index]
    node[path[-1]] = value  # type: ignore[index]
    with live_server.client() as c:
        r = c.post("/v1/decide", json=body)
    assert r.status_code == 422
    assert field in _problems(r)


def test_malformed_json_is_422(live_server: LiveServer) -> None:
    with live_server.client() as c:
        r = c.post("/v1/decide", content=b'{"job_id": "x", ', headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert "JSON" in _problems(r)


def test_unknown_policy_is_404_naming_it(live_server: LiveServer) -> None:
    with live_server.client() as c:
        r = c.post("/v1/decide", json=decide_body("no-such-policy"))
    assert r.status_code == 404
    assert "'no-such-policy'" in r.json()["detail"]
    assert "static" in r.json()["detail"]  # and says what exists


def test_oversized_body_is_413_before_parsing(live_server: LiveServer) -> None:
    big = decide_body(job_id="x" * 100_000)  # also invalid: 413 must win, the body is never parsed
    with live_server.client() as c:
        r = c.post("/v1/decide", json=big)
        assert r.status_code == 413
        assert "max_body_bytes" in r.json()["detail"]

        def chunks():  # no Content-Length: chunked transfer encoding
            for _ in range(100):
                yield b"x" * 1024

        r = c.post("/v1/decide", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        # a small chunked body still works
        body = json.dumps(decide_body()).encode()
        r = c.post(
            "/v1/decide", content=iter([body[:100], body[100:]]), headers={"content-type": "application/json"}
        )
        assert r.status_code == 200, r.text


def test_missing_or_wrong_key_is_401(live_server: LiveServer) -> None:
    for key in (None, "wrong-key", live_server.api_key + "x", ""):
        with live_server.client(key) as c:
            for method, path in (
                ("POST", "/v1/decide"),
                ("GET", "/v1/policies"),
                ("POST", "/v1/policies/reload"),
            ):
                r = c.request(method, path, json=decide_body() if path == "/v1/decide" else None)
                assert r.status_code == 401, (key, path, r.text)
                assert "X-API-Key" in r.json()["detail"]


def test_user_key_on_admin_endpoint_is_403_and_admin_key_works_everywhere(live_server: LiveServer) -> None:
    with live_server.client("user") as c:
        r = c.post("/v1/policies/reload")
        assert r.status_code == 403
        assert "admin" in r.json()["detail"]
    with live_server.client("admin") as c:
        assert c.post("/v1/policies/reload").status_code == 200
        assert c.post("/v1/decide", json=decide_body()).status_code == 200


def test_probes_and_policy_list(live_server: LiveServer) -> None:
    with live_server.client(None) as c:
        assert c.get("/healthz").json()["status"] == "ok"
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["generation"] >= 1
    with live_server.client() as c:
        listed = c.get("/v1/policies").json()
    names = {p["name"]: p for p in listed["policies"]}
    assert listed["default"] == "static" and listed["fallback"] == "static"
    assert names["tiny"]["kind"] == "learned"
    assert names["tiny"]["details"]["obs_spec_version"] == OBS_SPEC_VERSION
    assert names["static"]["kind"] == "heuristic"


def test_memory_budget_override_is_visible_in_decision_and_metrics(live_server: LiveServer) -> None:
    with live_server.client() as c:
        before = _metric(c.get("/metrics").text, "mango_shield_overrides_total", rule="memory_budget")
        # static answers r0/b8/g0 (~6 MB here); the job's dense state is 16 MB and the budget 3 MB
        body = decide_body("static", objective={"w_loss": 1.0, "memory_budget_bytes": 3_000_000})
        r = c.post("/v1/decide", json=body)
        assert r.status_code == 200, r.text
        d = Decision.model_validate_json(r.text)
        assert d.shielded is True
        assert "memory budget" in d.reason and d.setting != CompressionSetting(rank=8, bits=8, gamma=0.0)
        text = c.get("/metrics").text
    assert _metric(text, "mango_shield_overrides_total", rule="memory_budget") == before + 1
    assert _metric(text, "mango_decisions_total", policy="static", setting=d.setting.label()) >= 1


def test_divergence_backs_off(live_server: LiveServer) -> None:
    body = decide_body("static")
    for i, rec in enumerate(body["history"]):
        rec["loss"] = 2.0 + 0.3 * i  # rising fast
        rec["setting"] = {"rank": 0, "bits": 8, "gamma": 0.0}  # static keeps r0/b8: no back-off of its own
    with live_server.client() as c:
        r = c.post("/v1/decide", json=body)
        d = Decision.model_validate_json(r.text)
        assert d.shielded and "loss rose" in d.reason
        assert d.setting == CompressionSetting.off()  # no budget: back off all the way
        text = c.get("/metrics").text
    assert _metric(text, "mango_shield_overrides_total", rule="divergence") >= 1


def test_metrics_count_requests_by_route_template(live_server: LiveServer) -> None:
    with live_server.client() as c:
        c.get("/no/such/path")
        c.post("/v1/decide", json=decide_body())
        text = c.get("/metrics").text
    assert _metric(text, "mango_http_requests_total", route="/v1/decide", status="200") >= 1
    assert _metric(text, "mango_http_requests_total", route="unmatched", status="404") >= 1
    assert re.search(r'mango_http_request_duration_seconds_bucket\{le="0.001",route="/v1/decide"\}', text)


def test_secrets_never_logged(live_server: LiveServer) -> None:
    log = live_server.log()
    assert "policy service settings" in log  # the configuration is logged once...
    assert live_server.api_key not in log and live_server.admin_key not in log  # ...without the keys


def test_openapi_documents_the_hand_parsed_decide_body(live_server: LiveServer) -> None:
    with live_server.client(None) as c:
        doc = c.get("/openapi.json").json()
    op = doc["paths"]["/v1/decide"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/DecideRequest"
    }
    assert op["security"] == [{"APIKeyHeader": []}]
    schemas = doc["components"]["schemas"]
    assert {"DecideRequest", "TelemetryRecord", "Objective", "Reference", "Decision"} <= set(schemas)
    assert schemas["DecideRequest"]["properties"]["history"]["maxItems"] == MAX_HISTORY
    assert doc["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
