"""The shipped default policy: small, reproducible by its recorded command, served out of the box."""

from __future__ import annotations

import pytest

from client.policy import DEFAULT_POLICY_DIR, load_artifact
from client.protocol import DEFAULT_GRID, CompressionSetting, Objective, TelemetryRecord
from policy_service.registry import PolicyRegistry


def test_shipped_artifact_is_small_and_documented() -> None:
    art = load_artifact(DEFAULT_POLICY_DIR)
    # about a hundred kilobytes: a joint head over the 240 settings adds 240 x d_model weights to 19 x d_model
    assert art.weights_path.stat().st_size < 128_000, "keep the default policy about a hundred kilobytes"
    m = art.manifest
    assert m.training.command.startswith("mango train ")
    assert m.training.config["extractor"] == "tinyformer"
    assert m.metrics["heldout_surrogate"] and m.metrics["train_wall_s"] > 0


def test_the_service_serves_it_as_default() -> None:
    registry = PolicyRegistry(default_policy_dir=DEFAULT_POLICY_DIR)
    report = registry.reload()
    assert not report.errors, report.errors
    name = load_artifact(DEFAULT_POLICY_DIR).name
    assert report.default_target == name
    snap = registry.snapshot
    assert snap is not None
    policy = snap.resolve("default")
    assert policy.kind == "learned" and policy.name == name
    rec = TelemetryRecord(
        step=24,
        loss=3.1,
        grad_norm=0.8,
        state_bytes=400_000,
        interval_s=0.4,
        lr=2e-3,
        energy_j=4.0,
        setting=CompressionSetting.off(),
        progress=0.15,
    )
    for objective in (Objective(w_loss=20, w_memory=0.1), Objective(w_loss=2, w_memory=1.0)):
        setting = policy.decide([rec], objective)
        DEFAULT_GRID.check(setting)


@pytest.mark.parametrize("field", ["d_model", "n_layers"])
def test_it_is_the_small_architecture(field: str) -> None:
    cfg = load_artifact(DEFAULT_POLICY_DIR).config
    assert getattr(cfg, field) <= {"d_model": 64, "n_layers": 2}[field]
