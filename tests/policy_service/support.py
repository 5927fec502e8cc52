"""Helpers shared by the policy-service tests: request bodies and artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from agents.artifact import export_artifact
from agents.tinyformer import TinyFormer
from client.protocol import MAX_HISTORY


def export_tiny(directory: Path, name: str = "tiny", version: str = "v1", seed: int = 0) -> Path:
    """A randomly initialized TinyFormer artifact (the service does not care whether it was trained)."""
    torch.manual_seed(seed)
    return export_artifact(
        TinyFormer(), directory, name=name, version=version, training_command="tests: random init"
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
