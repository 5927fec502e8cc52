"""PolicyRegistry and DecisionService in process: names, the default alias, fallbacks, snapshots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from agents.tinyformer import TinyFormer
from client.controllers import HEURISTICS
from client.policy import Controller, LearnedPolicy, ProfileFeatures
from client.protocol import (
    CompressionSetting,
    DecideRequest,
    Objective,
    ObservationSpec,
    Reference,
    TelemetryRecord,
)
from policy_service.errors import NotReadyError, UnknownPolicyError
from policy_service.metrics import ServiceMetrics
from policy_service.registry import PolicyRegistry
from policy_service.service import DecisionService
from policy_service.shield import Shield

from .support import decide_body, export_tiny


def _req(policy: str = "default") -> DecideRequest:
    return DecideRequest.model_validate(decide_body(policy))


def _ask(policy: Controller, req: DecideRequest) -> CompressionSetting:
    return policy.decide(req.history, req.objective, reference=req.reference, profile=req.profile)


def _torch_setting(policy: LearnedPolicy, req: DecideRequest) -> CompressionSetting:
    """What the training-side torch module picks for the request (an independent implementation)."""
    model = TinyFormer.from_weights(policy.artifact.config, policy.artifact.weights)
    obs = ObservationSpec(window=8).encode(req.history, req.objective, req.reference)
    return policy.grid.setting(model.act(torch.from_numpy(obs)).tolist())


def test_default_falls_back_to_heuristic_without_a_shipped_policy(tmp_path: Path) -> None:
    reg = PolicyRegistry(policy_dir=tmp_path / "missing", default_policy_dir=None)
    report = reg.reload()
    snap = reg.snapshot
    assert snap is not None and report.generation == 1 and report.default_target == "static"
    assert snap.resolve("default").name == "static"
    assert {"default", "static"} <= set(snap.names())
    with pytest.raises(UnknownPolicyError, match="'nope'"):
        snap.resolve("nope")


def test_shipped_policy_becomes_default_and_operator_copy_overrides_it(tmp_path: Path) -> None:
    shipped, ops = tmp_path / "shipped", tmp_path / "ops"
    export_tiny(shipped, name="mango-default", version="shipped-1")
    reg = PolicyRegistry(policy_dir=ops, default_policy_dir=shipped)
    reg.reload()
    snap = reg.snapshot
    assert snap is not None
    p = snap.resolve("default")
    assert (p.name, p.version) == ("mango-default", "shipped-1")
    export_tiny(ops, name="mango-default", version="ops-2", seed=5)
    reg.reload()
    snap2 = reg.snapshot
    assert snap2 is not None and snap2.resolve("default").version == "ops-2"
    assert snap.resolve("default").version == "shipped-1"  # the old snapshot is untouched


def test_new_heuristics_appear_without_reload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Quarter(Controller):
        name = "quarter"

        def decide(
            self,
            history: Sequence[TelemetryRecord],
            objective: Objective,
            *,
            reference: Reference | None = None,
            profile: ProfileFeatures | None = None,
        ) -> CompressionSetting:
            return CompressionSetting(rank=4, bits=4, gamma=0.25)

    reg = PolicyRegistry(default_policy_dir=None)
    reg.reload()
    monkeypatch.setitem(HEURISTICS, "quarter", Quarter)
    snap = reg.snapshot
    assert snap is not None and _ask(snap.resolve("quarter"), _req()) == CompressionSetting(
        rank=4, bits=4, gamma=0.25
    )


def test_reserved_and_duplicate_names_are_reported(tmp_path: Path) -> None:
    export_tiny(tmp_path, name="static")
    export_tiny(tmp_path / "a", name="dup", version="a")
    export_tiny(tmp_path / "b", name="dup", version="b")
    reg = PolicyRegistry(policy_dir=tmp_path, default_policy_dir=None)
    report = reg.reload()
    assert any("reserved" in e for e in report.errors.values())
    assert any("duplicate policy name 'dup'" in e for e in report.errors.values())
    assert report.learned == {"dup": "a"}


def test_unknown_default_policy_setting_falls_back_with_an_error() -> None:
    reg = PolicyRegistry(default_policy_dir=None, default_policy="ghost")
    report = reg.reload()
    assert report.default_target == "static" and "ghost" in report.errors["default_policy"]
    with pytest.raises(ValueError, match="fallback policy 'ghost'"):
        PolicyRegistry(fallback="ghost")


def test_learned_policy_decides_like_the_model(tmp_path: Path) -> None:
    export_tiny(tmp_path, name="tiny")
    reg = PolicyRegistry(policy_dir=tmp_path, default_policy_dir=None)
    reg.reload()
    snap = reg.snapshot
    assert snap is not None
    policy = snap.learned["tiny"]
    assert isinstance(policy, LearnedPolicy) and policy.info()["runtime"] == "numpy"
    req = _req("tiny")
    assert _ask(policy, req) == _torch_setting(policy, req)


def test_a_failing_policy_is_answered_by_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(Controller):
        name = "broken"

        def decide(
            self,
            history: Sequence[TelemetryRecord],
            objective: Objective,
            *,
            reference: Reference | None = None,
            profile: ProfileFeatures | None = None,
        ) -> CompressionSetting:
            raise RuntimeError("bug")

    monkeypatch.setitem(HEURISTICS, "broken", Broken)
    reg = PolicyRegistry(default_policy_dir=None)
    reg.reload()
    metrics = ServiceMetrics()
    d = DecisionService(reg, Shield(), metrics).decide(_req("broken"))
    assert d.policy == "static" and "policy 'broken' failed (RuntimeError)" in d.reason
    assert b'mango_policy_fallbacks_total{policy="broken"} 1.0' in metrics.render()


def test_decisions_wait_for_the_first_snapshot() -> None:
    reg = PolicyRegistry(default_policy_dir=None)
    with pytest.raises(NotReadyError, match="still loading"):
        DecisionService(reg, Shield(), ServiceMetrics()).decide(_req())


def test_isolated_reload_loads_in_a_worker_and_keeps_the_guarantees(tmp_path: Path) -> None:
    """``isolate=True``: hot reloads load and verify in the loader process; the result decides the same,
    and a tampered weights file is still refused (sha256) with the last good version kept in service."""
    manifest = export_tiny(tmp_path, name="tiny", version="v1")
    reg = PolicyRegistry(policy_dir=tmp_path, default_policy_dir=None, isolate=True)
    try:
        reg.reload()  # the first load runs in-process
        snap = reg.snapshot
        assert snap is not None
        in_process = snap.learned["tiny"]
        export_tiny(tmp_path, name="tiny", version="v2", seed=1)
        report = reg.reload(force=True)
        assert report.learned == {"tiny": "v2"} and not report.errors, report.errors
        snap = reg.snapshot
        assert snap is not None
        policy = snap.learned["tiny"]
        assert policy is not in_process and policy.info()["source"] == str(manifest)
        req = _req("tiny")
        assert _ask(policy, req) == _torch_setting(policy, req)

        weights = manifest.with_suffix(".safetensors")
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
        report = reg.reload(force=True)
        err = report.errors[str(manifest)]
        assert "sha256" in err and "still serving tiny version v2" in err
        snap = reg.snapshot
        assert snap is not None and snap.learned["tiny"] is policy
    finally:
        reg.close()
