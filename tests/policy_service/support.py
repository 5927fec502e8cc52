"""Helpers shared by the policy-service tests: request bodies and artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from client.policy import TinyFormerConfig, export_artifact, weight_shapes
from client.protocol import MAX_HISTORY


def random_weights(config: TinyFormerConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Random TinyFormer weights in numpy (LayerNorms at identity, the rest N(0, 0.3^2)): the service's tests
    need no torch, as the service does not."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in weight_shapes(config).items():
        if ".ln" in name or name.startswith("encoder.norm."):
            out[name] = np.ones(shape, np.float32) if name.endswith("weight") else np.zeros(shape, np.float32)
        else:
            out[name] = (0.3 * rng.standard_normal(shape)).astype(np.float32)
    return out


def export_tiny(
    directory: Path,
    name: str = "tiny",
    version: str = "v1",
    seed: int = 0,
    config: TinyFormerConfig | None = None,
) -> Path:
    """A randomly initialized TinyFormer artifact (the service does not care whether it was trained)."""
    cfg = config or TinyFormerConfig()
    return export_artifact(
        random_weights(cfg, seed),
        cfg,
        directory,
        name=name,
        version=version,
        training_command="tests: random init",
    )


def record(step: int = 50, **kw: Any) -> dict[str, Any]:
    """One valid TelemetryRecord as JSON data."""
    base: dict[str, Any] = {
        "step": step,
        "loss": 3.0,
        "grad_norm": 1.5,
        "state_bytes": 4_000_000,
        "interval_s": 2.0,
        "lr": 1e-3,
        "setting": {"rank": 8, "bits": 4, "gamma": 0.0},
    }
    base.update(kw)
    return base


def decide_body(policy: str = "default", n: int = MAX_HISTORY, **kw: Any) -> dict[str, Any]:
    """A valid DecideRequest as JSON data: a slowly falling loss over ``n`` records."""
    body: dict[str, Any] = {
        "job_id": "job-1",
        "policy": policy,
        "objective": {"w_loss": 1.0, "w_memory": 0.5},
        "history": [record(step=50 * (i + 1), loss=3.0 - 0.05 * i) for i in range(n)],
        "reference": {"initial_loss": 3.0, "dense_state_bytes": 16_000_000},
    }
    body.update(kw)
    return body
