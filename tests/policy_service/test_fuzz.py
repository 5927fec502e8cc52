"""Schemathesis fuzzing of the live server's OpenAPI: valid and invalid inputs, never a 5xx."""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from .conftest import LiveServer

#: Examples per operation and mode; the whole run stays within a few seconds.
MAX_EXAMPLES = 25


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzz_finds_no_server_error(live_server: LiveServer, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{live_server.base_url}/openapi.json")
    failures: list[str] = []
    calls: Counter[str] = Counter()
    operations = [op.ok() for op in schema.get_all_operations()]  # type: ignore[union-attr]
    assert {op.path for op in operations} >= {"/v1/decide", "/v1/policies", "/v1/policies/reload", "/metrics"}
    for op in operations:
        key = live_server.admin_key if op.path.endswith("/reload") else live_server.api_key
        strategy = op.as_strategy(generation_mode=mode, headers={"X-API-Key": key})

        @given(case=strategy)
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            calls[case.operation.path] += 1
            response = case.call(base_url=live_server.base_url, timeout=30)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}")

        try:
            run()
        except Unsatisfiable:  # nothing to negate (an operation without parameters or body)
            assert mode is GenerationMode.NEGATIVE and op.path != "/v1/decide"
    assert calls["/v1/decide"] >= MAX_EXAMPLES // 2, calls
    assert not failures, failures[:5]
